"""Megatron-LM: Megatron-Core parallel sizes and torchrun runner on both targets (madengine bug 5 fixed)."""

from __future__ import annotations

import pytest

from madinfra.launchers.addressing import SlurmAddressing


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_single_node_tensor_parallel_only(plan, target):
    worker = plan(target, "megatron", 1, 4).role("worker")
    assert (worker.env["TENSOR_MODEL_PARALLEL_SIZE"], worker.env["PIPELINE_MODEL_PARALLEL_SIZE"], worker.env["CONTEXT_PARALLEL_SIZE"]) == ("4", "1", "1")
    assert worker.env["MAD_MULTI_NODE_RUNNER"] == "torchrun --standalone --nproc_per_node=4"
    assert worker.env["MAD_LAUNCHER_TYPE"] == "megatron"


def test_single_node_tensor_parallel_is_capped_at_eight(plan):
    worker = plan("slurm", "megatron", 1, 16).role("worker")
    assert worker.env["TENSOR_MODEL_PARALLEL_SIZE"] == "8"
    assert worker.env["MAD_MULTI_NODE_RUNNER"] == "torchrun --standalone --nproc_per_node=16"


def test_k8s_multi_node_sets_master_addr_and_pipeline_across_nodes(plan):
    worker = plan("k8s", "megatron", 4, 8, port=23456, extra={"model": {"script": "pretrain_gpt.py"}}).role("worker")
    assert (worker.env["TENSOR_MODEL_PARALLEL_SIZE"], worker.env["PIPELINE_MODEL_PARALLEL_SIZE"], worker.env["CONTEXT_PARALLEL_SIZE"]) == ("8", "4", "1")
    assert worker.env["MASTER_ADDR"] == "demo-0.demo.ml.svc.cluster.local"
    assert dict(worker.runtime_env)["MAD_MULTI_NODE_RUNNER"] == (
        "torchrun --nnodes=4 --nproc_per_node=8 --node_rank=${JOB_COMPLETION_INDEX}"
        " --master_addr=${MASTER_ADDR} --master_port=23456"
    )
    assert worker.command.endswith("\n${MAD_MULTI_NODE_RUNNER} pretrain_gpt.py")


def test_slurm_multi_node_gets_the_megatron_block_not_generic_env(plan):
    worker = plan("slurm", "megatron", 2, 8).role("worker")
    runtime = dict(worker.runtime_env)
    assert (worker.env["TENSOR_MODEL_PARALLEL_SIZE"], worker.env["PIPELINE_MODEL_PARALLEL_SIZE"]) == ("8", "2")
    assert runtime["MASTER_ADDR"] == SlurmAddressing("demo").master_addr("worker")
    assert runtime["MAD_MULTI_NODE_RUNNER"] == (
        "torchrun --nnodes=2 --nproc_per_node=8 --node_rank=${SLURM_PROCID}"
        " --master_addr=${MASTER_ADDR} --master_port=29500"
    )
