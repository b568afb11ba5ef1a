"""TorchTitan: torchrun underneath; defaults for its parallelism the TOML config may override.

Single node: TP only. Multi-node: TP across a node's GPUs, PP across nodes, FSDP2 on, and the
c10d rendezvous torchrun form madengine uses for TorchTitan.
"""

from __future__ import annotations

from madinfra.launchers.common import LaunchContext, torchrun_multi, torchrun_standalone, training_worker
from madinfra.launchers.model import RoleLaunch


def parallel_env(ctx: LaunchContext) -> dict[str, str | int]:
    return {
        "TORCHTITAN_TENSOR_PARALLEL_SIZE": ctx.nproc,
        "TORCHTITAN_PIPELINE_PARALLEL_SIZE": ctx.nnodes if ctx.multi_node else 1,
        "TORCHTITAN_FSDP_ENABLED": 1 if ctx.multi_node else 0,
        "TORCHTITAN_CONTEXT_PARALLEL_SIZE": 1,
    }


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    runner = torchrun_multi(ctx, rendezvous=True) if ctx.multi_node else torchrun_standalone(ctx)
    return [training_worker(ctx, runner=runner, env=parallel_env(ctx))]
