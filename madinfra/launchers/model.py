"""What a launcher compiles a stack into: per node role, the environment and the command.

``env`` holds literal values (user values and launcher constants); they go into K8s ``env`` as-is
and are ``shlex.quote``d in SLURM scripts, so a user value can never execute anything.
``runtime_env`` holds trusted shell expressions madinfra itself generates (``${SLURM_PROCID}``,
the first host of the allocation, ...); they are exported in order inside double quotes, on the
node, before ``command`` runs. ``command`` is trusted shell with every user value already quoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Workload = Literal["training", "service"]


@dataclass(frozen=True)
class RayPart:
    """What a role is in a Ray cluster madinfra forms across jobs (``ray_cluster.py``).

    ``part`` is ``head`` (the GCS, the dashboard, the engine) or ``workers`` (nodes that join
    it); ``cluster`` is the logical role both belong to (``server``: its ``roles.<role>``
    settings and its log ranks), ``nodes`` the cluster's size and ``status_file`` where the
    head reports itself, relative to the stack's directory. Providers put ``nodes`` out of the
    jobs' compared specs, so resizing the workers leaves the head's job alone."""

    part: Literal["head", "workers"]
    cluster: str
    nodes: int
    status_file: str
    port: int
    dashboard_port: int


@dataclass(frozen=True)
class RoleLaunch:
    role: str
    nodes: int
    first_rank: int
    gpus_per_node: int
    env: dict[str, str]
    runtime_env: tuple[tuple[str, str], ...]
    command: str
    unset_env: tuple[str, ...] = ()
    ports: dict[str, int] = field(default_factory=dict)
    ray: RayPart | None = None

    @property
    def ranks(self) -> range:
        return range(self.first_rank, self.first_rank + self.nodes)


@dataclass(frozen=True)
class LaunchPlan:
    stack: str
    target: Literal["k8s", "slurm"]
    launcher: str | None
    workload: Workload
    nnodes: int
    nproc_per_node: int
    master_port: int
    roles: tuple[RoleLaunch, ...]
    service_port: int | None = None
    topology_env: dict[str, str] = field(default_factory=dict)
    """Stack-wide literal values that describe its shape (pool sizes, first ranks). Providers
    deliver them out of band (a ConfigMap via envFrom, a sourced file on SLURM), never in a
    role's own spec, so resizing one pool does not restart the others."""

    def role(self, name: str) -> RoleLaunch:
        for role in self.roles:
            if role.role == name:
                return role
        raise KeyError(name)

    @property
    def total_gpus(self) -> int:
        return sum(r.nodes * r.gpus_per_node for r in self.roles)
