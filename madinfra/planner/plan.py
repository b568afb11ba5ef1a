"""The Plan and how it is computed: desired vs live, with state only to explain drift.

What to do is decided by desired vs live alone (live comes from the provider's batched read of
everything labelled with the stack), so a lost or stale state file can never make madinfra create
duplicates or forget orphans. State adds the explanation: a resource whose live spec differs from
what madinfra last applied was changed outside madinfra (drift); one in state but gone live was
deleted outside madinfra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from madinfra.errors import MadinfraError
from madinfra.planner.explain import UNKNOWN_BEFORE, text_at, text_differences
from madinfra.planner.diff import ABSENT, FieldDiff, diff_specs, flatten, format_path
from madinfra.planner.normalise import canonical_json, comparable_live, normalise, overlaps, sha256_label
from madinfra.planner.order import match_ids, order_changes, select
from madinfra.resources import Change, FieldChange, Resource, UpdateRules
from madinfra.planner import kv_compat
from madinfra.planner.cost import CostEstimate
from madinfra.rollout import PoolRollout

RulesFor = Callable[[str], UpdateRules]
RestartCheck = Callable[[Change], bool]
InPlaceCheck = Callable[[Resource, Resource, str, Any, Any], "str | None"]
"""``not_in_place(live, desired, path, before, after)``: a sentence when the target will not
change this field of this live resource in place although its rules say it may (Slurm lets only
an operator raise a running job's time limit), so the plan shows a replacement with that reason."""
FinishedCheck = Callable[[Resource, "AppliedRecord"], "str | None"]
"""``finished_and_gone(desired, applied)``: a sentence when a resource that is gone from the
cluster ended by itself (a finished training Job that Kubernetes removed after its TTL), so it
is not created again; None when it is gone for any other reason."""

SYMBOLS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}
DELETED_OUTSIDE = "deleted outside madinfra"
CHANGED_OUTSIDE = "changed outside madinfra"
PREVIOUS_FAILURE = "the previous apply of this resource failed"
REPLACE_REQUESTED = "replacement requested with --replace"


class AppliedRecord(Protocol):
    """What the planner needs from a state entry: the spec madinfra last applied, and whether that
    apply failed part-way (then live may legitimately differ, and it is not called drift)."""

    spec: dict[str, Any]
    tainted: bool
    finished: str | None
    error: str | None


@dataclass(frozen=True)
class Restart:
    resource_id: str
    action: str


@dataclass
class Plan:
    stack: str
    changes: list[Change]
    desired: list[Resource]
    live: list[Resource]
    gpus_before: int = 0
    gpus_after: int = 0
    gpus_peak: int | None = None
    """Most GPUs the stack holds during apply (surge replicas included); ``None``: no pool rolls."""
    gpus_free: int | None = None
    """GPUs free on the cluster now, from the same live read (``None``: not known)."""
    rollouts: list[PoolRollout] = field(default_factory=list)
    """What each serving pool goes through, replica by replica (``madinfra.rollout``)."""
    cost: CostEstimate | None = None
    """GPU-hours the plan commits and the progress it throws away (``planner.cost``)."""
    restarts: list[Restart] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    """Ids of desired resources that finished and are gone, so are not created again."""
    live_fingerprint: str = ""
    stack_fingerprint: str = ""
    stack_file: str | None = None
    target: str | None = None
    only: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    destroy: bool = False

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def summary(self) -> dict[str, int]:
        counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0}
        key = {"create": "add", "update": "change", "replace": "replace", "delete": "destroy"}
        for change in self.changes:
            counts[key[change.action]] += 1
        return counts

    @property
    def drift(self) -> list[Change]:
        return [c for c in self.changes if c.drift]


def is_running(resource: Resource | None) -> bool:
    """The live resource says it is running (SLURM job RUNNING, a pod phase, ...)."""
    if resource is None:
        return False
    state = resource.status.get("state")
    return (isinstance(state, str) and state.upper() == "RUNNING") or resource.status.get("running") is True


def live_fingerprint(live: Iterable[Resource], rules_for: RulesFor) -> str:
    """Identity of a live read: normalised specs, provider ids and running flags, order-free.

    Server-owned fields are left out on purpose, so a saved plan is not refused because a status
    counter moved; a job that started running is in, since it turns updates into replacements.
    """
    rows = sorted(
        (
            {
                "id": r.id,
                "provider_id": r.provider_id,
                "running": is_running(r),
                "spec": normalise(r.spec, rules_for(r.kind)),
            }
            for r in live
        ),
        key=lambda row: row["id"],
    )
    return sha256_label(canonical_json(rows))


