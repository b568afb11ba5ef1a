"""Ray heads as resources on SLURM: the head job's health, what the plan says about it, outputs.

A Ray cluster madinfra forms (``madinfra.launchers.ray_cluster``) is two jobs: the head (GCS,
dashboard, engine) and the workers that join it. The head job reports itself in its status file
(``ray/<cluster>.status``, ``key=value`` lines the supervisor rewrites every few seconds), which
the live read picks up with the stack's other files. From it:

- **Readiness.** A new head is ready when its own job's status says the GCS answers. The
  cluster is ready when the GCS sees every expected node alive, the engine runs with them, and
  the engine's HTTP health check passes at the head's node; apply waits for that after the
  workers change, or after the head changes when the workers stay as they are.
- **State and show.** The head job's live status carries the cluster as the status file
  describes it (address, dashboard, nodes alive of expected, engine state, age), as long as the
  file belongs to that job and is fresh (``STALE_SECONDS``).
- **Plan.** A replaced head says the cluster restarts; changed workers under a head that stays
  say the head keeps running and only the engine restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from madinfra.launchers.ray_cluster import STATUS_DIR, WORKERS_SUFFIX
from madinfra.launchers.ray_node import status_fields
from madinfra.resources import Change, Resource
from madinfra_slurm import rules

STALE_SECONDS = 30
"""A status file older than this (the supervisor rewrites it every 2 s) means the head is not
supervising any more: the job is hung, or its node is gone."""


@dataclass(frozen=True)
class HeadStatus:
    """One reading of a head's status file."""

    job: str
    address: str
    dashboard: str
    gcs: str
    nodes_alive: int | None
    nodes_expected: int | None
    engine: str
    engine_restarts: int
    updated: int | None

    def age(self, now: int | None) -> int | None:
        return None if now is None or self.updated is None else max(0, now - self.updated)

    def whole(self, expected: int) -> bool:
        """Every expected node alive, as the GCS says, and the engine running on them."""
        return self.gcs == "up" and self.nodes_alive == expected and self.nodes_expected == expected and self.engine == "running"

    def summary(self) -> str:
        nodes = "?" if self.nodes_alive is None else str(self.nodes_alive)
        return f"GCS {self.gcs} at {self.address}, {nodes}/{self.nodes_expected} nodes, engine {self.engine}"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_status(text: str) -> HeadStatus | None:
    """The status file's fields; ``None`` for a file without an address (not the head's)."""
    fields = status_fields(text)
    if not fields.get("address"):
        return None
    return HeadStatus(
        job=fields.get("job", ""),
        address=fields["address"],
        dashboard=fields.get("dashboard", ""),
        gcs=fields.get("gcs", "unknown"),
        nodes_alive=_int(fields.get("nodes_alive")),
        nodes_expected=_int(fields.get("nodes_expected")),
        engine=fields.get("engine", "unknown"),
        engine_restarts=_int(fields.get("engine_restarts")) or 0,
        updated=_int(fields.get("updated")),
    )


def ray_settings(resource: Resource | None) -> dict[str, Any] | None:
    """The ``submit.ray`` settings of a desired job that is part of a Ray cluster."""
    if resource is None:
        return None
    return resource.spec.get(rules.SUBMIT_KEY, {}).get("ray")


def live_status(status: HeadStatus, job_id: str | None, now: int | None) -> dict[str, Any]:
    """What ``show`` and state record of the cluster next to the head job's own state."""
    age = status.age(now)
    fresh = status.job == job_id and (age is None or age <= STALE_SECONDS)
    cluster: dict[str, Any] = {"address": status.address, "dashboard": status.dashboard}
    if not fresh:
        why = "an earlier head job's" if status.job != job_id else f"not updated for {age} s"
        cluster["health"] = f"unknown (the status file is {why})"
        return cluster
    cluster.update(
        gcs=status.gcs,
        nodes=f"{'?' if status.nodes_alive is None else status.nodes_alive}/{status.nodes_expected}",
        engine=status.engine,
        engine_restarts=status.engine_restarts,
    )
    cluster["health"] = health_text(cluster)
    return cluster


