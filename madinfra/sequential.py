"""A reusable sequential apply loop for providers that change one resource at a time (SLURM).

It lives in the core, below the engine, because providers call it: a provider imports the core,
never the engine that drives it (the engine only reads ``ChangeSkipped`` from here).

Providers call :func:`apply_sequentially` from their ``apply`` with three small functions (create,
update, delete one resource) and get, for free, the semantics the engine promises the user:
dependency order with deletes reversed, replace as delete-then-create (or create-then-delete when
the provider asks), ``record`` called after every single change so state is written as soon as a
change is done, and on a failure the changes that do not depend on it still run while its
dependents are skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from madinfra.errors import MadinfraError, ProviderError
from madinfra.interrupt import stop_requested
from madinfra.planner.order import order_changes
from madinfra.resources import Change, ProgressCallback, RecordCallback, Resource

CreateFn = Callable[[Resource], "Resource | None"]
"""Create the desired resource; return it as read back live (with ``provider_id``) if known."""
UpdateFn = Callable[[Change], "Resource | None"]
"""Update ``change.current`` in place to ``change.desired``; return the live result if known."""
DeleteFn = Callable[[Resource], None]
"""Delete the live resource (and wait until it is gone, if the target can say)."""


class ChangeSkipped(MadinfraError):
    """A change that was not attempted because a change it depends on failed or was skipped."""


class NotStarted(ChangeSkipped):
    """A change not attempted because the user interrupted the apply (Ctrl-C) before it."""


INTERRUPTED_BEFORE = "was not started because the apply was interrupted (Ctrl-C)"


class ReplaceIncomplete(ProviderError):
    """Create-before-delete created the new resource but could not delete the old one; the new one
    is passed to ``record`` so state knows it exists."""

    def __init__(self, message: str, live_after: Resource | None):
        super().__init__(message)
        self.live_after = live_after


@dataclass
class SequentialResult:
    done: list[str] = field(default_factory=list)
    failed: dict[str, Exception] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def apply_sequentially(
    changes: list[Change],
    create: CreateFn,
    update: UpdateFn,
    delete: DeleteFn,
    progress: ProgressCallback,
    record: RecordCallback,
    *,
    create_before_delete: bool | Callable[[Change], bool] = False,
) -> SequentialResult:
    """Carry out ``changes`` one by one; never raises for a failed change (``record`` gets it).

    ``progress`` receives what is being started ("creating", ...); outcomes (done, failed, skipped)
    go to ``record`` only, which the engine also uses to display them.

    After a first Ctrl-C (:mod:`madinfra.interrupt`) the change in flight finishes and the rest
    are recorded as not started. ``KeyboardInterrupt`` (a second Ctrl-C) and other
    ``BaseException``s still propagate: every change finished before them has already been
    recorded, and the engine marks the one in flight.
    """
    result = SequentialResult()
    ordered = order_changes(list(changes))
    blocked: set[str] = set()
    dependents_of_delete = _delete_dependents(ordered)
    for change in ordered:
        rid = change.resource_id
        if stop_requested():
            result.skipped[rid] = INTERRUPTED_BEFORE
            record(change, None, NotStarted(f"{rid} {INTERRUPTED_BEFORE}"))
            continue
        blocker = _blocker(change, blocked, dependents_of_delete)
        if blocker is not None:
            reason = f"skipped because {blocker} did not complete"
            blocked.add(rid)
            result.skipped[rid] = reason
            record(change, None, ChangeSkipped(f"{rid} was {reason}"))
            continue
        live_after: Resource | None = None
        try:
            live_after = _run(change, create, update, delete, progress, _wants_cbd(create_before_delete, change))
        except Exception as exc:  # noqa: BLE001 - one failed change must not stop independent ones
            blocked.add(rid)
            result.failed[rid] = exc
            record(change, getattr(exc, "live_after", None), exc)
            continue
        result.done.append(rid)
        record(change, live_after, None)
    return result


def _run(
    change: Change,
    create: CreateFn,
    update: UpdateFn,
    delete: DeleteFn,
    progress: ProgressCallback,
    create_first: bool,
) -> Resource | None:
    rid = change.resource_id
    if change.action == "create":
        assert change.desired is not None
        progress(rid, "creating")
        live = create(change.desired)
        return live
    if change.action == "update":
        progress(rid, "updating in place")
        live = update(change)
        return live
    if change.action == "delete":
        assert change.current is not None
        progress(rid, "destroying")
        delete(change.current)
        return None
    assert change.desired is not None and change.current is not None
    if create_first:
        progress(rid, "replacing: creating the new one first")
        live = create(change.desired)
        progress(rid, "replacing: destroying the old one")
        try:
            delete(change.current)
        except Exception as exc:
            raise ReplaceIncomplete(f"the new {rid} was created but the old one could not be destroyed: {exc}", live) from exc
    else:
        progress(rid, "replacing: destroying the old one")
        delete(change.current)
        progress(rid, "replacing: creating the new one")
        live = create(change.desired)
    return live


def _wants_cbd(option: bool | Callable[[Change], bool], change: Change) -> bool:
    return option(change) if callable(option) else bool(option)


def _delete_dependents(ordered: list[Change]) -> dict[str, list[str]]:
    """For each deleted resource, the deleted resources that depend on it (and go first)."""
    deleted = {c.resource_id for c in ordered if c.action == "delete"}
    out: dict[str, list[str]] = {rid: [] for rid in deleted}
    for change in ordered:
        if change.action == "delete" and change.current is not None:
            for dep in change.current.depends_on:
                if dep in out:
                    out[dep].append(change.resource_id)
    return out


def _blocker(change: Change, blocked: set[str], dependents_of_delete: dict[str, list[str]]) -> str | None:
    if change.action == "delete":
        candidates = dependents_of_delete.get(change.resource_id, [])
    else:
        candidates = list(change.desired.depends_on) if change.desired is not None else []
    for rid in candidates:
        if rid in blocked:
            return rid
    return None
