"""``madinfra logs`` on Kubernetes: which pods a role's ranks are, and their output through the
pod log API (``GET pods/<pod>/log``), the same path ``kubectl logs`` takes.

A role's pods are found the way the provider labels them (stack and role labels, see
manifests.py) and, where the workload still exists, by owner (readiness.pods_of), so the pods of a
Job being replaced under the same name are not taken for the new one's. The container read is the
workload's main container as the manifests name it (pod.py; the init container that stages
scripts is not the role's output).

Rank, the same number ``--rank`` means on SLURM (madinfra.logs):

- a Job: its completion index (the node rank torchrun & co. get; a one-node Job is rank 0, its
  retries included);
- a StatefulSet (disaggregated prefill/decode pools, multi-node servers): the pod's ordinal;
- a Deployment (vLLM replicas, the disaggregated proxy): its pods have no ordinal, so they are
  ranked by creation time, then name, among the pods that exist; while following, a pod that
  replaces one that ended takes the lowest rank no running pod holds, so ranks stay put.

Several pods of one rank (a Job's retries of an index) are one stream, oldest pod first, so
``tail`` and ``since`` apply to the rank's output like ``madinfra.logs.select`` says.

Lines are asked for with ``timestamps=true``: the kubelet's RFC 3339 time (nanoseconds) is each
line's ``time``, and ``tailLines`` / ``sinceTime`` are sent so the kubelet does the cutting (the
API takes whole seconds, so ``since`` is applied exactly here again). The pod log API interleaves
stdout and stderr into one stream without saying which is which, so every line is ``stdout``.

Following (``follow=True``) is in log_follow.py.
"""

from __future__ import annotations

import calendar
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from madinfra.config.schema import StackSpec
from madinfra.errors import ProviderError
from madinfra.logs import LogLine, LogQuery, merge, select
from madinfra.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROLE_LABEL, STACK_LABEL, label_value
from madinfra.resources import Resource
from madinfra_kubernetes import client as kube
from madinfra_kubernetes.apiserver import ApiError
from madinfra_kubernetes.live import belongs_to
from madinfra_kubernetes.readiness import pods_of
from madinfra_kubernetes.rules import WORKLOAD_KINDS, kind_of

JOB_INDEX = "batch.kubernetes.io/job-completion-index"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
PARALLEL_READS = 16
"""Pods read at once (one HTTPS connection each): a 64-node Job is read in four round trips."""

_TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class RoleSource:
    """A role of the stack and the workload that runs it (from the desired resources)."""

    role: str
    kind: str
    name: str
    namespace: str
    container: str | None


@dataclass(frozen=True)
class PodLog:
    """One pod to read: which role and rank wrote it, and where its output is."""

    role: str
    rank: int
    namespace: str
    pod: str
    container: str
    uid: str
    created: str

    def path(self) -> str:
        return f"{kube.object_path('Pod', self.namespace, self.pod)}/log"


@dataclass(frozen=True)
class Timed:
    """A line with its exact time (integer nanoseconds, so lines of the same instant compare
    equal when a stream is read again from where it stopped)."""

    ns: int | None
    line: LogLine


