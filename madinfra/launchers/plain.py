"""No launcher: the user's script runs as-is on every node with the common environment.

WORLD_SIZE counts processes (N x P), as madengine's K8s direct-script form sets it; no runner
is exported because nothing asked for one.
"""

from __future__ import annotations

from madinfra.launchers.common import LaunchContext, training_worker
from madinfra.launchers.model import RoleLaunch


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    return [training_worker(ctx, runner=None, world_size=ctx.nnodes * ctx.nproc)]