def plan(
    desired: list[Resource],
    live: list[Resource],
    state: Mapping[str, AppliedRecord] | None,
    rules_for: RulesFor,
    *,
    stack: str = "",
    only: Iterable[str] = (),
    restarts_on_update: RestartCheck | None = None,
    stack_fingerprint: str = "",
    replace: Iterable[str] = (),
    finished_and_gone: FinishedCheck | None = None,
    not_in_place: InPlaceCheck | None = None,
) -> Plan:
    """Compute the ordered changes that turn ``live`` into ``desired`` (pure).

    ``restarts_on_update`` lets a provider say that an in-place update restarts a workload (a
    Deployment template change rolls its pods); replacements and deletes of workloads always do.
    ``replace`` forces a replacement of those resources even without a difference (Terraform's
    ``-replace``), e.g. to run a finished training job again.
    """
    state = state or {}
    desired_by_id = _unique(desired, "desired")
    live_by_id = _unique(live, "live")
    changes: list[Change] = []
    notes: list[str] = []
    finished: list[str] = []
    for rid, want in desired_by_id.items():
        rules = rules_for(want.kind)
        note = _finished_note(want, live_by_id.get(rid), state.get(rid), rules, finished_and_gone)
        if note is not None:
            notes.append(note)
            finished.append(rid)
            continue
        change = _change_for(want, live_by_id.get(rid), state.get(rid), rules, not_in_place)
        if change is not None:
            changes.append(change)
        elif state.get(rid) is not None and state[rid].tainted:
            notes.append(f"{rid}: the last apply failed ({state[rid].error or 'no reason recorded'}), but the cluster already has what the stack asks for, so there is nothing to change; fix the cause (it is outside the stack) or use --replace {want.role or want.name}")
    for rid, have in live_by_id.items():
        if rid not in desired_by_id:
            reason = "no longer in the stack" if rid in state else "not in the stack (found by its stack label)"
            changes.append(Change("delete", rid, None, have, reasons=[reason]))
    replace = tuple(replace)
    if replace:
        wanted = match_ids(replace, list(desired), "--replace")
        changes = _force_replacements(changes, wanted, desired_by_id, live_by_id)
        for rid in sorted(wanted & set(finished)):
            changes.append(Change("create", rid, desired_by_id[rid], None, reasons=[REPLACE_REQUESTED]))
            finished.remove(rid)
            notes = [n for n in notes if not n.startswith(rid + " ")]
    found = kv_compat.together(changes)
    only = tuple(only)
    if only:
        known = list(desired) + [r for r in live if r.id not in desired_by_id]
        keep = select(only, known)
        if found is not None:
            kv_compat.check_only(found, set(keep), only)
        changes = [c for c in changes if c.resource_id in keep]
    if found is not None and not any(c.resource_id in found.change_ids for c in changes):
        found = None
    changes = order_changes(changes)
    gpus_before = sum(r.gpus for r in live)
    gpus_after = gpus_before + sum(_gpu_delta(c) for c in changes)
    return Plan(
        stack=stack,
        changes=changes,
        desired=list(desired),
        live=list(live),
        gpus_before=gpus_before,
        gpus_after=gpus_after,
        restarts=_restarts(changes, restarts_on_update),
        warnings=[found.sentence()] if found is not None else [],
        notes=notes,
        finished=finished,
        live_fingerprint=live_fingerprint(live, rules_for),
        stack_fingerprint=stack_fingerprint,
        only=only,
        replace=replace,
    )


def _finished_note(want: Resource, have: Resource | None, applied: AppliedRecord | None, rules: UpdateRules, check: FinishedCheck | None) -> str | None:
    """The provider's sentence for an unchanged resource that ended by itself and is gone."""
    if check is None or have is not None or applied is None or applied.tainted:
        return None
    if canonical_json(normalise(applied.spec, rules)) != canonical_json(normalise(want.spec, rules)):
        return None
    return check(want, applied)


def _force_replacements(changes: list[Change], ids: set[str], desired: dict[str, Resource], live: dict[str, Resource]) -> list[Change]:
    """Turn the requested ids into replacements; one that does not exist yet is simply created."""
    by_id = {c.resource_id: c for c in changes}
    for rid in sorted(ids):
        have = live.get(rid)
        if have is None:
            continue
        change = by_id.get(rid)
        if change is None:
            change = Change("replace", rid, desired[rid], have)
            changes.append(change)
        change.action = "replace"
        change.reasons.append(REPLACE_REQUESTED)
    return changes


