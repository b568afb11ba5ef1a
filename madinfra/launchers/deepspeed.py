"""DeepSpeed: its own launcher, driven per node.

madengine starts DeepSpeed's ssh-based multi-node launcher on every node (bug 8), so each node
tries to ssh-spawn the whole job. ``--no_ssh --node_rank=<rank>`` is DeepSpeed's per-node mode:
every node starts only its own processes and they meet at ``--master_addr``, which is exactly
what a K8s Indexed Job or one ``srun`` task per node gives. The hostfile still tells DeepSpeed
the world (one ``<host> slots=P`` line per node).

K8s pods know every peer's DNS name at compile time, so the hostfile is written from literals
into the pod's own /tmp. SLURM hosts are known only inside the allocation, so the node writes
it from ``scontrol show hostnames`` into the stack's work dir (not the host's shared /tmp),
atomically, since every node writes the same file.
"""

from __future__ import annotations

import shlex

from madinfra.launchers.common import MASTER_REF, WORKDIR, LaunchContext, training_worker
from madinfra.launchers.model import RoleLaunch

K8S_HOSTFILE = "/tmp/hostfile"
SLURM_HOSTFILE = f"{WORKDIR}/deepspeed_hostfile_${{SLURM_JOB_ID}}.txt"


def hostfile_path(ctx: LaunchContext) -> str:
    return K8S_HOSTFILE if ctx.on_k8s else SLURM_HOSTFILE


def hostfile_setup(ctx: LaunchContext) -> str:
    slots = f"slots={ctx.nproc}"
    if ctx.on_k8s:
        lines = [f"{ctx.addressing.host('worker', i)} {slots}" for i in range(ctx.nnodes)]
        return f"printf '%s\\n' {' '.join(shlex.quote(line) for line in lines)} > {K8S_HOSTFILE} || exit 1"
    path = f'"{SLURM_HOSTFILE}"'
    partial = f'"{SLURM_HOSTFILE}.${{SLURM_PROCID}}"'
    return (
        f"scontrol show hostnames \"${{SLURM_JOB_NODELIST}}\" | sed 's/$/ {slots}/' > {partial}"
        f" && mv -f {partial} {path} || exit 1"
    )


def runner(ctx: LaunchContext) -> str:
    if not ctx.multi_node:
        return f"deepspeed --num_gpus={ctx.nproc} --master_port={ctx.port}"
    return (
        f"deepspeed --hostfile={hostfile_path(ctx)} --master_addr={MASTER_REF} --master_port={ctx.port}"
        f" --num_nodes={ctx.nnodes} --num_gpus={ctx.nproc} --no_ssh --node_rank={ctx.rank('worker', 0, ctx.nnodes)}"
    )


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    setup = (hostfile_setup(ctx),) if ctx.multi_node else ()
    # DeepSpeed's WORLD_SIZE counts processes, as madengine sets it for this launcher.
    return [training_worker(ctx, runner=runner(ctx), setup=setup, world_size=ctx.nnodes * ctx.nproc)]
