"""TorchTitan: parallelism defaults and torchrun runner (c10d form across nodes)."""

from __future__ import annotations

import pytest


def _titan(role) -> tuple[str, str, str, str]:
    env = role.env
    return (
        env["TORCHTITAN_TENSOR_PARALLEL_SIZE"],
        env["TORCHTITAN_PIPELINE_PARALLEL_SIZE"],
        env["TORCHTITAN_FSDP_ENABLED"],
        env["TORCHTITAN_CONTEXT_PARALLEL_SIZE"],
    )


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_single_node(plan, target):
    worker = plan(target, "torchtitan", 1, 8).role("worker")
    assert _titan(worker) == ("8", "1", "0", "1")
    assert worker.env["MAD_MULTI_NODE_RUNNER"] == "torchrun --standalone --nproc_per_node=8"


@pytest.mark.parametrize(("target", "rank"), [("k8s", "${JOB_COMPLETION_INDEX}"), ("slurm", "${SLURM_PROCID}")])
def test_multi_node_c10d_runner_even_for_shell_scripts(plan, target, rank):
    worker = plan(target, "torchtitan", 4, 8, port=23456).role("worker")
    assert _titan(worker) == ("8", "4", "1", "1")
    assert dict(worker.runtime_env)["MAD_MULTI_NODE_RUNNER"] == (
        f"torchrun --nnodes=4 --nproc_per_node=8 --node_rank={rank}"
        " --master_addr=${MASTER_ADDR} --master_port=23456"
        " --rdzv_backend=c10d --rdzv_endpoint=${MASTER_ADDR}:23456 --rdzv_id=demo"
    )
    assert worker.command.endswith("\nbash run.sh")
