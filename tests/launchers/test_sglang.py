"""SGLang: TP env, native multi-node server flags, NCCL_INIT_ADDR, no Ray start."""

from __future__ import annotations

import pytest

from madinfra.launchers.addressing import SlurmAddressing

CD = 'cd "${MADINFRA_WORKDIR:-.}" || exit 1'
GUARD = ': "${MODEL_PATH:?names no model: set model.model_path or env_vars.MODEL_PATH in the stack}"'


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_single_node(plan, target):
    p = plan(target, "sglang", 1, 4)
    server = p.role("server")
    assert (server.env["SGLANG_TENSOR_PARALLEL_SIZE"], server.env["SGLANG_PIPELINE_PARALLEL_SIZE"]) == ("4", "1")
    assert server.command == (
        f'{CD}\n{GUARD}\npython3 -m sglang.launch_server --model-path "$MODEL_PATH" --tp-size 4 --host 0.0.0.0 --port 30000'
    )
    assert "NCCL_INIT_ADDR" not in server.env and "SGLANG_HOST_IP" not in dict(server.runtime_env)
    assert (p.workload, p.service_port, server.ports) == ("service", 30000, {"http": 30000})
    assert server.env["HIP_VISIBLE_DEVICES"] == "0,1,2,3"


@pytest.mark.parametrize(
    ("target", "rank", "host_ip"),
    [("k8s", "${HOSTNAME##*-}", "${POD_IP}"), ("slurm", "${SLURM_PROCID}", SlurmAddressing("demo").self_ip())],
)
def test_multi_node_native_launcher(plan, target, rank, host_ip):
    server = plan(target, "sglang", 2, 4, port=23456).role("server")
    runtime = dict(server.runtime_env)
    assert (server.env["SGLANG_TENSOR_PARALLEL_SIZE"], server.env["SGLANG_PIPELINE_PARALLEL_SIZE"]) == ("4", "1")
    assert runtime["SGLANG_HOST_IP"] == host_ip
    assert runtime["NCCL_INIT_ADDR"] == "${MASTER_ADDR}:23456"
    assert server.command == (
        f'{CD}\n{GUARD}\npython3 -m sglang.launch_server --model-path "$MODEL_PATH" --tp-size 4 --host 0.0.0.0 --port 30000'
        f" --nnodes 2 --node-rank {rank} --dist-init-addr ${{MASTER_ADDR}}:23456"
    )
    assert "ray" not in server.command
    assert server.ports == {"http": 30000, "master": 23456}


def test_k8s_multi_node_master_is_pod_zero(plan):
    server = plan("k8s", "sglang", 2, 4).role("server")
    assert server.env["MASTER_ADDR"] == "demo-0.demo.ml.svc.cluster.local"


def test_nvidia_visibility(plan):
    server = plan("k8s", "sglang", 1, 2, extra={"gpu_vendor": "NVIDIA", "k8s": {"gpu_resource_name": "nvidia.com/gpu"}}).role("server")
    assert server.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "HIP_VISIBLE_DEVICES" not in server.env
