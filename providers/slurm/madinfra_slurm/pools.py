"""Apply for serving pools whose unit is the replica (disaggregated SGLang's prefill and decode).

Each replica is its own job (``slurm/Job/decode-2``) and each pool has an endpoint file
(``endpoints/decode``, one URL per healthy replica, ``stackfiles.py``) that the proxy routes by.
The plan's ``PoolRollout`` (``madinfra.rollout``, computed in ``SlurmProvider.plan_rollouts``
from the live read's free GPUs) says how a pool changes; apply here carries out exactly that:

1. in-place updates (a new time limit) first: they restart nothing;
2. scale-in: the removed (highest) replicas leave the endpoint file first, apply waits until the
   proxy acknowledges the new list (``endpoints/.proxy-seen``, written by the generated proxy's
   supervisor; a proxy of the user's own gives no acknowledgement and the file write is the
   drain point), then cancels them;
3. scale-out: the new replicas are submitted together and each joins the file once it passes its
   health check;
4. rolling changes (image, flags, env: a replaced replica), batch by batch
   (``PoolRollout.batches()``): with surge, the new job of replica ``i`` starts beside the old
   one (both named ``<pool>-<i>``), passes its health check, takes its place in the file, and
   the old job is cancelled after the proxy's acknowledgement; without surge, ``i`` is drained
   (acknowledged), its old script and secrets are kept as ``<file>.previous``, the old job is
   cancelled, the new one submitted and, once healthy, added back;
5. the file is written once more with the pool's ``replica_jobs`` digest (the plan's mark of a
   finished pool), and older duplicate jobs of a replica (``decode-1#<id>``, left by an
   interrupted surge) are cancelled after the proxy dropped them.

So the endpoint file only ever lists replicas that passed their health check and still run,
and a pool with more than one replica never passes through zero ready replicas.

A new replica that fails its health check stops the apply. With rollback (the default) its job
is cancelled; in the surge case the old job never stopped serving, in the no-surge case the
previous script is resubmitted and added back once healthy; the change is recorded failed with
a message saying it was rolled back, and with the job that now runs, so the next plan proposes
it again. ``apply --no-rollback`` leaves everything where the failure happened.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from madinfra.errors import ProviderError
from madinfra.interrupt import stop_requested
from madinfra.launchers.sglang_disagg import ACK_FILE, watched_files
from madinfra.resources import Change, RecordCallback, Resource
from madinfra.config.schema import RolloutSettings
from madinfra.planner import kv_compat
from madinfra.rollout import PoolRollout, RolloutPlan, replace_together, replica_pools
from madinfra.sequential import INTERRUPTED_BEFORE, ChangeSkipped, NotStarted, apply_sequentially
from madinfra_slurm import capacity, rules, scripts, squeue, stackfiles
from madinfra_slurm.connection import sftp_path

if TYPE_CHECKING:
    from madinfra_slurm.provider import SlurmProvider

POOLS = ("prefill", "decode")
PREVIOUS_SUFFIX = ".previous"
"""A no-surge roll keeps the replica's old sbatch script and secrets as ``<file>.previous``, so
a failed new version can be rolled back to exactly what ran before."""
ACK_TIMEOUT = 60
"""Seconds apply waits for the proxy to acknowledge a new endpoint list before cancelling."""


class RolledBack(ProviderError):
    """A replica change that failed its health check and was undone; ``live_after`` is the job
    that serves now (the old one, or the previous script resubmitted), so state records it."""

    def __init__(self, message: str, live_after: Resource | None):
        super().__init__(message)
        self.live_after = live_after


class ReplicaFailed(ProviderError):
    """A replica change that failed and was left where it stopped (``--no-rollback``, or a
    rollback that could not be done); ``live_after`` is the job as it is."""

    def __init__(self, message: str, live_after: Resource | None):
        super().__init__(message)
        self.live_after = live_after


@dataclass
class PoolChanges:
    """One pool's part of a plan: its replica jobs' changes, its endpoint file's change, and
    the deletes of older duplicate jobs of its replicas (``decode-1#<id>``)."""

    pool: str
    jobs: list[Change] = field(default_factory=list)
    endpoints: Change | None = None
    duplicates: list[Change] = field(default_factory=list)

    @property
    def all(self) -> list[Change]:
        return self.jobs + ([self.endpoints] if self.endpoints is not None else []) + self.duplicates

    def depends_on(self) -> set[str]:
        """What the pool waits for (the files before it), not its own resources."""
        own = {c.resource_id for c in self.all}
        deps = {dep for c in self.jobs if c.desired is not None for dep in c.desired.depends_on}
        return deps - own


def rollout_plan(
    changes: list[Change],
    live: list[Resource],
    partitions: dict[str, squeue.Partition] | None,
    gpus_before: int,
    gpus_after: int,
) -> RolloutPlan:
    """The plan's ``RolloutPlan`` (``madinfra.rollout.replica_pools``): each pool's replicas after
    the plan (the changes' desired side plus the live replicas it leaves alone), its rollout
    settings (``submit.rollout`` of its replicas), and surge room from ``sinfo``'s per-node free
    GPUs in the pools' partition (``capacity.py``; ``None``: unknown, so no surge is promised)."""
    changed = {c.resource_id for c in changes}
    after = [c.desired for c in changes if c.desired is not None and c.desired.kind == scripts.KIND and c.desired.replica is not None]
    after += [r for r in live if r.kind == scripts.KIND and r.replica is not None and "#" not in r.name and r.id not in changed]
    limits: dict[str, RolloutSettings] = {}
    sample: Resource | None = None
    for resource in after:
        settings = resource.spec.get(rules.SUBMIT_KEY, {}).get("rollout")
        if settings and resource.role is not None:
            limits[resource.role] = RolloutSettings(**settings)
            sample = sample or resource
    partition = capacity.partition_of(sample.spec, partitions) if sample is not None and partitions else None
    exclusive = bool(sample.spec.get("exclusive")) if sample is not None else False
    planned = replica_pools(
        changes,
        after,
        limits,
        capacity.gpus_free(partition),
        gpus_before,
        gpus_after,
        room_for=lambda gpus: capacity.room(partition, gpus, exclusive),
    )
    found = kv_compat.together(changes)
    if found is None:
        return planned
    per_replica = max((p.gpus_per_replica for p in planned.pools if p.pool in found.pools), default=0)
    room = capacity.room(partition, per_replica, exclusive) if per_replica else None
    growth = max(0, gpus_after - gpus_before)
    if room is not None and growth and per_replica:
        room = max(0, room - -(-growth // per_replica))  # replicas the plan adds take room first
    return replace_together(planned, found.pools, found.reason, gpus_before, gpus_after, room)


def _resource(change: Change) -> Resource:
    resource = change.desired or change.current
    assert resource is not None
    return resource


def split(changes: list[Change]) -> tuple[dict[str, PoolChanges], list[Change]]:
    """The pools' changes by pool, and every other change."""
    pools: dict[str, PoolChanges] = {}
    rest: list[Change] = []
    for change in changes:
        resource = _resource(change)
        if resource.kind == scripts.KIND and resource.replica is not None and resource.role in POOLS:
            group = pools.setdefault(resource.role, PoolChanges(resource.role))
            (group.duplicates if "#" in resource.name else group.jobs).append(change)
        elif resource.kind == stackfiles.FILE_KIND and resource.name in {stackfiles.endpoints_name(p) for p in POOLS}:
            pool = resource.name.rsplit("/", 1)[1]
            pools.setdefault(pool, PoolChanges(pool)).endpoints = change
        else:
            rest.append(change)
    return pools, rest


def apply_changes(provider: SlurmProvider, changes: list[Change], record: RecordCallback, rollouts: RolloutPlan) -> None:
    """Files and old one-job-per-pool deletes first, then each pool (``PoolApplier``) in
    prefill, decode order, then the rest (the proxy): a pool or change that fails blocks what
    depends on it, which is recorded as skipped."""
    groups, rest = split(changes)
    create, update, delete = provider._create, provider._update, provider._destroyer(changes)
    progress = provider._progress
    if not groups or all(c.action == "delete" for c in changes):
        # Nothing pooled, or a destroy: plain dependency order (the proxy and each endpoint
        # file go before the replicas they route to), and the stack directory after the last.
        apply_sequentially(changes, create, update, delete, progress, record)
        return
    early = [c for c in rest if _resource(c).kind == stackfiles.FILE_KIND or (c.action == "delete" and _resource(c).role in POOLS)]
    late = [c for c in rest if c not in early]
    result = apply_sequentially(early, create, update, delete, progress, record)
    blocked = set(result.failed) | set(result.skipped)
    if any(p.together for p in rollouts.pools):
        blocked |= _together(provider, groups, record, rollouts, blocked)
        groups = {}
    for pool in POOLS:
        group = groups.get(pool)
        if group is None:
            continue
        blocker = next(iter(sorted(group.depends_on() & blocked)), None)
        if blocker is not None or stop_requested():
            _skip_all(group.all, record, blocker)
            blocked |= {c.resource_id for c in group.all}
            continue
        applier = PoolApplier(provider, group, rollouts.pool(pool), record)
        blocked |= applier.run()
    kept = []
    for change in late:
        deps = set(change.desired.depends_on) if change.desired is not None else set()
        blocker = next(iter(sorted(deps & blocked)), None)
        if blocker is not None:
            _skip_all([change], record, blocker)
            blocked.add(change.resource_id)
        else:
            kept.append(change)
    if kept:
        apply_sequentially(kept, create, update, delete, progress, record)


def _together(provider: SlurmProvider, groups: dict[str, PoolChanges], record: RecordCallback, rollouts: RolloutPlan, blocked: set[str]) -> set[str]:
    """Both pools in one step (a KV cache layout change, ``together.py``); the ids not done."""
    from madinfra_slurm.together import TogetherApplier

    every = [c for g in groups.values() for c in g.all]
    blocker = next(iter(sorted(set().union(*(g.depends_on() for g in groups.values())) & blocked)), None)
    if blocker is not None or stop_requested():
        _skip_all(every, record, blocker)
        return {c.resource_id for c in every}
    return TogetherApplier(provider, groups, rollouts, record).run()


def _skip_all(changes: list[Change], record: RecordCallback, blocker: str | None) -> None:
    for change in changes:
        if blocker is None:
            record(change, None, NotStarted(f"{change.resource_id} {INTERRUPTED_BEFORE}"))
        else:
            record(change, None, ChangeSkipped(f"{change.resource_id} was skipped because {blocker} did not complete"))


@dataclass
class Entry:
    """One line of an endpoint file: the replica's job and URL."""

    job_id: str
    url: str


class PoolApplier:
    """Carries out one pool's changes (see the module docstring); ``run`` records every change
    of the pool and returns the ids that did not complete."""

    def __init__(self, provider: SlurmProvider, group: PoolChanges, rollout: PoolRollout | None, record: RecordCallback):
        self.p = provider
        self.group = group
        self.pool = group.pool
        self.rollout = rollout
        self.record = record
        self.unfinished: set[str] = set()
        self.endpoints = self._endpoint_settings()
        self.serving: dict[int, Entry] = {}
        self.addresses: dict[str, str] = {}
        self.stack = self._stack()
        self.proxy_running = False
        self._recorded_ids: set[str] = set()
        self.held: dict[int, tuple[str, str]] = {}
        """Replicas whose older job keeps serving because the newer one is not healthy: ``(old, new)``."""

    # -- setup ------------------------------------------------------------------------------

    def _endpoint_settings(self) -> dict[str, Any] | None:
        """Where and how to write the pool's endpoint file: from its desired resource, else from
        any replica's ``submit.endpoints`` (a forced replacement leaves the file's spec alone);
        ``None``: the pool has no endpoint file (a model script serves instead)."""
        change = self.group.endpoints
        if change is not None and change.desired is not None:
            submit = change.desired.spec[rules.SUBMIT_KEY]
            return {**submit, "port": change.desired.spec["port"], "replica_jobs": change.desired.spec["replica_jobs"]}
        if change is not None:
            return None
        for job in self.group.jobs:
            if job.desired is not None and job.desired.spec[rules.SUBMIT_KEY].get("endpoints"):
                return dict(job.desired.spec[rules.SUBMIT_KEY]["endpoints"])
        return None

    def _stack(self) -> str:
        for change in self.group.all:
            resource = change.desired or change.current
            if resource is not None and rules.SUBMIT_KEY in resource.spec:
                return resource.spec[rules.SUBMIT_KEY]["stack"]
        return self.p._read_stack or ""

    def _read_serving(self) -> None:
        """The pool's running replica jobs now (one squeue): what the endpoint file lists from
        here on (a running replica counts as healthy), plus whether the proxy runs.

        Where a replica has two running jobs (an earlier ``--no-rollback`` surge or an
        interrupted apply left the old one beside the new), the newer one takes its place only
        if it passes the health check now; otherwise the one the file lists keeps serving
        (``held``) and is not cancelled (``_finish``)."""
        rows = self.p._rows(f"Reading the {self.pool} replicas")
        prefix = squeue.stack_prefix(self.stack)
        running: dict[int, list[squeue.JobRow]] = {}
        for row in squeue.stack_rows(rows, self.stack):
            role = row.name[len(prefix):]
            pool, index = scripts.split_replica(role)
            if pool == self.pool and index is not None and row.running:
                running.setdefault(index, []).append(row)
            if role == "proxy" and row.running:
                self.proxy_running = True
        listed = self._listed()
        chosen: dict[int, squeue.JobRow] = {}
        for index, candidates in running.items():
            newest = candidates[-1]
            old = next((row for row in candidates[:-1] if row.job_id == listed.get(index)), None)
            if old is not None and not self._ready_now(newest):
                self.held[index] = (old.job_id, newest.job_id)
                newest = old
            chosen[index] = newest
        self._learn_addresses(sorted({row.hosts[0] for row in chosen.values() if row.hosts}))
        self.serving = {index: Entry(row.job_id, self._url(row.hosts[0] if row.hosts else "")) for index, row in chosen.items()}

    def _listed(self) -> dict[int, str]:
        """``{replica: job id}`` the endpoint file lists now, as the plan's live read found it."""
        change = self.group.endpoints
        current = change.current if change is not None else None
        written = current.status.get("written_for", {}) if current is not None else {}
        return {int(index): job for index, job in written.items() if str(index).isdigit()}

    def _ready_now(self, row: squeue.JobRow) -> bool:
        """Whether a replica job passes the pool's health check now (one try)."""
        ready = (self.endpoints or {}).get("ready")
        if not ready:
            return True
        probe = Resource(scripts.KIND, scripts.replica_role(self.pool, 0), {rules.SUBMIT_KEY: {"ready": ready}})
        return self.p._healthy(probe, row)

    def _learn_addresses(self, hosts: list[str]) -> None:
        missing = [h for h in hosts if h and h not in self.addresses]
        if not missing:
            return
        what = f"Reading the node addresses of the {self.pool} replicas"
        result = self.p.connection.run(f"scontrol show node -o {shlex.quote(','.join(missing))}", what=what)
        if not result.ok:
            raise ProviderError(f"{what} (nodes {','.join(missing)}): {result.error_text}")
        self.addresses.update(squeue.node_addresses(result.stdout))

    def _url(self, host: str) -> str:
        port = self.endpoints["port"] if self.endpoints else 0
        return f"http://{self.addresses.get(host, host)}:{port}"

    def _live_url(self, live: Resource) -> str:
        hosts = live.status.get("nodes") or []
        self._learn_addresses(hosts[:1])
        return self._url(hosts[0] if hosts else "")

    # -- the endpoint file ------------------------------------------------------------------

    @property
    def file_id(self) -> str:
        return f"{stackfiles.FILE_KIND}/{stackfiles.endpoints_name(self.pool)}"

    def _write(self, final: bool = False) -> Resource | None:
        """Write the endpoint file as ``serving`` says (URLs first, then the ``.source`` record,
        so a stop in between leaves a record the plan finds stale); ``final`` adds the pool's
        ``replica_jobs`` digest."""
        if self.endpoints is None:
            return None
        path = f"{sftp_path(self.endpoints['remote_dir'])}/{self.endpoints['file']}"
        urls = [self.serving[i].url for i in sorted(self.serving)]
        text = "".join(url + "\n" for url in urls)
        digest = self.endpoints["replica_jobs"] if final else None
        what = f"Writing the endpoints of {self.file_id}"
        self.p.connection.write_text(path, text, what=what)
        jobs = {i: entry.job_id for i, entry in self.serving.items()}
        self.p.connection.write_text(path + stackfiles.SOURCE_SUFFIX, stackfiles.source_text(jobs, digest), what=what)
        listed = ", ".join(f"{self.pool}-{i} (job {jobs[i]})" for i in sorted(jobs)) or "none"
        self.p._progress(self.file_id, f"wrote {self.endpoints['file']}: {listed}")
        spec = {"port": self.endpoints["port"], "replicas": len(urls), "replica_jobs": digest}
        status = {"urls": urls, "written_for": {str(i): jobs[i] for i in sorted(jobs)}}
        return Resource(stackfiles.FILE_KIND, stackfiles.endpoints_name(self.pool), spec, status=status)

    def _serve(self, index: int, entry: Entry) -> None:
        """Replica ``index`` is served by ``entry`` from the next write on (a held replica is no
        longer held: its new job passed its health check)."""
        self.serving[index] = entry
        self.held.pop(index, None)

    def _wait_for_proxy(self, why: str | None) -> None:
        """Until the proxy runs with the endpoint files as they are now (its supervisor's
        ``.proxy-seen`` equals their checksum), bounded by ``ACK_TIMEOUT``: before a drained
        replica (``why``) is cancelled, and once the pool is finished (``why`` None: apply ends
        when the proxy routes to the new replicas). Without a running proxy of madinfra's own
        there is nobody to ask: the file write is the drain point."""
        if self.endpoints is None or not self.endpoints.get("proxy_ack") or not self.proxy_running:
            return
        directory = f"{scripts.shell_path(self.endpoints['remote_dir'])}/{scripts.ENDPOINTS_DIR}"
        files = " ".join(shlex.quote(name) for name in watched_files())
        ack = shlex.quote(ACK_FILE)
        command = (
            f"cd {directory} && for _ in $(seq {ACK_TIMEOUT}); do"
            f' [ "$(cat {ack} 2>/dev/null)" = "$({{ cat {files} 2>/dev/null || true; }} | cksum)" ] && exit 0; sleep 1; done; exit 1'
        )
        result = self.p.connection.run(command, what=f"Waiting for the proxy to pick up {self.file_id}", timeout=ACK_TIMEOUT + 30)
        if not result.ok:
            consequence = f"so {why} was left running" if why else "so apply cannot tell that it routes to the pool's new replicas"
            raise ProviderError(
                f"{self.file_id}: the proxy did not pick up the new {self.pool} endpoint list within {ACK_TIMEOUT} s "
                f"(endpoints/{ACK_FILE} did not change), {consequence}; check the proxy job's log under logs/ and run apply again"
            )
        self.p._progress(self.file_id, "the proxy picked up the new endpoint list")

    # -- run --------------------------------------------------------------------------------

    def run(self) -> set[str]:
        """Carry out the pool's changes in order; the ids that did not complete."""
        jobs = self.group.jobs
        try:
            if self.endpoints is not None or self.group.jobs:
                self._read_serving()
            if self.group.endpoints is not None and self.group.endpoints.action == "delete":
                self._do(self.group.endpoints, lambda c: self.p._delete(c.current))
            for change in [c for c in jobs if c.action == "update"]:
                self._do(change, self.p._update)
            removed = sorted((c for c in jobs if c.action == "delete"), key=lambda c: -(_resource(c).replica or 0))
            if removed:
                self._remove(removed)
            added = sorted((c for c in jobs if c.action == "create"), key=lambda c: _resource(c).replica or 0)
            if added and not self._add(added):
                return self._stop_settled()
            rolled = {_resource(c).replica: c for c in jobs if c.action == "replace"}
            if rolled and not self._roll(rolled):
                return self._stop_settled()
            self._finish()
        except Exception as exc:  # noqa: BLE001 - recorded against the pool's change in flight
            self._fail_rest(exc)
        return self.unfinished

    def _done(self, change: Change) -> bool:
        return change.resource_id in self._recorded_ids

    def _note(self, change: Change, live: Resource | None, error: Exception | None) -> None:
        """Record one change (state is written at once) and remember it."""
        self._recorded_ids.add(change.resource_id)
        if error is not None:
            self.unfinished.add(change.resource_id)
        self.record(change, live, error)

    def _do(self, change: Change, action: Callable[[Change], Resource | None]) -> None:
        self.p._progress(change.resource_id, {"update": "updating in place", "delete": "destroying"}.get(change.action, change.action))
        try:
            live = action(change)
        except Exception as exc:
            self._note(change, getattr(exc, "live_after", None), exc)
            raise _Stop() from exc
        self._note(change, live, None)

    def _stop_settled(self) -> set[str]:
        """After a replica failed (and was rolled back or left): the proxy is given the time to
        pick up the last list written (so apply ends with the proxy routing as the file says),
        then the rest of the pool is skipped. A proxy that does not acknowledge is reported, not
        a second failure: the changes are already recorded."""
        try:
            self._wait_for_proxy(None)
        except ProviderError as exc:
            self.p._progress(self.file_id, str(exc))
        return self._stop()

    def _stop(self) -> set[str]:
        """After a failure: every change of the pool not yet recorded is skipped."""
        failed = next((rid for rid in sorted(self.unfinished)), None)
        for change in self.group.all:
            if not self._done(change):
                reason = f"skipped because {failed} did not complete" if failed else INTERRUPTED_BEFORE
                error = ChangeSkipped(f"{change.resource_id} was {reason}") if failed else NotStarted(f"{change.resource_id} {INTERRUPTED_BEFORE}")
                self._note(change, None, error)
        return self.unfinished

    def _fail_rest(self, exc: Exception) -> None:
        """An unexpected failure (connection, squeue): the change in flight is not known, so
        every change of the pool not yet recorded fails with it (``_Stop``: already recorded)."""
        if isinstance(exc, _Stop):
            self._stop()
            return
        first = True
        for change in self.group.all:
            if not self._done(change):
                self._note(change, None, exc if first else ChangeSkipped(f"{change.resource_id} was skipped because the {self.pool} pool's apply failed: {exc}"))
                first = False

    # -- scale-in ---------------------------------------------------------------------------

    def _remove(self, removed: list[Change]) -> None:
        """Drain the removed replicas from the endpoint file, wait for the proxy, cancel them."""
        for change in removed:
            self.serving.pop(_resource(change).replica or 0, None)
        names = ", ".join(c.resource_id for c in removed)
        self._write()
        self._wait_for_proxy(names)
        for change in removed:
            self._do(change, lambda c: self.p._delete(c.current))

    # -- scale-out --------------------------------------------------------------------------

    def _add(self, added: list[Change]) -> bool:
        """Submit every new replica, then add each to the endpoint file once healthy. A replica
        that fails is cancelled (rollback) or left (``--no-rollback``); the others still join."""
        submitted = {}
        for change in added:
            if stop_requested():
                break
            submitted[change.resource_id] = self._submit(change.desired)
        ok = True
        for change in added:
            if change.resource_id not in submitted:
                continue
            job_id = submitted[change.resource_id]
            try:
                live = self.p._wait_ready(change.desired, job_id)
            except Exception as exc:  # noqa: BLE001 - the replica failed; the rest go on
                ok = False
                if self.p.options.rollback:
                    self.p._cancel(change.resource_id, job_id)
                    self._note(change, None, RolledBack(f"{change.resource_id}: {_reason(exc)}; rolled back: its job {job_id} was cancelled and the {self.pool} pool serves without it; fix the cause and run apply again", None))
                else:
                    self._note(change, getattr(exc, "live_after", None), exc)
                continue
            self._serve(_resource(change).replica or 0, Entry(job_id, self._live_url(live)))
            self._write()
            self._note(change, live, None)
        return ok and len(submitted) == len(added)

    def _submit(self, desired: Resource | None) -> str:
        assert desired is not None
        self.p._upload(desired)
        job_id = self.p._submit(desired)
        self.p._progress(desired.id, f"submitted job {job_id}")
        return job_id

    # -- rolling ----------------------------------------------------------------------------

    def _roll(self, rolled: dict[int | None, Change]) -> bool:
        """Batches as the plan showed them; stops after the first batch with a failure."""
        rollout = self.rollout or PoolRollout(self.pool, len(rolled), len(rolled), rolled=tuple(sorted(i or 0 for i in rolled)), unavailable=1)
        for batch in rollout.batches():
            if stop_requested():
                return False
            changes = [rolled[i] for i in batch if i in rolled]
            ok = self._surge(changes) if rollout.surge else self._replace_in_place(changes)
            if not ok:
                return False
        return True

    def _surge(self, batch: list[Change]) -> bool:
        """New jobs beside the old ones; each healthy one takes its replica's place in the file,
        then (after the proxy's acknowledgement) the old jobs are cancelled."""
        new = {c.resource_id: self._submit(c.desired) for c in batch}
        healthy: list[tuple[Change, Resource]] = []
        ok = True
        for change in batch:
            job_id = new[change.resource_id]
            try:
                healthy.append((change, self.p._wait_ready(change.desired, job_id)))
            except Exception as exc:  # noqa: BLE001 - judged below
                ok = False
                old = change.current
                assert old is not None
                if self.p.options.rollback:
                    self.p._cancel(change.resource_id, job_id)
                    self._note(change, old, RolledBack(
                        f"{change.resource_id}: the new job {job_id} {_reason(exc)}; rolled back: it was cancelled and job {old.provider_id} "
                        "(the previous version) kept serving; fix the change and run apply again",
                        old,
                    ))
                else:
                    self._note(change, getattr(exc, "live_after", None), ReplicaFailed(
                        f"{change.resource_id}: the new job {job_id} {_reason(exc)}; left as it is (--no-rollback): job {old.provider_id} "
                        "(the previous version) still serves and the new one stays queued; run plan to see both", getattr(exc, "live_after", None)))
        if healthy:
            for change, live in healthy:
                self._serve(_resource(change).replica or 0, Entry(live.provider_id or "", self._live_url(live)))
            self._write()
            self._wait_for_proxy(", ".join(f"the old job of {c.resource_id}" for c, _ in healthy))
            for change, live in healthy:
                assert change.current is not None
                self.p._cancel(change.resource_id, change.current.provider_id or "")
                self._note(change, live, None)
        return ok

    def _replace_in_place(self, batch: list[Change]) -> bool:
        """No room for a surge: drain the batch, keep its old scripts, cancel, submit the new
        version, add each back once healthy (or roll back to the kept script)."""
        for change in batch:
            self.serving.pop(_resource(change).replica or 0, None)
        self._write()
        self._wait_for_proxy(", ".join(c.resource_id for c in batch))
        kept = {}
        for change in batch:
            assert change.current is not None
            kept[change.resource_id] = self._keep_previous(change)
            self.p._cancel(change.resource_id, change.current.provider_id or "")
        new = {c.resource_id: self._submit(c.desired) for c in batch}
        ok = True
        for change in batch:
            job_id = new[change.resource_id]
            try:
                live = self.p._wait_ready(change.desired, job_id)
            except Exception as exc:  # noqa: BLE001 - rolled back below
                ok = False
                self._roll_back(change, job_id, exc, kept[change.resource_id])
                continue
            self._serve(_resource(change).replica or 0, Entry(job_id, self._live_url(live)))
            self._write()
            self._note(change, live, None)
        return ok

    def _files(self, change: Change) -> tuple[str, list[str]]:
        desired = change.desired
        assert desired is not None
        submit = desired.spec[rules.SUBMIT_KEY]
        role = desired.name
        return submit["remote_dir"], [scripts.script_file(role), scripts.secrets_file(role)]

    def _keep_previous(self, change: Change) -> bool:
        """Copy the replica's current script (and secrets) to ``<file>.previous``: whether it could."""
        base, names = self._files(change)
        directory = scripts.shell_path(base)
        script, secrets = (shlex.quote(n) for n in names)
        command = (
            f"cd {directory} && cp -p {script} {script}{PREVIOUS_SUFFIX}"
            f" && {{ [ ! -e {secrets} ] || cp -p {secrets} {secrets}{PREVIOUS_SUFFIX}; }}"
        )
        return self.p.connection.run(command, what=f"Keeping the previous script of {change.resource_id}").ok

    def _roll_back(self, change: Change, job_id: str, exc: Exception, kept: bool) -> None:
        """The new version failed: cancel it and resubmit the kept previous script."""
        rid = change.resource_id
        if not self.p.options.rollback or not kept:
            why = "left as it is (--no-rollback)" if self.p.options.rollback is False else "the previous script could not be kept, so it was not rolled back"
            self._note(change, getattr(exc, "live_after", None), ReplicaFailed(
                f"{rid}: the new job {job_id} {_reason(exc)}; {why}: the replica is out of the endpoint list; fix the change and run apply again",
                getattr(exc, "live_after", None)))
            return
        self.p._cancel(rid, job_id)
        base, names = self._files(change)
        script, secrets = (shlex.quote(n) for n in names)
        restore = (
            f"cd {scripts.shell_path(base)} && mv -f {script}{PREVIOUS_SUFFIX} {script}"
            f" && {{ [ ! -e {secrets}{PREVIOUS_SUFFIX} ] || mv -f {secrets}{PREVIOUS_SUFFIX} {secrets}; }}"
        )
        result = self.p.connection.run(restore, what=f"Restoring the previous script of {rid}")
        if not result.ok:
            self._note(change, None, ReplicaFailed(f"{rid}: the new job {job_id} {_reason(exc)} and was cancelled; the previous script could not be restored ({result.error_text}); run apply again", None))
            return
        assert change.desired is not None
        old_job = self.p._submit(change.desired)
        self.p._progress(rid, f"rolling back: resubmitted the previous script as job {old_job}")
        try:
            live = self.p._wait_ready(change.desired, old_job)
        except Exception as again:  # noqa: BLE001 - reported with the first failure
            self._note(change, getattr(again, "live_after", None), ReplicaFailed(
                f"{rid}: the new job {job_id} {_reason(exc)}; rolled back to the previous script as job {old_job}, which did not become healthy either ({_reason(again)})",
                getattr(again, "live_after", None)))
            return
        self._serve(_resource(change).replica or 0, Entry(old_job, self._live_url(live)))
        self._write()
        self._note(change, live, RolledBack(
            f"{rid}: the new job {job_id} {_reason(exc)}; rolled back: it was cancelled and the previous version serves again as job {old_job}; fix the change and run apply again",
            live))

    # -- finish -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """The finished pool's file (with ``replica_jobs``, unless a replica is ``held``), then
        older duplicate jobs of a replica go, except one that still serves."""
        final = self._write(final=not self.held)
        change = self.group.endpoints
        try:
            self._wait_for_proxy(None)
        except ProviderError as exc:
            if change is not None and not self._done(change):
                self._note(change, final, exc)
            raise _Stop() from exc
        if change is not None and not self._done(change):
            self._note(change, final, None)
        serving = {entry.job_id for entry in self.serving.values()}
        for duplicate in self.group.duplicates:
            current = duplicate.current
            assert current is not None
            if current.provider_id in serving:
                index = current.replica or 0
                newer = self.held.get(index, ("", "?"))[1]
                self._note(duplicate, current, ProviderError(
                    f"{duplicate.resource_id}: job {current.provider_id} was not cancelled: it still serves {self.pool}-{index}, because the newer job {newer} "
                    "does not pass its health check; fix the change (or cancel job " + newer + ") and run apply again"))
                continue
            self._do(duplicate, lambda c: self.p._delete(c.current))


class _Stop(Exception):
    """A change of the pool failed and was recorded; the rest of the pool is skipped."""


def _reason(exc: Exception) -> str:
    """Why a new replica is not serving, as the tail of a sentence (from ``_wait_ready``'s error)."""
    text = str(exc).rstrip(".")
    timeout = re.search(r"timed out after (\d+) s", text)
    if timeout and "health check" in text:
        return f"did not pass its health check within {timeout.group(1)} s"
    if timeout:
        return f"did not start within {timeout.group(1)} s (it stayed pending)"
    return f"failed ({text})"
