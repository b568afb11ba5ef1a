"""``madinfra refresh``: record what the cluster runs into state, changing nothing on the cluster
(Terraform's ``apply -refresh-only``).

State explains plans: what madinfra last applied, how a run ended, which job or object is the
stack's. After work outside madinfra (an operator extended a time limit, a job was resubmitted by
hand, a state file was lost, a run finished while nobody looked) state and cluster disagree, and
every plan calls that drift. ``refresh`` shows what it would record, then records it:

- **adopt**: a live resource of the stack that state does not know (state lost, or applied from
  another directory): recorded as it runs;
- **record drift**: a resource changed outside madinfra: its live values become the recorded
  ones, so the next plan shows the difference to the stack file as an ordinary change;
- **record id**: the same resource now has another job id / uid (resubmitted or recreated);
- **record finished**: a run that ended by itself (a training job's exit), so it is not rerun;
- **forget**: a resource state knows but the cluster no longer has (deleted outside madinfra);
  a finished run that was removed after it ended (a Job's TTL) is kept, or the next plan would
  run it again.

Live resources that are not in the stack are left alone (the next plan deletes them) and named.
Pure: the command saves the state this returns.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from madinfra.planner.normalise import comparable_live, normalise, spec_hash
from madinfra.planner.plan import Plan, RulesFor
from madinfra.resources import Resource
from madinfra.state.store import ResourceRecord, State

@dataclass(frozen=True)
class StateUpdate:
    action: str
    resource_id: str
    detail: str = ""

    def line(self) -> str:
        symbol = {"adopt": "+", "forget": "-", "untracked": "!"}.get(self.action, "~")
        return f"{symbol} {self.resource_id}: {self.action}" + (f" ({self.detail})" if self.detail else "")

    def to_json(self) -> dict[str, str]:
        return {"action": self.action, "address": self.resource_id, "detail": self.detail}


def refresh_updates(plan: Plan, state: State, rules_for: RulesFor) -> tuple[list[StateUpdate], State]:
    """What refresh records (in the plan's order of resources) and the state after it."""
    updated = State.from_dict(state.to_dict())
    updates: list[StateUpdate] = []
    live = {r.id: r for r in plan.live}
    desired = {r.id: r for r in plan.desired}
    for rid, have in live.items():
        want = desired.get(rid)
        if want is None:
            updates.append(StateUpdate("untracked", rid, "not in the stack file; the next apply deletes it"))
            continue
        record = updated.resources.get(rid)
        rules = rules_for(want.kind)
        applied = record.spec if record is not None and not record.tainted else None
        seen = comparable_live(have.spec, want.spec, applied, rules)
        finished = have.status.get("finished")
        if record is None:
            updated.resources[rid] = _record(want, have, seen, rules_for, finished)
            updates.append(StateUpdate("adopt", rid, f"{have.provider_id}" if have.provider_id else ""))
            continue
        if record.provider_id != have.provider_id:
            updates.append(StateUpdate("record id", rid, f"{record.provider_id} -> {have.provider_id}"))
        if record.tainted or normalise(record.spec, rules) != seen:
            fields = _changed_fields(record.spec if not record.tainted else {}, seen, rules)
            updates.append(StateUpdate("record drift", rid, ", ".join(fields) if fields else "the last apply failed part-way"))
        if finished and record.finished != finished:
            how = have.status.get("state") if finished is True else finished
            updates.append(StateUpdate("record finished", rid, str(how or "ended")))
        updated.resources[rid] = _record(want, have, seen, rules_for, finished or record.finished)
    for rid, record in list(updated.resources.items()):
        if rid in live:
            continue
        if record.finished and rid in desired:
            continue  # ended and removed afterwards (a TTL): forgetting it would rerun the run
        del updated.resources[rid]
        updates.append(StateUpdate("forget", rid, "no longer on the cluster"))
    return updates, updated


def _record(want: Resource, have: Resource, seen: dict, rules_for: RulesFor, finished: str | None) -> ResourceRecord:
    """The live resource as state records it: the fields the planner compares (so the next plan
    compares the stack file with what runs), with the stack's identity (role, GPUs)."""
    spec = copy.deepcopy(seen)
    return ResourceRecord(
        kind=want.kind,
        name=want.name,
        spec=spec,
        spec_hash=spec_hash(spec, rules_for(want.kind)),
        provider_id=have.provider_id,
        depends_on=list(want.depends_on),
        gpus=have.gpus,
        workload=want.workload,
        role=want.role,
        finished=finished,
    )


def _changed_fields(recorded: dict, seen: dict, rules) -> list[str]:
    from madinfra.planner.diff import diff_specs, format_path

    return [format_path(d.path) for d in diff_specs(normalise(recorded, rules), seen)]
