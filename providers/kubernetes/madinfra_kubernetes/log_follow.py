"""``madinfra logs --follow`` on Kubernetes: what is there first, merged in time order, then each
pod's new lines as they come, until every followed container has ended.

How: one thread per running pod holds a ``follow=true`` pod log request open and hands its lines
to the caller's thread through a queue; the caller's thread polls the pods (one list a second,
and one GET per workload) to start readers for pods that start, and to finish pods that end.

A kubelet closes a follow request when the container exits, but that alone is not a reliable end:
a connection also breaks for other reasons, and a fake kubelet (KWOK) never closes it. So a pod is
finished when the API says so (its container terminated for good, the pod Succeeded/Failed or
gone, or its Job complete/failed): its request is closed and one last plain read picks up
whatever came after the last line shown. Reading again from a point uses ``sinceTime`` (whole
seconds) and drops what was shown already by the exact time (nanoseconds) and count of lines at
that instant (``Cursor``). A request that ends while the pod still runs is opened again the same
way. Deployments and StatefulSets run until deleted, so following them lasts until Ctrl-C (the
caller's KeyboardInterrupt leaves the generator, which closes every request).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from madinfra.config.schema import StackSpec
from madinfra.logs import LogLine, LogQuery, merge
from madinfra.resources import Resource
from madinfra_kubernetes.apiserver import ApiError, Stream
from madinfra_kubernetes.logs import (
    PodLog,
    RoleSource,
    Snapshot,
    Timed,
    assign_ranks,
    container_state,
    is_not_started,
    log_query,
    parse_line,
    plan_reads,
    pod_logs,
    read_all,
    read_error,
    read_once,
    role_sources,
    server_tail,
    since_ns_of,
    snapshot,
    streams_of,
)

POLL_SECONDS = 1.0
RETRIES = 5
"""Failed follow requests in a row (5xx, a dropped connection) before the error is raised."""


@dataclass
class Cursor:
    """How far a pod's output has been shown: the last line's time, and how many lines of that
    very instant were shown (lines of one instant are told apart by their order only)."""

    ns: int | None = None
    count: int = 0

    def advance(self, ns: int) -> None:
        if self.ns == ns:
            self.count += 1
        else:
            self.ns, self.count = ns, 1


class Dedupe:
    """One read of a pod from its cursor on: keeps the lines not shown yet, moving the cursor."""

    def __init__(self, cursor: Cursor, since_ns: int | None):
        self.cursor = cursor
        self.start = cursor.ns
        self.skip = cursor.count
        self.since_ns = since_ns

    def accept(self, timed: Timed) -> bool:
        if timed.ns is None:
            return True
        if self.since_ns is not None and timed.ns < self.since_ns:
            return False
        if self.start is not None and timed.ns < self.start:
            return False
        if self.start is not None and timed.ns == self.start and self.skip > 0:
            self.skip -= 1
            return False
        self.cursor.advance(timed.ns)
        return True

    def read_from(self) -> int | None:
        """Where the API should start (``sinceTime`` is rounded down to the second)."""
        if self.start is None:
            return self.since_ns
        return self.start


@dataclass
class Followed:
    """A pod being followed."""

    log: PodLog
    cursor: Cursor = field(default_factory=Cursor)
    session: int = 0
    """Id of the current reader; lines of older readers are ignored (read again from the cursor)."""
    dedupe: Dedupe | None = None
    stream: Stream | None = None
    reading: bool = False
    done: bool = False
    failures: int = 0
    retry_at: float = 0.0


Event = tuple[str, int, str, Any]
"""(pod uid, reader session, what, payload): ``opened`` (the Stream), ``line`` (a Timed),
``failed`` (the ApiError that ended the reader) or ``ended`` (None: the answer ended)."""


class OpenStreams:
    """Every follow request a reader has open, so ending the follow closes them all, also one a
    reader opens while the follow is ending (its thread would otherwise wait on it forever)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: set[Any] = set()
        self._closed = False

    def add(self, stream: Any) -> bool:
        """False (and the stream closed) once the follow has ended."""
        with self._lock:
            if not self._closed:
                self._streams.add(stream)
                return True
        stream.close()
        return False

    def discard(self, stream: Any) -> None:
        with self._lock:
            self._streams.discard(stream)

    def close_all(self) -> None:
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, set()
        for stream in streams:
            stream.close()