# ---------------------------------------------------------------- parsing
def parse_timestamp(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time with up to 9 fractional digits, as the
    kubelet writes them (``2026-11-28T01:02:03.123456789Z``); None for anything else."""
    match = _TIMESTAMP.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def parse_line(raw: bytes, role: str, rank: int) -> Timed:
    """A line of a ``timestamps=true`` answer: ``<RFC 3339 time> <text>``. A line without a
    time (not something the kubelet sends) keeps all of its text and no time."""
    text = raw.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")
    stamp, sep, rest = text.partition(" ")
    ns = parse_timestamp(stamp) if sep else None
    if ns is None:
        return Timed(None, LogLine(role, rank, text))
    return Timed(ns, LogLine(role, rank, rest, time=ns / 1e9))


def since_time(ns: int) -> str:
    """``sinceTime`` for the API: whole seconds (the API drops fractions), rounded down so no
    line at or after ``ns`` is cut; callers drop the extra lines themselves."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


# ---------------------------------------------------------------- which pods
def role_sources(spec: StackSpec, desired: list[Resource], query: LogQuery) -> list[RoleSource]:
    """The workloads of the roles asked for, in the stack's order; an unknown role is an error."""
    assert spec.k8s is not None
    found: list[RoleSource] = []
    for resource in desired:
        kind = kind_of(resource.kind)
        if kind not in WORKLOAD_KINDS or not resource.role:
            continue
        metadata = resource.spec.get("metadata") or {}
        found.append(RoleSource(resource.role, kind, resource.name, metadata.get("namespace") or spec.k8s.namespace, main_container(resource.spec)))
    if query.role is None:
        return found
    wanted = [s for s in found if s.role == label_value(query.role)]
    if not wanted:
        roles = ", ".join(s.role for s in found) or "none"
        raise ProviderError(f"stack '{spec.name}' has no role '{query.role}' (its roles: {roles}); name one of those, or leave the role out for all of them")
    return wanted


def main_container(manifest: dict[str, Any]) -> str | None:
    """The name the manifests give the workload's one container (pod.py: the role's name, or
    ``main``)."""
    containers = ((((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []
    return containers[0].get("name") if containers else None


def stack_selector(stack: str) -> str:
    return f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{STACK_LABEL}={label_value(stack)}"


@dataclass
class Snapshot:
    """What the cluster holds for the roles asked for, in one poll."""

    pods: dict[str, list[dict[str, Any]]]
    """Pods per role, by owner where the workload exists."""
    workloads: dict[str, dict[str, Any] | None]
    """The live workload per role (None: gone)."""


def snapshot(api: Any, stack: str, sources: list[RoleSource]) -> Snapshot:
    """One pod list per namespace, one GET per workload (and one ReplicaSet list when a
    Deployment's pods must be told from other pods of its role by owner)."""
    namespaces = sorted({s.namespace for s in sources})
    pods = [p for p in kube.list_objects(api, "Pod", namespaces, stack_selector(stack)) if belongs_to(p, stack)]
    replicasets: list[dict[str, Any]] = []
    if any(s.kind == "Deployment" for s in sources):
        replicasets = kube.list_objects(api, "ReplicaSet", namespaces, stack_selector(stack))
    by_role: dict[str, list[dict[str, Any]]] = {}
    workloads: dict[str, dict[str, Any] | None] = {}
    for source in sources:
        labelled = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL) == source.role and _namespace(p) == source.namespace]
        obj = kube.read_object(api, source.kind, source.namespace, source.name)
        if obj is not None:
            obj.setdefault("kind", source.kind)
            labelled = pods_of(obj, labelled, replicasets)
        workloads[source.role] = obj
        by_role[source.role] = labelled
    return Snapshot(by_role, workloads)


def _namespace(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def _created(pod: dict[str, Any]) -> tuple[str, str]:
    metadata = pod.get("metadata") or {}
    return str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or "")


def intrinsic_rank(kind: str, pod: dict[str, Any]) -> int | None:
    """A Job pod's completion index (0 for a one-node Job, which has none), a StatefulSet pod's
    ordinal; None for a Deployment's pods, which have no number of their own."""
    metadata = pod.get("metadata") or {}
    if kind == "Job":
        value = (metadata.get("annotations") or {}).get(JOB_INDEX) or (metadata.get("labels") or {}).get(JOB_INDEX)
        return int(value) if value is not None and str(value).isdigit() else 0
    if kind == "StatefulSet":
        value = (metadata.get("labels") or {}).get(POD_INDEX_LABEL) or str(metadata.get("name") or "").rsplit("-", 1)[-1]
        return int(value) if str(value).isdigit() else None
    return None


def assign_ranks(source: RoleSource, pods: list[dict[str, Any]], held: dict[str, int] | None = None, ended: frozenset[str] = frozenset()) -> dict[str, int]:
    """Rank per pod UID. ``held``: ranks given earlier (following), kept for pods still there;
    a new Deployment pod takes the lowest rank no pod that is still there (and not ``ended``)
    holds, in creation order."""
    held = held or {}
    ranks: dict[str, int] = {}
    unnumbered = []
    for pod in sorted(pods, key=_created):
        uid = _uid(pod)
        rank = intrinsic_rank(source.kind, pod)
        if uid in held:
            ranks[uid] = held[uid]
        elif rank is not None:
            ranks[uid] = rank
        else:
            unnumbered.append(uid)
    taken = {rank for uid, rank in ranks.items() if uid not in ended}
    free = (n for n in range(len(pods) + len(held) + 1) if n not in taken)
    for uid in unnumbered:
        ranks[uid] = next(free)
    return ranks


def _uid(pod: dict[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return str(metadata.get("uid") or f"{metadata.get('namespace')}/{metadata.get('name')}")


def container_of(source: RoleSource, pod: dict[str, Any]) -> str:
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if source.container in names or not names:
        return source.container or "main"
    return str(names[0])


def container_state(pod: dict[str, Any], container: str) -> str:
    """``waiting`` (nothing to read yet), ``running``, or ``ended`` (will write no more)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return "ended"
    for entry in status.get("containerStatuses") or []:
        if entry.get("name") != container:
            continue
        state = entry.get("state") or {}
        if "running" in state:
            return "running"
        if "terminated" in state:
            # A container that restarts (Deployments, StatefulSets) will write again.
            return "ended" if (pod.get("spec") or {}).get("restartPolicy") == "Never" else "running"
        if (entry.get("lastState") or {}).get("terminated"):
            return "running"  # restarting (CrashLoopBackOff): the last run's output is readable
    return "waiting"


def pod_logs(source: RoleSource, pods: list[dict[str, Any]], ranks: dict[str, int]) -> list[tuple[PodLog, dict[str, Any]]]:
    """Each pod with what to read of it, oldest first (a rank's pods in the order they wrote)."""
    out = []
    for pod in sorted(pods, key=_created):
        metadata = pod.get("metadata") or {}
        log = PodLog(source.role, ranks[_uid(pod)], _namespace(pod), str(metadata.get("name")), container_of(source, pod), _uid(pod), _created(pod)[0])
        out.append((log, pod))
    return out


def nothing_runs(spec: StackSpec, sources: list[RoleSource], query: LogQuery) -> ProviderError:
    namespaces = ", ".join(sorted({s.namespace for s in sources})) or (spec.k8s.namespace if spec.k8s else "default")
    what = f"role {query.role}" if query.role is not None else f"stack '{spec.name}'"
    return ProviderError(f"nothing of {what} runs in namespace {namespaces}; run `madinfra apply` (a finished Job's output is readable only while its pods exist)")


def no_such_rank(query: LogQuery, sources: list[RoleSource], found: Iterable[PodLog]) -> ProviderError:
    ranks = ", ".join(str(r) for r in sorted({p.rank for p in found})) or "none"
    what = f"role {query.role}" if query.role is not None else "any role"
    namespaces = ", ".join(sorted({s.namespace for s in sources}))
    return ProviderError(f"{what} has no rank {query.rank} in namespace {namespaces} (ranks there: {ranks}); pick one of those")


def plan_reads(spec: StackSpec, sources: list[RoleSource], shot: Snapshot, query: LogQuery) -> list[tuple[PodLog, dict[str, Any]]]:
    """Every pod of the roles asked for, with its rank, filtered by ``query.rank``; an error
    when there is nothing to read from at all."""
    everything: list[tuple[PodLog, dict[str, Any]]] = []
    for source in sources:
        pods = shot.pods.get(source.role) or []
        everything += pod_logs(source, pods, assign_ranks(source, pods))
    if not everything:
        raise nothing_runs(spec, sources, query)
    chosen = [(log, pod) for log, pod in everything if query.rank is None or log.rank == query.rank]
    if not chosen:
        raise no_such_rank(query, sources, (log for log, _ in everything))
    return chosen


# ---------------------------------------------------------------- reading
def log_query(pod: PodLog, *, since_ns: int | None, tail: int | None, follow: bool) -> dict[str, str]:
    query = {"container": pod.container, "timestamps": "true"}
    if since_ns is not None:
        query["sinceTime"] = since_time(since_ns)
    if tail is not None:
        query["tailLines"] = str(tail)
    if follow:
        query["follow"] = "true"
    return query


def is_not_started(exc: ApiError) -> bool:
    """The kubelet's answer for a container with no output yet (ContainerCreating,
    PodInitializing, a pod not scheduled): nothing to show, not an error."""
    return exc.status == 400 and "waiting to start" in exc.message.lower()


def read_error(api: Any, pod: PodLog, exc: ApiError) -> ProviderError:
    return kube._error(exc, f"read the logs of pod {pod.namespace}/{pod.pod} container {pod.container} (pods/log)", api)


def read_once(api: Any, pod: PodLog, since_ns: int | None, tail: int | None) -> list[Timed]:
    """The pod's output so far (no follow); a pod gone or not started has none."""
    try:
        stream = api.stream(pod.path(), log_query(pod, since_ns=since_ns, tail=tail, follow=False))
    except ApiError as exc:
        if exc.status == 404 or is_not_started(exc):
            return []
        raise read_error(api, pod, exc) from None
    try:
        return [parse_line(raw, pod.role, pod.rank) for raw in stream.lines()]
    except ApiError as exc:
        raise read_error(api, pod, exc) from None
    finally:
        stream.close()


def read_all(api: Any, pods: list[PodLog], since_ns: int | None, tail: int | None) -> dict[str, list[Timed]]:
    """Every pod read at once (a connection each, at most PARALLEL_READS at a time)."""
    if not pods:
        return {}
    with ThreadPoolExecutor(max_workers=min(PARALLEL_READS, len(pods))) as pool:
        results = pool.map(lambda pod: read_once(api, pod, since_ns, tail), pods)
        return {pod.uid: lines for pod, lines in zip(pods, results)}


def streams_of(pods: list[PodLog], lines: dict[str, list[Timed]], query: LogQuery) -> list[list[LogLine]]:
    """One stream per (role, rank), in role then rank order (``merge`` keeps that order for
    lines of the same instant): its pods' lines oldest pod first, cut by ``select``."""
    grouped: dict[tuple[str, int], list[LogLine]] = {}
    for pod in pods:
        grouped.setdefault((pod.role, pod.rank), []).extend(t.line for t in lines.get(pod.uid, []))
    return [select(grouped[key], query) for key in sorted(grouped, key=lambda k: (_order(pods, k[0]), k[1]))]


def _order(pods: list[PodLog], role: str) -> int:
    return next(i for i, p in enumerate(pods) if p.role == role)


def server_tail(query: LogQuery) -> int | None:
    """``tailLines`` to send: the kubelet cuts before the exact ``since`` is applied here, which
    gives the same lines as since-then-tail (both keep a suffix of a stream in time order). At
    least one line, so a reader that follows afterwards knows where the output stood."""
    return None if query.tail is None else max(query.tail, 1)


def since_ns_of(query: LogQuery) -> int | None:
    return None if query.since is None else int(query.since * 1_000_000_000)


def read_logs(api: Any, spec: StackSpec, desired: list[Resource], query: LogQuery) -> Iterator[LogLine]:
    """The output of the roles asked for, merged in time order (see the module docstring)."""
    if query.follow:
        from madinfra_kubernetes.log_follow import follow

        yield from follow(api, spec, desired, query)
        return
    sources = role_sources(spec, desired, query)
    chosen = plan_reads(spec, sources, snapshot(api, spec.name, sources), query)
    readable = [log for log, pod in chosen if container_state(pod, log.container) != "waiting"]
    if not readable:
        states = ", ".join(f"{log.pod} {(pod.get('status') or {}).get('phase', 'Pending')}" for log, pod in chosen[:3])
        raise ProviderError(f"no pod of {'role ' + query.role if query.role else 'the stack'} has started its container yet ({states}); `madinfra logs --follow` waits for them")
    lines = read_all(api, readable, since_ns_of(query), server_tail(query))
    yield from merge(streams_of(readable, lines, query))
