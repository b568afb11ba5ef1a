"""The ``record`` callback the engine hands to ``provider.apply``: state after every change.

Writing state after each change (not once at the end) is what makes an interrupted apply safe: a
SIGKILL between two changes leaves a state file that names exactly the changes that finished, and
since the next plan is computed from live resources, it shows exactly what is left.
"""

from __future__ import annotations

import copy
import threading
from typing import Callable

from madinfra.sequential import ChangeSkipped
from madinfra.errors import MadinfraError
from madinfra.planner.normalise import canonical_json, comparable_live, normalise, spec_hash
from madinfra.planner.plan import Plan, RulesFor
from madinfra.resources import Change, Resource
from madinfra.state.store import ResourceRecord, State, StateStore

Outcome = Callable[[Change, "Exception | None"], None]


class StateRecorder:
    """Callable ``record(change, live_after, error)`` that updates and saves the state."""

    def __init__(self, store: StateStore, state: State, rules_for: RulesFor, on_outcome: Outcome | None = None):
        self.store = store
        self.state = state
        self.rules_for = rules_for
        self.on_outcome = on_outcome
        self.outcomes: dict[str, Exception | None] = {}
        self._lock = threading.Lock()  # providers may report from worker threads (Pulumi events)

    def sync(self, plan: Plan) -> None:
        """Bring state in line with what the live read proved before changing anything.

        Desired resources whose live spec already matches are recorded as applied (with the live
        provider id), and entries for resources that are neither live nor desired are dropped.
        """
        before = self.state.to_dict()
        live = {r.id: r for r in plan.live}
        desired_ids = {r.id for r in plan.desired}
        for want in plan.desired:
            have = live.get(want.id)
            rules = self.rules_for(want.kind)
            applied = self.state.resources.get(want.id)
            applied_spec = applied.spec if applied is not None and not applied.tainted else None
            if have is not None and canonical_json(comparable_live(have.spec, want.spec, applied_spec, rules)) == canonical_json(normalise(want.spec, rules)):
                finished = have.status.get("finished") or (applied.finished if applied is not None and applied.provider_id == have.provider_id else None)
                self.state.resources[want.id] = self._record_for(want, have.provider_id, finished)
        for rid in list(self.state.resources):
            if rid not in live and rid not in desired_ids:
                del self.state.resources[rid]
        if self.state.to_dict() != before:
            self.store.save(self.state)

    def __call__(self, change: Change, live_after: Resource | None, error: Exception | None) -> None:
        with self._lock:
            self._record(change, live_after, error)

    def _record(self, change: Change, live_after: Resource | None, error: Exception | None) -> None:
        self.outcomes[change.resource_id] = error
        if self.on_outcome is not None:
            self.on_outcome(change, error)
        if isinstance(error, ChangeSkipped):
            return
        rid = change.resource_id
        existing = self.state.resources.get(rid)
        if error is None:
            if change.action == "delete":
                self.state.resources.pop(rid, None)
            else:
                assert change.desired is not None
                provider_id = live_after.provider_id if live_after is not None else None
                if provider_id is None and change.action == "update" and change.current is not None:
                    provider_id = change.current.provider_id  # updated in place: same object
                finished = live_after.status.get("finished") if live_after is not None else None
                self.state.resources[rid] = self._record_for(change.desired, provider_id, finished)
        elif live_after is not None:
            record = self._record_for(live_after, live_after.provider_id)
            record.tainted, record.error = True, str(error)
            self.state.resources[rid] = record
        elif existing is not None:
            existing.tainted, existing.error = True, str(error)
        elif change.current is not None:
            record = self._record_for(change.current, change.current.provider_id)
            record.tainted, record.error = True, str(error)
            self.state.resources[rid] = record
        else:
            return
        try:
            self.store.save(self.state)
        except MadinfraError as exc:
            # The change happened but state does not say so: it counts as failed, and the error
            # stops the apply rather than let it change a cluster it cannot account for.
            self.outcomes[rid] = exc
            raise

    def _record_for(self, resource: Resource, provider_id: str | None, finished: str | None = None) -> ResourceRecord:
        return ResourceRecord(
            kind=resource.kind,
            name=resource.name,
            spec=copy.deepcopy(resource.spec),
            spec_hash=spec_hash(resource.spec, self.rules_for(resource.kind)),
            provider_id=provider_id,
            depends_on=list(resource.depends_on),
            gpus=resource.gpus,
            workload=resource.workload,
            role=resource.role,
            finished=finished,
        )