def _reader(api: Any, pod: PodLog, session: int, query: dict[str, str], events: "queue.Queue[Event]", streams: OpenStreams) -> None:
    """Thread body: open the follow request here (the first bytes, headers included, may come only
    with the first new line), then pass each line on."""
    try:
        stream = api.stream(pod.path(), query, timeout=None)
    except ApiError as exc:
        events.put((pod.uid, session, "failed", exc))
        return
    if not streams.add(stream):
        return
    events.put((pod.uid, session, "opened", stream))
    try:
        for raw in stream.lines():
            events.put((pod.uid, session, "line", parse_line(raw, pod.role, pod.rank)))
    except ApiError as exc:
        events.put((pod.uid, session, "failed", exc))
        return
    finally:
        streams.discard(stream)
    events.put((pod.uid, session, "ended", None))


class Follower:
    """State of one ``--follow``: the pods, their cursors and readers, the held ranks."""

    def __init__(self, api: Any, spec: StackSpec, sources: list[RoleSource], query: LogQuery, poll: float, clock: Callable[[], float]):
        self.api = api
        self.spec = spec
        self.sources = sources
        self.query = query
        self.poll = poll
        self.clock = clock
        self.since_ns = since_ns_of(query)
        self.events: queue.Queue[Event] = queue.Queue()
        self.pods: dict[str, Followed] = {}
        self.ranks: dict[str, dict[str, int]] = {s.role: {} for s in sources}
        self.streams = OpenStreams()

    # -- the backlog ---------------------------------------------------------------------------
    def backlog(self, shot: Snapshot) -> list[list[LogLine]]:
        """Everything there is now, per (role, rank) stream as without ``--follow``; cursors
        set at each pod's last line."""
        chosen = plan_reads(self.spec, self.sources, shot, self.query)
        for source in self.sources:
            self.ranks[source.role] = assign_ranks(source, shot.pods.get(source.role) or [])
        for log, _ in chosen:
            self.pods[log.uid] = Followed(log)
        started = [log for log, pod in chosen if container_state(pod, log.container) != "waiting"]
        lines = read_all(self.api, started, self.since_ns, server_tail(self.query))
        for log in started:
            timed = [t for t in lines.get(log.uid, []) if t.ns is not None]
            if timed:
                last = timed[-1].ns
                assert last is not None
                self.pods[log.uid].cursor = Cursor(last, sum(1 for t in timed if t.ns == last))
        return streams_of(started, lines, self.query)

    # -- one poll ---------------------------------------------------------------------------------
    def refresh(self, shot: Snapshot) -> Iterator[LogLine]:
        """Take in new pods, finish pods that ended, (re)start readers of running pods."""
        current: dict[str, dict[str, Any]] = {}
        for source in self.sources:
            pods = shot.pods.get(source.role) or []
            ended = frozenset(uid for uid, f in self.pods.items() if f.done)
            self.ranks[source.role] = assign_ranks(source, pods, self.ranks[source.role], ended)
            for log, pod in pod_logs(source, pods, self.ranks[source.role]):
                current[log.uid] = pod
                if log.uid not in self.pods and self.query.wants(log.role, log.rank):
                    self.pods[log.uid] = Followed(log)
        finished_roles = {s.role for s in self.sources if role_finished(s, shot.workloads.get(s.role))}
        for uid, followed in self.pods.items():
            if followed.done:
                continue
            pod = current.get(uid)
            state = "ended" if pod is None or followed.log.role in finished_roles else container_state(pod, followed.log.container)
            if state == "ended":
                yield from self.finish(followed)
            elif state == "running" and not followed.reading and self.clock() >= followed.retry_at:
                self.start(followed)

    def finished(self, shot: Snapshot) -> bool:
        """Every role's workload is done (a Job complete or failed) or gone, and every pod
        followed has been read to its end."""
        return all(role_finished(s, shot.workloads.get(s.role)) for s in self.sources) and all(f.done for f in self.pods.values())

    def start(self, followed: Followed) -> None:
        followed.session += 1
        followed.dedupe = Dedupe(followed.cursor, self.since_ns)
        followed.reading = True
        query = log_query(followed.log, since_ns=followed.dedupe.read_from(), tail=None, follow=True)
        thread = threading.Thread(target=_reader, args=(self.api, followed.log, followed.session, query, self.events, self.streams), daemon=True, name=f"logs-{followed.log.pod}")
        thread.start()

    def stop(self, followed: Followed) -> None:
        followed.session += 1
        followed.reading = False
        if followed.stream is not None:
            followed.stream.close()
            followed.stream = None

    def finish(self, followed: Followed) -> Iterator[LogLine]:
        """The pod writes no more: close its request, read what came after the cursor."""
        self.stop(followed)
        dedupe = Dedupe(followed.cursor, self.since_ns)
        for timed in read_once(self.api, followed.log, dedupe.read_from(), None):
            if dedupe.accept(timed):
                yield timed.line
        followed.done = True

    # -- events -------------------------------------------------------------------------------------
    def drain(self, until: float) -> Iterator[LogLine]:
        """Lines the readers pass on, until ``until`` (the next poll)."""
        while True:
            remaining = until - self.clock()
            if remaining <= 0:
                return
            try:
                uid, session, what, payload = self.events.get(timeout=remaining)
            except queue.Empty:
                return
            followed = self.pods.get(uid)
            if followed is None or session != followed.session or followed.done:
                if what == "opened":
                    payload.close()  # opened after its pod was finished or its reader replaced
                continue
            if what == "opened":
                followed.stream = payload
            elif what == "line":
                followed.failures = 0
                if followed.dedupe is not None and followed.dedupe.accept(payload):
                    yield payload.line
            else:
                self.reader_ended(followed, payload)

    def reader_ended(self, followed: Followed, error: ApiError | None) -> None:
        """A request ended while its pod runs (the next poll reopens it, or finishes the pod);
        an error that will not go away by asking again is raised."""
        followed.reading = False
        followed.stream = None
        if error is None:
            followed.retry_at = self.clock() + self.poll
            return
        if error.status == 404 or is_not_started(error):
            followed.retry_at = self.clock() + self.poll
            return
        transient = error.status is None or error.status >= 500 or error.status == 429
        followed.failures += 1
        if not transient or followed.failures > RETRIES:
            raise read_error(self.api, followed.log, error)
        followed.retry_at = self.clock() + self.poll * followed.failures

    def close(self) -> None:
        for followed in self.pods.values():
            self.stop(followed)
        self.streams.close_all()


def role_finished(source: RoleSource, workload: dict[str, Any] | None) -> bool:
    """A Job complete or failed, or any workload deleted: its pods write no more."""
    if workload is None:
        return True
    if source.kind != "Job":
        return False
    conditions = (workload.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def follow(
    api: Any,
    spec: StackSpec,
    desired: list[Resource],
    query: LogQuery,
    poll: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[LogLine]:
    """The backlog in time order, then new lines as they come; returns once every followed pod
    has ended and its workload is finished (never, for a server that keeps running)."""
    sources = role_sources(spec, desired, query)
    follower = Follower(api, spec, sources, query, poll, clock)
    shot = snapshot(api, spec.name, sources)
    try:
        yield from merge(follower.backlog(shot))
        while True:
            yield from follower.refresh(shot)
            if follower.finished(shot):
                return
            yield from follower.drain(clock() + poll)
            shot = snapshot(api, spec.name, sources)
    finally:
        follower.close()

