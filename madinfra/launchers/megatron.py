"""Megatron-LM: torchrun underneath plus Megatron-Core's parallelism sizes.

Single node: TP = min(P, 8) (tensor parallelism stays inside one 8-GPU NVLink/xGMI domain),
PP = CP = 1. Multi-node: TP = P across a node's GPUs and PP = N across nodes. Unlike madengine
(bug 5), MASTER_ADDR is set on K8s too and SLURM gets this block rather than generic env.
"""

from __future__ import annotations

from madinfra.launchers.common import LaunchContext, torchrun_multi, torchrun_standalone, training_worker
from madinfra.launchers.model import RoleLaunch


def parallel_env(ctx: LaunchContext) -> dict[str, str | int]:
    if ctx.multi_node:
        tp, pp = ctx.nproc, ctx.nnodes
    else:
        tp, pp = min(ctx.nproc, 8), 1
    return {
        "TENSOR_MODEL_PARALLEL_SIZE": tp,
        "PIPELINE_MODEL_PARALLEL_SIZE": pp,
        "CONTEXT_PARALLEL_SIZE": 1,
    }


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    runner = torchrun_multi(ctx, rendezvous=False) if ctx.multi_node else torchrun_standalone(ctx)
    return [training_worker(ctx, runner=runner, env=parallel_env(ctx))]
