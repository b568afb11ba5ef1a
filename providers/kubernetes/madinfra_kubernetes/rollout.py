"""How an apply rolls a serving stack: in steps, with readiness in between, and what it risks.

Pulumi is told not to wait for workloads (``pulumi.com/skipAwait``), so one ``pulumi up`` of
three changed pools would restart them all at once. ``steps`` cuts the ordered changes after
every change that restarts or resizes an existing workload; the provider runs one targeted
``up`` per step and waits for that workload's rollout before the next, so pools roll one at a
time and the proxy (which rolls after the pools, see ``ROLLOUT_ORDER``) goes last. Creating new
workloads needs no such care: they start together. A pool that only shrinks is the exception to
the dependency order: it goes last, after the proxy has stopped routing to the pods it removes.

An in-place update of a *pool* (prefill/decode StatefulSets, the multi-node vLLM Deployment)
is not left to its controller: pools.py rolls it replica by replica as the plan's RolloutPlan says
(pool_plan.py), with surge where the cluster has room, and rolls it back on failure.

``warnings`` says when an apply would leave a serving role with no ready replica for a while
(pool updates are covered by ``RolloutPlan.warnings``, which knows whether a surge fits), and
``restarts_pods`` which in-place updates restart pods (rolling update of the template).
All three are pure functions of planned changes.
"""

from __future__ import annotations

from typing import Any

from madinfra.planner.order import order_changes
from madinfra.resources import Change, Resource
from madinfra_kubernetes.rules import kind_of

ROLLING_KINDS = frozenset({"Deployment", "StatefulSet"})
TEMPLATE_PREFIX = "spec.template"
REPLICAS_FIELD = "spec.replicas"
GROUP_LAUNCHERS = frozenset({"sglang"})
"""Launchers whose pods together serve one model (multi-node SGLang): restarting any pod stops
the whole server, so a rolling update leaves no ready replica however many pods there are."""


def is_rolling(change: Change) -> bool:
    """A Deployment or StatefulSet (resource ids are ``k8s/<Kind>/<name>``)."""
    return change.resource_id.split("/")[1] in ROLLING_KINDS


def restarts_pods(change: Change) -> bool:
    """An in-place update that changes a Deployment's/StatefulSet's pod template rolls its pods."""
    return change.action == "update" and is_rolling(change) and any(f.path.startswith(TEMPLATE_PREFIX) for f in change.fields)


def replicas(resource: Resource | None) -> int:
    if resource is None:
        return 0
    value = (resource.spec.get("spec") or {}).get("replicas", 1)
    return int(value if value is not None else 1)


def shrinks_only(change: Change) -> bool:
    """Only ``spec.replicas`` changes, downwards (pods go away, none restarts)."""
    return (
        change.action == "update"
        and is_rolling(change)
        and bool(change.fields)
        and all(f.path == REPLICAS_FIELD for f in change.fields)
        and replicas(change.desired) < replicas(change.current)
    )


def _waits(change: Change) -> bool:
    """Dependents must wait for this change's rollout: it restarts or resizes existing pods."""
    return change.action in ("update", "replace") and is_rolling(change)


def steps(changes: list[Change]) -> list[list[Change]]:
    """The changes as consecutive steps; each step's workloads are rolled out before the next."""
    ordered = order_changes(list(changes))
    late = [c for c in ordered if shrinks_only(c)]
    late_ids = {c.resource_id for c in late}
    out: list[list[Change]] = []
    current: list[Change] = []
    for change in ordered:
        if change.resource_id in late_ids:
            continue
        current.append(change)
        if _waits(change):
            out.append(current)
            current = []
    if current:
        out.append(current)
    out.extend([c] for c in late)
    return out


def _strategy(resource: Resource) -> dict[str, Any]:
    return (resource.spec.get("spec") or {}).get("strategy") or {}


def _launcher(resource: Resource) -> str | None:
    template = ((resource.spec.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in template.get("containers") or []:
        for entry in container.get("env") or []:
            if entry.get("name") == "MAD_LAUNCHER_TYPE":
                return entry.get("value")
    return None


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """Kubernetes' IntOrString for maxSurge/maxUnavailable (percentages round as it does)."""
    if isinstance(value, str) and value.endswith("%"):
        share = total * int(value[:-1])
        return -(-share // 100) if round_up else share // 100
    return int(value)


def _rolling_leaves_none_ready(resource: Resource, pods: int) -> str | None:
    """Why a rolling update of ``pods`` running pods passes through zero ready pods, if it does."""
    if pods <= 0:
        return None
    if kind_of(resource.kind) == "StatefulSet":
        if pods == 1:
            return "restarts its only pod"
        if _launcher(resource) in GROUP_LAUNCHERS:
            return f"restarts its {pods} pods, which serve one model together"
        return None
    strategy = _strategy(resource)
    if strategy.get("type") == "Recreate":
        return f"stops all {pods} pod(s) before starting new ones (strategy Recreate)"
    rolling = strategy.get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), pods, round_up=True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), pods, round_up=False)
    if surge == 0 and unavailable >= pods:
        return "restarts its only pod" if pods == 1 else f"may stop all {pods} pods at once (maxUnavailable {unavailable}, no surge)"
    return None


def _role(change: Change) -> str:
    resource = change.desired or change.current
    return (resource.role if resource is not None else None) or change.resource_id.rsplit("/", 1)[-1]


def warning(change: Change, pools: tuple[str, ...] = ()) -> str | None:
    """The sentence for one change that leaves its role without a ready replica, else None.

    An in-place update of a pool (``pools``: roles rolled replica by replica, see pool_plan.py)
    is described by the plan's RolloutPlan instead, which knows whether a surge replica fits."""
    if not is_rolling(change) or change.current is None:
        return None
    rid, role = change.resource_id, _role(change)
    if change.action == "update" and role in pools:
        return None
    if change.action == "delete":
        return f"destroying {rid} leaves role '{role}' with no replica"
    if change.action == "replace":
        forcing = [f.path for f in change.fields if f.forces_replace]
        because = f" ({', '.join(forcing)} cannot change in place)" if forcing else ""
        return f"replacing {rid} deletes all its pods first{because}: role '{role}' has no ready replica until the new pods are ready"
    assert change.desired is not None
    if replicas(change.desired) == 0:
        return f"scaling {rid} to 0 replicas leaves role '{role}' with no replica"
    if restarts_pods(change):
        why = _rolling_leaves_none_ready(change.desired, min(replicas(change.current), replicas(change.desired)))
        if why is not None:
            return f"updating {rid} {why}: role '{role}' has no ready replica until it is ready again"
    return None


def warnings(changes: list[Change], pools: tuple[str, ...] = ()) -> list[str]:
    """One sentence per workload change that leaves a role without a ready replica.

    Destroying the whole stack (every change a delete) is what the user asked for: no warning.
    """
    if changes and all(c.action == "delete" for c in changes):
        return []
    return [text for text in (warning(c, pools) for c in order_changes(list(changes))) if text is not None]
