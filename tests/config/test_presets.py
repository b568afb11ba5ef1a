"""madengine's preset layering: which layers apply and what values result."""

from __future__ import annotations

import pytest

from madinfra.config import resolve
from madinfra.config.presets import deep_merge, k8s_layers, slurm_layers


def test_deep_merge_recurses_dicts_and_replaces_scalars_and_lists():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged = deep_merge(base, {"a": {"y": [3]}, "b": 2, "c": 3})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 3}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}


@pytest.mark.parametrize(
    "vendor,nnodes,gpus,launcher,expected",
    [
        ("AMD", 1, 1, False, ["k8s_defaults", "k8s_gpu-vendors_amd", "k8s_profiles_single-gpu"]),
        ("AMD", 1, 2, False, ["k8s_defaults", "k8s_gpu-vendors_amd", "k8s_gpu-vendors_amd-multi-gpu", "k8s_profiles_multi-gpu"]),
        ("AMD", 1, 1, True, ["k8s_defaults", "k8s_gpu-vendors_amd", "k8s_profiles_multi-gpu"]),
        ("AMD", 2, 1, True, ["k8s_defaults", "k8s_gpu-vendors_amd", "k8s_gpu-vendors_amd-multi-gpu", "k8s_profiles_multi-node"]),
        ("NVIDIA", 2, 4, True, ["k8s_defaults", "k8s_gpu-vendors_nvidia", "k8s_profiles_multi-node"]),
        ("NVIDIA", 1, None, False, ["k8s_defaults", "k8s_gpu-vendors_nvidia", "k8s_profiles_single-gpu"]),
    ],
)
def test_k8s_layer_selection(vendor, nnodes, gpus, launcher, expected):
    assert k8s_layers(vendor, nnodes, gpus, launcher) == expected


def test_slurm_layer_selection():
    assert slurm_layers(1) == ["slurm_defaults", "slurm_profiles_single-node"]
    assert slurm_layers(3) == ["slurm_defaults", "slurm_profiles_multi-node"]


def test_k8s_single_gpu_profile_values():
    spec = resolve({"k8s": {}})
    assert spec.k8s.gpu_count == 1
    assert (spec.k8s.memory, spec.k8s.memory_limit, spec.k8s.cpu, spec.k8s.cpu_limit) == ("16Gi", "32Gi", "8", "16")
    assert spec.k8s.namespace == "default" and spec.k8s.image_pull_policy == "Always" and spec.k8s.backoff_limit == 3
    assert spec.k8s.gpu_resource_name == "amd.com/gpu"
    assert spec.env_vars == {"OMP_NUM_THREADS": "8"}
    assert spec.distributed.launcher is None


def test_k8s_multi_node_amd_layers_env_and_default_launcher():
    spec = resolve({"k8s": {"gpu_count": 2}, "distributed": {"nnodes": 2}})
    assert spec.distributed.launcher == "torchrun"  # the multi-node profile's default, as madengine
    assert spec.k8s.host_ipc is True
    assert (spec.k8s.memory, spec.k8s.cpu_limit) == ("64Gi", "32")
    env = spec.env_vars
    assert env["NCCL_SOCKET_IFNAME"] == "eth0" and env["MIOPEN_USER_DB_PATH"] == "/tmp/.miopen"
    assert env["NCCL_DEBUG_SUBSYS"] == "INIT,NET" and env["NCCL_TIMEOUT"] == "600"
    assert env["OMP_NUM_THREADS"] == "8"


def test_k8s_nvidia_vendor_preset():
    spec = resolve({"gpu_vendor": "NVIDIA", "k8s": {"gpu_count": 4}, "distributed": {"launcher": "torchrun"}})
    assert spec.k8s.gpu_resource_name == "nvidia.com/gpu"
    assert spec.env_vars["NCCL_P2P_LEVEL"] == "NVL" and spec.env_vars["OMP_NUM_THREADS"] == "12"
    assert "MIOPEN_USER_DB_PATH" not in spec.env_vars


def test_user_values_override_presets():
    spec = resolve({"k8s": {"memory": "1Gi", "namespace": "ml"}, "env_vars": {"OMP_NUM_THREADS": "2"}})
    assert spec.k8s.memory == "1Gi" and spec.k8s.namespace == "ml"
    assert spec.env_vars["OMP_NUM_THREADS"] == "2"


def test_slurm_single_and_multi_node_profiles():
    single = resolve({"slurm": {}})
    assert (single.slurm.partition, single.slurm.nodes, single.slurm.gpus_per_node, single.slurm.time) == ("amd-rccl", 1, 8, "12:00:00")
    assert single.env_vars["NCCL_DEBUG"] == "WARN" and single.distributed.nproc_per_node == 8
    multi = resolve({"slurm": {"nodes": 3}})
    assert (multi.slurm.time, multi.distributed.nnodes) == ("24:00:00", 3)
    assert multi.env_vars["NCCL_SOCKET_IFNAME"] == "eth0"


def test_nproc_per_node_fills_gpu_count_and_nnodes_fills_slurm_nodes():
    spec = resolve({"slurm": {"partition": "debug"}, "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 4}})
    assert spec.slurm.nodes == 2 and spec.slurm.gpus_per_node == 4
    k8s = resolve({"k8s": {}, "distributed": {"launcher": "vllm", "nproc_per_node": 4}})
    assert k8s.k8s.gpu_count == 4


@pytest.mark.parametrize("alias", ["gpus_per_node", "gpu_count", "n_gpus", "num_gpus", "ngpus"])
def test_top_level_gpu_alias_wins(alias):
    spec = resolve({alias: 2, "slurm": {"gpus_per_node": 4}})
    assert spec.slurm.gpus_per_node == 2
    spec = resolve({alias: 2, "k8s": {"gpu_count": 4}})
    assert spec.k8s.gpu_count == 2
