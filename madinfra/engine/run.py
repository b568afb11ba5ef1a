"""Carry out a plan through the provider and account for every change.

The provider does the work (``provider.apply``); the engine owns ``record`` (state after every
change) and the bookkeeping: a change the provider never reported, or a provider that raised
part-way, counts as failed, so the command exits non-zero and the next plan shows what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from madinfra.engine.recorder import Outcome, StateRecorder
from madinfra.sequential import INTERRUPTED_BEFORE, ChangeSkipped, NotStarted
from madinfra.interrupt import stop_requested
from madinfra.planner.plan import Plan, RulesFor
from madinfra.resources import Change, ProgressCallback, Provider
from madinfra.state.store import State, StateStore

_VERB = {"create": "add", "update": "change", "replace": "replace", "delete": "destroy"}


@dataclass
class ApplyResult:
    plan: Plan
    done: list[Change] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    """The user pressed Ctrl-C: some changes were not started (``skipped``), or one was cut off."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    @property
    def counts(self) -> dict[str, int]:
        counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0}
        for change in self.done:
            counts[_VERB[change.action]] += 1
        return counts


def apply_plan(
    plan: Plan,
    provider: Provider,
    store: StateStore,
    state: State,
    rules_for: RulesFor,
    progress: ProgressCallback,
    on_outcome: Outcome | None = None,
) -> ApplyResult:
    """Sync state with the live read, then let the provider apply the plan's changes."""
    recorder = StateRecorder(store, state, rules_for, on_outcome)
    recorder.sync(plan)
    result = ApplyResult(plan)
    if not plan.changes:
        return result
    provider_error: Exception | None = None
    started: dict[str, str] = {}

    def tracked(rid: str, message: str) -> None:
        started[rid] = message
        progress(rid, message)

    try:
        provider.apply(list(plan.changes), tracked, recorder)
    except KeyboardInterrupt:
        result.interrupted = True
        _record_interrupted(plan.changes, started, recorder)
    except Exception as exc:  # noqa: BLE001 - report it against the changes it left undone
        provider_error = exc
    if stop_requested() and not result.interrupted:
        # A provider that stopped between its own steps after a first Ctrl-C (Kubernetes) leaves
        # the rest unreported: those are not started, not failed.
        result.interrupted = True
        _record_interrupted(plan.changes, started, recorder)
    for change in plan.changes:
        rid = change.resource_id
        if rid not in recorder.outcomes:
            reason = f"not done: {provider_error}" if provider_error is not None else "the provider reported no result for it"
            result.failed[rid] = reason
            if on_outcome is not None:
                on_outcome(change, RuntimeError(reason))
            continue
        error = recorder.outcomes[rid]
        if error is None:
            result.done.append(change)
        elif isinstance(error, ChangeSkipped):
            result.skipped[rid] = str(error)
        else:
            result.failed[rid] = str(error) or error.__class__.__name__
    return result


def _record_interrupted(changes: list[Change], started: dict[str, str], recorder: StateRecorder) -> None:
    """After a hard Ctrl-C: the changes that had started but not finished are marked interrupted
    in state (so the next plan calls the difference madinfra's own unfinished change, not a
    change made outside madinfra); those never started are reported as not started."""
    for change in changes:
        rid = change.resource_id
        if rid in recorder.outcomes:
            continue
        if rid in started:
            recorder(change, None, RuntimeError(f"interrupted (Ctrl-C) while {started[rid]}; it may be half done"))
        else:
            recorder(change, None, NotStarted(f"{rid} {INTERRUPTED_BEFORE}"))
