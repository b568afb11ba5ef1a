"""Launcher contracts checked at validate/plan time, each problem named by its field (issue 14)."""

from __future__ import annotations

from typing import Any

import pytest

from madinfra.config import resolve
from madinfra.errors import ConfigError
from madinfra.launchers import compile


def stack(target: str, launcher: str, nnodes: int, nproc: int, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "demo",
        target: {"partition": "gpu", "gpus_per_node": nproc} if target == "slurm" else {"gpu_count": nproc},
        "distributed": {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": nproc},
        "model": {"model_path": "/models/m"} if launcher in ("vllm", "sglang", "sglang-disagg") else {"script": "train.py"},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        compile(resolve(data))
    return dict(info.value.problems)


def test_a_tensor_parallel_size_that_does_not_fill_one_server_is_refused() -> None:
    found = problems(stack("k8s", "vllm", 1, 8, model={"args": ["--tensor-parallel-size", "16"]}))
    assert found == {"model.args": "TP 16 x PP 1 = 16, but one server spans 8 GPU(s) (distributed.nproc_per_node 8); make them equal"}


def test_vllm_on_slurm_spans_every_node_so_tp_times_pp_must_cover_them() -> None:
    found = problems(stack("slurm", "vllm", 2, 4, model={"args": ["--tensor-parallel-size=2"]}))
    assert found["model.args"] == "TP 2 x PP 2 = 4, but one server spans 8 GPU(s) (distributed.nproc_per_node 4 x nnodes); make them equal"
    compile(resolve(stack("slurm", "vllm", 2, 4, model={"args": ["--tensor-parallel-size=4"]})))


def test_training_parallel_sizes_must_divide_the_gpus() -> None:
    found = problems(stack("slurm", "megatron", 2, 8, roles={"worker": {"env": {"TENSOR_MODEL_PARALLEL_SIZE": "3"}}}))
    assert found == {
        "roles.worker.env.TENSOR_MODEL_PARALLEL_SIZE": "TP 3 x PP 2 x CP 1 = 6 does not divide the run's 16 GPUs (distributed.nnodes 2 x nproc_per_node 8); choose sizes whose product divides it"
    }
    compile(resolve(stack("slurm", "megatron", 2, 8, roles={"worker": {"env": {"TENSOR_MODEL_PARALLEL_SIZE": "4"}}})))


def test_the_launchers_own_sizes_always_fit() -> None:
    for launcher, target in (("megatron", "slurm"), ("torchtitan", "k8s"), ("vllm", "slurm"), ("sglang", "k8s"), ("sglang-disagg", "k8s")):
        compile(resolve(stack(target, launcher, 3, 8)))


def test_a_user_world_size_that_contradicts_the_launcher_is_refused() -> None:
    """torchrun's WORLD_SIZE is the node count, as madengine sets it (torchrun then sets each
    process's own); deepspeed's counts processes (nnodes x nproc_per_node)."""
    found = problems(stack("k8s", "deepspeed", 2, 8, env_vars={"WORLD_SIZE": "8"}))
    assert found["env_vars.WORLD_SIZE"].startswith("is '8', but the deepspeed launcher sets WORLD_SIZE to '16' on the worker nodes")
    found = problems(stack("k8s", "torchrun", 2, 8, env_vars={"WORLD_SIZE": "8"}))
    assert found["env_vars.WORLD_SIZE"].startswith("is '8', but the torchrun launcher sets WORLD_SIZE to '2' on the worker nodes")


def test_the_vllm_server_port_may_not_be_rays() -> None:
    found = problems(stack("k8s", "vllm", 2, 8, service={"port": 6379}))
    assert found == {"service.port": "is 6379, which Ray's head binds on the same node; choose another port"}


def test_multi_node_sglang_serving_on_its_nccl_init_port_is_refused() -> None:
    found = problems(stack("slurm", "sglang", 2, 8, service={"port": 29500}))
    assert found["service.port"].startswith("is 29500, which is both the server's HTTP port and the NCCL init address on node 0")


def test_disaggregated_servers_sharing_slurm_nodes_would_clash_on_their_ports() -> None:
    data = stack("slurm", "sglang-disagg", 3, 8, slurm={"exclusive": False}, distributed={"master_port": 30000})
    found = problems(data)
    assert found["slurm.exclusive"] == (
        "is false, so two prefill or decode servers may share a node and both bind port 30000 (and prefill servers bootstrap port 8998); "
        "set slurm.exclusive: true (one server per node)"
    )
    assert found["distributed.master_port"].startswith("is 30000, which the prefill/decode servers also bind")
    compile(resolve(stack("slurm", "sglang-disagg", 3, 8)))


def test_custom_pool_commands_own_their_ports() -> None:
    commands = {role: {"command": "exec my-server --port 0"} for role in ("proxy", "prefill", "decode")}
    compile(resolve(stack("slurm", "sglang-disagg", 3, 1, slurm={"exclusive": False}, roles=commands)))
