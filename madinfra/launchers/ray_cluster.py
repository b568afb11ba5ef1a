"""A Ray cluster across two SLURM jobs: the head (with the engine) and the workers that join it.

Multi-node vLLM on SLURM runs one model across nodes (a pipeline stage per node) on a Ray
cluster. Started inside one allocation, with the head a line in rank 0's command (madinfra's
earlier form), any change to any node restarts everything. Here the cluster is two roles, which
the SLURM provider submits as two jobs:

- ``server`` (the head): one node that runs ``ray_node.py head``: the Ray head (GCS on
  ``RAY_PORT``, dashboard on ``RAY_DASHBOARD_PORT``) for the job's whole life, the status file
  ``ray/<cluster>.status`` (address, nodes alive and expected, the engine's state), and the
  engine, started when the cluster has every node and restarted when that changes. It holds
  pipeline stage 0 and serves the API, so the stack's endpoint is the head's node.
- ``server-workers``: the other ``nnodes - 1`` nodes, each running ``ray_node.py worker``: it
  reads the head's address from the status file and joins with ``ray start --block``, joining
  again whenever it is dropped, and leaving at once when its head stops or a new head job
  reports itself, so a workers' job survives a head restart.

What may change without restarting the head: the cluster's size lives in the stack's topology
file (``NNODES``, the pipeline size), which the head reads before each engine start, so a
resize only replaces the workers' job and restarts the engine (vLLM cannot change its pipeline
while it runs). Anything in the head's own script (the image, the environment, the engine's
flags, the TP size) replaces the head job, and the plan says that the head restarts.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from madinfra.launchers.common import RAY_PORT, WORKDIR, LaunchContext, RoleDraft
from madinfra.launchers.model import RayPart

RAY_DASHBOARD_PORT = 8265
WORKERS_SUFFIX = "-workers"
STATUS_DIR = "ray"
NODE_PROGRAM = Path(__file__).with_name("ray_node.py")
HEREDOC_END = "MADINFRA_RAY_NODE_PROGRAM"
TOPOLOGY = ("NNODES", "WORLD_SIZE", "MAD_TOTAL_NODES", "VLLM_PIPELINE_PARALLEL_SIZE")
"""The cluster's size, delivered in the stack's topology file, never in either job's script."""


def workers_role(cluster: str) -> str:
    return f"{cluster}{WORKERS_SUFFIX}"


def status_file(cluster: str) -> str:
    """Where the head reports itself, relative to the stack's directory."""
    return f"{STATUS_DIR}/{cluster}.status"


def part(kind: str, cluster: str, nodes: int) -> RayPart:
    assert kind in ("head", "workers")
    return RayPart(kind, cluster, nodes, status_file(cluster), RAY_PORT, RAY_DASHBOARD_PORT)  # type: ignore[arg-type]


def topology(ctx: LaunchContext) -> dict[str, str]:
    nodes = str(ctx.nnodes)
    return {name: nodes for name in TOPOLOGY}


def drop_topology(draft: RoleDraft) -> None:
    """The topology file sets these; a value in the script would pin the size into its hash."""
    for name in TOPOLOGY:
        draft.env.pop(name, None)


def _program(mode_args: str) -> tuple[str, ...]:
    """``python3 -`` reading the node program from a heredoc, with ``mode_args`` (expanded by
    the node's shell)."""
    program = NODE_PROGRAM.read_text(encoding="utf-8")
    assert HEREDOC_END not in program
    return (f"python3 - {mode_args} <<'{HEREDOC_END}'", program.rstrip("\n"), HEREDOC_END)


def head_lines(ctx: LaunchContext, cluster: str, engine: str) -> tuple[str, ...]:
    """The node program as the head, with ``engine`` as the command it starts and restarts;
    ``engine`` expands its variables when the program runs it, after the topology's current
    values are in its environment."""
    status = f'"{WORKDIR}/{status_file(cluster)}"'
    topology_file = f'"{WORKDIR}/topology.env"'
    return _program(
        f'head --node-ip "${{VLLM_HOST_IP}}" --port {RAY_PORT} --dashboard-port {RAY_DASHBOARD_PORT}'
        f" --num-gpus {ctx.nproc} --status {status} --topology {topology_file} {shlex.quote(engine)}"
    )


def worker_lines(ctx: LaunchContext, cluster: str) -> tuple[str, ...]:
    """The node program as a worker of the head named in ``cluster``'s status file."""
    status = f'"{WORKDIR}/{status_file(cluster)}"'
    return _program(f'worker --node-ip "${{VLLM_HOST_IP}}" --num-gpus {ctx.nproc} --status {status}')


def unmanaged_heads(spec) -> list[str]:
    """A Ray head the user's own role command starts: madinfra runs it as part of that role's
    workload and cannot see it as a head (no address, no health, no restart rule), so the plan
    says so rather than let it pass as managed."""
    found = []
    for role, override in sorted(spec.roles.items()):
        command = override.command or ""
        if "ray start" in command and "--head" in command:
            managed = spec.distributed.launcher == "vllm" and spec.target == "slurm" and spec.distributed.nnodes > 1
            where = (
                "it is the engine the managed Ray head runs, so it would start a second head beside it; drop `ray start` from it"
                if managed
                else "madinfra runs it as part of that workload, not as a Ray head of its own (no address, health or restart rule in the plan); "
                "distributed.launcher: vllm on SLURM manages the head for you"
            )
            found.append(f"roles.{role}.command starts a Ray head (`ray start --head`): {where}")
    return found
