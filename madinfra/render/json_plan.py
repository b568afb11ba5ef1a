"""The plan as data (``plan --json``), schema documented in docs/plan-json.md.

``format_version`` follows the rule Terraform uses: the minor number grows when keys are added
(consumers must ignore unknown keys), the major number when a key changes meaning or goes away.
"""

from __future__ import annotations

import json
from typing import Any

from madinfra.planner.plan import SYMBOLS, Plan
from madinfra.resources import Change, FieldChange, Resource
from madinfra.secrets import Redactor

FORMAT_VERSION = "1.3"


def resource_to_data(resource: Resource) -> dict[str, Any]:
    return {
        "address": resource.id,
        "kind": resource.kind,
        "name": resource.name,
        "spec": resource.spec,
        "depends_on": list(resource.depends_on),
        "gpus": resource.gpus,
        "workload": resource.workload,
        "role": resource.role,
        "replica": resource.replica,
        "provider_id": resource.provider_id,
        "status": resource.status,
    }


def resource_from_data(data: dict[str, Any]) -> Resource:
    return Resource(
        kind=data["kind"],
        name=data["name"],
        spec=dict(data.get("spec") or {}),
        depends_on=tuple(data.get("depends_on") or ()),
        gpus=int(data.get("gpus") or 0),
        workload=bool(data.get("workload")),
        role=data.get("role"),
        replica=data.get("replica"),
        provider_id=data.get("provider_id"),
        status=dict(data.get("status") or {}),
    )


def field_to_data(change: FieldChange) -> dict[str, Any]:
    return {
        "path": change.path,
        "before": change.before,
        "after": change.after,
        "forces_replacement": change.forces_replace,
        "details": list(change.details),
    }


def change_to_data(change: Change) -> dict[str, Any]:
    resource = change.desired or change.current
    assert resource is not None
    return {
        "address": change.resource_id,
        "kind": resource.kind,
        "name": resource.name,
        "action": change.action,
        "symbol": SYMBOLS[change.action],
        "drift": change.drift,
        "reasons": list(change.reasons),
        "replace_paths": [f.path for f in change.fields if f.forces_replace],
        "fields": [field_to_data(f) for f in change.fields],
        "before": change.current.spec if change.current is not None else None,
        "after": change.desired.spec if change.desired is not None else None,
        "workload": resource.workload,
        "gpus": {
            "before": change.current.gpus if change.current is not None else 0,
            "after": change.desired.gpus if change.desired is not None else 0,
        },
        "provider_id": change.current.provider_id if change.current is not None else None,
    }


def plan_to_data(plan: Plan, redactor: Redactor | None = None) -> dict[str, Any]:
    """The plan as JSON-ready data, secret values masked."""
    data = {
        "format_version": FORMAT_VERSION,
        "stack": plan.stack,
        "target": plan.target,
        "stack_file": plan.stack_file,
        "destroy": plan.destroy,
        "only": list(plan.only),
        "replace": list(plan.replace),
        "has_changes": plan.has_changes,
        "summary": plan.summary,
        "gpus": {"before": plan.gpus_before, "after": plan.gpus_after, "peak": plan.gpus_peak, "free": plan.gpus_free},
        "rollouts": [pool.to_json() for pool in plan.rollouts],
        "cost": plan.cost.to_json() if plan.cost is not None else None,
        "changes": [change_to_data(c) for c in plan.changes],
        "restarts": [{"address": r.resource_id, "action": r.action} for r in plan.restarts],
        "drift": [c.resource_id for c in plan.changes if c.drift],
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        "fingerprints": {"live": plan.live_fingerprint, "stack_file": plan.stack_fingerprint},
    }
    return (redactor or Redactor()).data(data)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
