"""torchrun: the runner line madengine exports as MAD_MULTI_NODE_RUNNER, per node count.

Single node: ``torchrun --standalone``. Multi-node: explicit rank/master flags; a ``.py`` script
also gets madengine's c10d rendezvous flags (its K8s ``.py`` form) on both targets, so the same
stack behaves the same on K8s and SLURM.
"""

from __future__ import annotations

from madinfra.launchers.common import LaunchContext, torchrun_multi, torchrun_standalone, training_worker
from madinfra.launchers.model import RoleLaunch


def runner(ctx: LaunchContext) -> str:
    if not ctx.multi_node:
        return torchrun_standalone(ctx)
    return torchrun_multi(ctx, rendezvous=ctx.script.endswith(".py"))


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    return [training_worker(ctx, runner=runner(ctx))]