def _unique(resources: list[Resource], which: str) -> dict[str, Resource]:
    out: dict[str, Resource] = {}
    for resource in resources:
        if resource.id in out:
            raise MadinfraError(f"The provider returned two {which} resources with the id {resource.id}; resource ids must be unique within a stack")
        out[resource.id] = resource
    return out


def _change_for(
    want: Resource, have: Resource | None, applied: AppliedRecord | None, rules: UpdateRules, not_in_place: InPlaceCheck | None = None
) -> Change | None:
    tainted = applied is not None and applied.tainted
    if have is None:
        fields = [_field(d, False) for d in flatten(normalise(want.spec, rules))]
        if applied is not None and not tainted:
            return Change("create", want.id, want, None, fields=fields, reasons=[DELETED_OUTSIDE], drift=True)
        return Change("create", want.id, want, None, fields=fields, reasons=[PREVIOUS_FAILURE] if tainted else [])
    live_norm = comparable_live(have.spec, want.spec, applied.spec if applied is not None and not tainted else None, rules)
    diffs = diff_specs(live_norm, normalise(want.spec, rules))
    if not diffs:
        return None
    running = is_running(have)
    fields: list[FieldChange] = []
    reasons: list[str] = []
    for diff in diffs:
        forced = overlaps(diff.path, rules.force_replace)
        when_running = running and overlaps(diff.path, rules.replace_when_running)
        refused = None
        if not (forced or when_running) and not_in_place is not None:
            refused = not_in_place(have, want, format_path(diff.path), _plain(diff.before), _plain(diff.after))
        fields.append(_field(diff, forced or when_running or refused is not None, _details(diff, want, have, applied, rules)))
        if forced:
            reasons.append(f"{format_path(diff.path)} forces replacement")
        elif when_running:
            reasons.append(f"{format_path(diff.path)} forces replacement because the resource is running")
        elif refused is not None:
            reasons.append(refused)
    drift = False
    if tainted:
        reasons.insert(0, PREVIOUS_FAILURE)
    elif applied is not None and canonical_json(normalise(applied.spec, rules)) != canonical_json(live_norm):
        drift = True
        reasons.insert(0, CHANGED_OUTSIDE)
    action = "replace" if any(f.forces_replace for f in fields) else "update"
    return Change(action, want.id, want, have, fields=fields, reasons=reasons, drift=drift)


def _plain(value: Any) -> Any:
    return None if value is ABSENT else value


def _field(diff: FieldDiff, forces: bool, details: tuple[str, ...] = ()) -> FieldChange:
    before = None if diff.before is ABSENT else diff.before
    after = None if diff.after is ABSENT else diff.after
    return FieldChange(format_path(diff.path), before, after, forces, details)


def _details(diff: FieldDiff, want: Resource, have: Resource, applied: AppliedRecord | None, rules: UpdateRules) -> tuple[str, ...]:
    """The differing lines behind a changed digest field, from the text the state recorded.

    The recorded text is only the live one while the live digest is the one madinfra applied;
    otherwise (no state, or the resource was replaced outside madinfra) the plan says it cannot
    tell rather than showing differences against a text that is not running.
    """
    path = format_path(diff.path)
    for digest_field, text_path in rules.explained_by:
        if path != digest_field:
            continue
        new_text = text_at(want.spec, text_path)
        old_text = text_at(applied.spec, text_path) if applied is not None and not applied.tainted else None
        if new_text is None:
            return ()
        if old_text is None or applied is None or applied.spec.get(digest_field) != have.spec.get(digest_field):
            return (UNKNOWN_BEFORE,)
        ignore = tuple(str(v) for v in (have.spec.get(digest_field), want.spec.get(digest_field)) if v)
        return tuple(text_differences(old_text, new_text, _digest_spellings(ignore)))
    return ()


def _digest_spellings(digests: tuple[str, ...]) -> tuple[str, ...]:
    """A digest as the spec holds it (``sha256:<hex>``) and as a script comment may carry it."""
    out: list[str] = []
    for digest in digests:
        out.append(digest)
        if ":" in digest:
            out.append(digest.split(":", 1)[1])
    return tuple(out)


def _gpu_delta(change: Change) -> int:
    before = change.current.gpus if change.current is not None else 0
    after = change.desired.gpus if change.desired is not None else 0
    return after - before


def _restarts(changes: list[Change], restarts_on_update: RestartCheck | None) -> list[Restart]:
    out = []
    for change in changes:
        current = change.current
        if current is None or not (current.workload or (change.desired is not None and change.desired.workload)):
            continue
        if change.action in ("replace", "delete"):
            out.append(Restart(change.resource_id, change.action))
        elif change.action == "update" and restarts_on_update is not None and restarts_on_update(change):
            out.append(Restart(change.resource_id, change.action))
    return out
