"""Apply for a KV cache layout change: prefill and decode replaced together (SLURM).

``madinfra.planner.kv_compat`` decides when the pools' layout changes; the plan then shows
every rolled replica of both pools as one step (``PoolRollout.together``). Here that step is
carried out so that the proxy never routes between an old and a new replica:

1. each pool's in-place updates and scale-in first (``PoolApplier``: they restart nothing that
   stays);
2. with room for every new replica beside the old ones (the plan's ``surge``): the new jobs of
   both pools start and must all pass their health check while the old ones serve; then both
   endpoint files are emptied (the generated proxy stops routing while a list is empty,
   ``sglang_disagg.supervise``; apply waits for its acknowledgement), filled with the new
   replicas (acknowledged again), and the old jobs are cancelled: the proxy does not route for
   the few seconds of the switch;
3. without room: both files are emptied (acknowledged), every old job of both pools is
   cancelled (its script kept as ``.previous``), every new one submitted, and each waited for
   until it passes its health check; all healthy, both files list the new replicas.

If a new replica fails, rollback (the default) cancels every new job of both pools (with room
the old ones never stopped; without, the previous scripts are resubmitted), so the stack serves
the old layout again; each change is
recorded failed with "rolled back", and the next plan proposes the change again. With
``--no-rollback`` the healthy new replicas serve (all on the new layout) and the failed ones
are left as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from madinfra.errors import ProviderError
from madinfra.resources import Change, RecordCallback, Resource
from madinfra.rollout import RolloutPlan
from madinfra_slurm.pools import POOLS, Entry, PoolApplier, PoolChanges, ReplicaFailed, _reason, _resource

if TYPE_CHECKING:
    from madinfra_slurm.provider import SlurmProvider


def is_together(rollouts: RolloutPlan) -> bool:
    return any(p.together for p in rollouts.pools)


class TogetherApplier:
    """Both pools' changes of one plan whose rolls are ``together``; ``run`` returns the ids
    that did not complete."""

    def __init__(self, provider: SlurmProvider, groups: dict[str, PoolChanges], rollouts: RolloutPlan, record: RecordCallback):
        self.p = provider
        self.appliers = [PoolApplier(provider, groups[pool], rollouts.pool(pool), record) for pool in POOLS if pool in groups]

    def run(self) -> set[str]:
        try:
            for applier in self.appliers:
                if applier.endpoints is not None or applier.group.jobs:
                    applier._read_serving()
                for change in [c for c in applier.group.jobs if c.action == "update"]:
                    applier._do(change, self.p._update)
                removed = sorted((c for c in applier.group.jobs if c.action == "delete"), key=lambda c: -(_resource(c).replica or 0))
                if removed:
                    applier._remove(removed)
            starting = [(a, c) for a in self.appliers for c in a.group.jobs if c.action in ("replace", "create")]
            beside = any(a.rollout is not None and a.rollout.surge for a in self.appliers)
            if starting and not (self._beside(starting) if beside else self._replace(starting)):
                return self._settle()
            for applier in self.appliers:
                applier._finish()
        except Exception as exc:  # noqa: BLE001 - recorded against each pool's changes not yet recorded
            for applier in self.appliers:
                applier._fail_rest(exc)
        return set().union(*(a.unfinished for a in self.appliers)) if self.appliers else set()

    def _settle(self) -> set[str]:
        for applier in self.appliers:
            applier._stop_settled()
        return set().union(*(a.unfinished for a in self.appliers))

    def _replace(self, starting: list[tuple[PoolApplier, Change]]) -> bool:
        """Steps 2-4 of the module docstring; whether every new replica passed."""
        names = ", ".join(c.resource_id for _, c in starting if c.action == "replace")
        for applier, change in starting:
            applier.serving.pop(_resource(change).replica or 0, None)
        for applier in self.appliers:
            applier._write()
        self.appliers[-1]._wait_for_proxy(names or "the old replicas")
        kept: dict[str, bool] = {}
        for applier, change in starting:
            if change.action == "replace":
                assert change.current is not None
                kept[change.resource_id] = applier._keep_previous(change)
                self.p._cancel(change.resource_id, change.current.provider_id or "")
        submitted, healthy, failed = self._start(starting)
        if not failed:
            for applier, change in starting:
                live = healthy[change.resource_id]
                applier._serve(_resource(change).replica or 0, Entry(live.provider_id or "", applier._live_url(live)))
                applier._note(change, live, None)
            return True
        first = sorted(failed)[0]
        if not self.p.options.rollback:
            self._leave(starting, submitted, healthy, failed)
            return False
        for applier, change in starting:
            rid = change.resource_id
            exc = failed.get(rid) or ProviderError(
                f"was healthy but is rolled back with the rest of both pools, because {first}'s new job {_reason(failed[first])}"
            )
            if change.action == "create":
                self.p._cancel(rid, submitted[rid])
                applier._note(change, None, ProviderError(
                    f"{rid}: the new job {submitted[rid]} {_reason(exc)}; rolled back: it was cancelled, since prefill and decode "
                    "are replaced together; fix the change and run apply again"))
                continue
            applier._roll_back(change, submitted[rid], exc, kept.get(rid, False))
        return False

    def _start(self, starting: list[tuple[PoolApplier, Change]]) -> tuple[dict[str, str], dict[str, Resource], dict[str, Exception]]:
        """Submit every new replica of both pools, then wait for each: job ids, the healthy
        ones' live jobs, and why the others failed (judged for both pools at once)."""
        submitted = {c.resource_id: a._submit(c.desired) for a, c in starting}
        healthy: dict[str, Resource] = {}
        failed: dict[str, Exception] = {}
        for _, change in starting:
            try:
                healthy[change.resource_id] = self.p._wait_ready(change.desired, submitted[change.resource_id])
            except Exception as exc:  # noqa: BLE001 - every failure is reported with the pools' outcome
                failed[change.resource_id] = exc
        return submitted, healthy, failed

    def _beside(self, starting: list[tuple[PoolApplier, Change]]) -> bool:
        """With room for every new replica: they start beside the old ones; once all are
        healthy the proxy drops the old lists (acknowledged), then gets the new ones, and the
        old jobs are cancelled. A failure cancels the new jobs (rollback) or leaves them queued
        beside the old ones (``--no-rollback``); the old ones never stopped either way."""
        submitted, healthy, failed = self._start(starting)
        if failed:
            first = sorted(failed)[0]
            for applier, change in starting:
                rid = change.resource_id
                why = _reason(failed[rid]) if rid in failed else f"was healthy, but {first}'s new job {_reason(failed[first])}"
                if self.p.options.rollback:
                    self.p._cancel(rid, submitted[rid])
                    old = f"job {change.current.provider_id} (the previous version) kept serving" if change.current is not None else "the pool serves without it"
                    applier._note(change, change.current, ProviderError(
                        f"{rid}: the new job {submitted[rid]} {why}; rolled back: it was cancelled and {old}, since prefill and decode "
                        "are replaced together; fix the change and run apply again"))
                else:
                    applier._note(change, getattr(failed.get(rid), "live_after", None), ReplicaFailed(
                        f"{rid}: the new job {submitted[rid]} {why}; left as it is (--no-rollback): it stays beside the previous version, "
                        "which still serves; run plan to see both", None))
            return False
        for applier, change in starting:
            applier.serving.pop(_resource(change).replica or 0, None)
        for applier in self.appliers:
            applier._write()
        self.appliers[-1]._wait_for_proxy("the old replicas of both pools")
        for applier, change in starting:
            live = healthy[change.resource_id]
            applier._serve(_resource(change).replica or 0, Entry(live.provider_id or "", applier._live_url(live)))
            if change.current is not None:
                self.p._cancel(change.resource_id, change.current.provider_id or "")
            applier._note(change, live, None)
        return True  # run() writes both files with the new replicas (_finish), and waits for the proxy

    def _leave(self, starting: list[tuple[PoolApplier, Change]], submitted: dict[str, str], healthy: dict[str, Resource], failed: dict[str, Exception]) -> None:
        """``--no-rollback``: the healthy new replicas serve (all on the new layout), the
        failed ones stay as they are, out of the lists."""
        for applier, change in starting:
            rid = change.resource_id
            if rid in healthy:
                live = healthy[rid]
                applier._serve(_resource(change).replica or 0, Entry(live.provider_id or "", applier._live_url(live)))
                applier._note(change, live, None)
        for applier in self.appliers:
            applier._write()
        for applier, change in starting:
            rid = change.resource_id
            if rid in failed:
                exc = failed[rid]
                applier._note(change, getattr(exc, "live_after", None), ReplicaFailed(
                    f"{rid}: the new job {submitted[rid]} {_reason(exc)}; left as it is (--no-rollback): the replica is out of "
                    "the endpoint list; fix the change and run apply again", getattr(exc, "live_after", None)))