def plan_warnings(changes: list[Change]) -> list[str]:
    """What a change to a Ray cluster's jobs does to the head, in the plan's words."""
    warnings = []
    by_part: dict[tuple[str, str], Change] = {}
    for change in changes:
        settings = ray_settings(change.desired) or ray_settings(change.current)
        if settings is not None:
            by_part[(settings["cluster"], settings["part"])] = change
    clusters = sorted({cluster for cluster, _ in by_part})
    for cluster in clusters:
        head = by_part.get((cluster, "head"))
        workers = by_part.get((cluster, "workers"))
        if head is not None and head.action in ("replace", "delete") and head.current is not None and not head.current.status.get("finished"):
            address = (head.current.status.get("ray") or {}).get("address")
            where = f" at {address}" if address else ""
            if head.action == "delete":
                warnings.append(f"{cluster}: the Ray head{where} stops (GCS, dashboard and the engine on it)")
                continue
            then = (
                "its workers' job is replaced too"
                if workers is not None and workers.action in ("replace", "create")
                else "its workers keep their job and join the new head"
            )
            warnings.append(
                f"{cluster}: the Ray head{where} restarts (GCS, dashboard and the engine on it) because its own job is replaced; "
                f"{then}, and the engine starts again (the stack serves nothing until then) once all nodes are in"
            )
        elif workers is not None and workers.action in ("create", "replace") and (head is None or head.action == "update"):
            desired_nodes = (ray_settings(workers.desired) or {}).get("nodes")
            current = workers.current
            before = None if current is None else 1 + int(current.spec.get("nodes") or 0)
            size = f" ({before} -> {desired_nodes} nodes, pipeline stages with them)" if before and desired_nodes and before != desired_nodes else ""
            warnings.append(
                f"{cluster}: the Ray head keeps running (GCS and dashboard stay up); the engine on it stops, and the stack serves nothing, "
                f"until the workers' new job has joined{size}"
            )
    return warnings


def attach(jobs: list[Resource], files: list[tuple[str, str]], now: int | None) -> None:
    """Give each live head job its cluster as its status file describes it (``status["ray"]``),
    and each workers job the role of its cluster (its job name is ``<cluster>-workers``)."""
    statuses = {}
    for path, text in files:
        directory, _, name = path.partition("/")
        if directory == STATUS_DIR and name.endswith(".status"):
            parsed = parse_status(text)
            if parsed is not None:
                statuses[name[: -len(".status")]] = parsed
    for job in jobs:
        if job.role is not None and job.role.endswith(WORKERS_SUFFIX):
            job.role = job.role[: -len(WORKERS_SUFFIX)]  # no launcher role ends so: it is a Ray cluster's workers
        status = statuses.get(job.name)
        if status is not None and job.status.get("running"):
            job.status["ray"] = live_status(status, job.provider_id, now)


def health_text(cluster: dict[str, Any]) -> str:
    """One line for ``output`` and ``show``: ``GCS up, 2/2 nodes, engine running``."""
    restarts = cluster.get("engine_restarts") or 0
    again = f" ({restarts} restart{'s' if restarts != 1 else ''})" if restarts else ""
    return f"GCS {cluster.get('gcs')}, {cluster.get('nodes')} nodes, engine {cluster.get('engine')}{again}"


def plan_notes(changes: list[Change]) -> list[str]:
    """A Ray head the plan starts: where its GCS and dashboard will listen, and who joins it."""
    notes = []
    for change in changes:
        settings = ray_settings(change.desired)
        if settings is None or settings["part"] != "head" or change.action not in ("create", "replace"):
            continue
        workers = int(settings["nodes"]) - 1
        notes.append(
            f"{settings['cluster']}: {change.resource_id} is the Ray head: GCS on port {settings['port']}, dashboard on port "
            f"{settings['dashboard_port']} and the engine on its node; {workers} worker node(s) join it "
            f"({'`madinfra output` gives its address once it runs' if change.action == 'create' else 'a new address if it lands on another node'})"
        )
    return notes
