"""Glue between the provider and the pool modules: the plan hook's inputs, and one planned pool
change rolled as planned.

``rollout_plan`` reads the free GPUs (gpu_room.py) only when a pool changes and plans the pools
(pool_plan.py); ``rolled_pools`` picks the changes apply must roll replica by replica. For ``roll``
the provider hands over its Pulumi stack, the program (whose objects can be swapped for one
``up``), the event router and its checks; this module builds the ``PoolDriver`` callbacks, finds
the proxy that routes to the pool and what Pulumi recorded for both (what a rollback restores),
and records the change's outcome: done with the live object, or failed, including "rolled back"
with the live object as it runs now, so the next plan proposes the change again.
"""

from __future__ import annotations

from typing import Any, Callable

from madinfra.config.schema import StackSpec
from madinfra.errors import MadinfraError
from madinfra.naming import workload_name
from madinfra.resources import Change, ProgressCallback, Resource
from madinfra.rollout import PoolRollout, RolloutPlan
from madinfra_kubernetes import client as kube
from madinfra_kubernetes.live import clean, to_live_resource
from madinfra_kubernetes.objects import resource_id
from madinfra_kubernetes.pools import PoolDriver, Proxy
from madinfra_kubernetes.pulumi_state import recorded_inputs


def change_key(changes: list[Change]) -> frozenset[tuple[str, str]]:
    """What a cached RolloutPlan was made for: apply uses it only for the same changes."""
    return frozenset((c.resource_id, c.action) for c in changes)


def gpus_of(changes: list[Change]) -> tuple[int, int]:
    """GPUs before/after over the changes (the difference is what matters for surge room)."""
    return sum(c.current.gpus for c in changes if c.current is not None), sum(c.desired.gpus for c in changes if c.desired is not None)


def rollout_plan(
    spec: StackSpec | None, api: Callable[[], Any], changes: list[Change], gpus_before: int, gpus_after: int, list_nodes: Callable[[], Any] | None = None
) -> RolloutPlan:
    """The plan's pools; the cluster is asked for free GPUs only when some pool changes
    (``list_nodes``: the plan's one Nodes list, shared with the node-size check)."""
    from madinfra.config import pool_roles
    from madinfra_kubernetes.gpu_room import read_free
    from madinfra_kubernetes.pool_plan import plan_pools, pool_change

    if spec is None or spec.k8s is None or not pool_change(changes, pool_roles(spec)):
        return RolloutPlan()
    free = read_free(api(), spec.k8s.gpu_resource_name, spec.k8s.node_selector, list(spec.k8s.tolerations), list_nodes)
    return plan_pools(spec, changes, free.room_for if free else None, free.total if free else None, gpus_before, gpus_after)


def rolled_pools(changes: list[Change], plan: RolloutPlan) -> dict[str, PoolRollout]:
    """Resource id -> its pool's rollout, for the pool updates whose replicas roll one pool at
    a time (not ``together``: ``together_changes``)."""
    rolled = {p.pool: p for p in plan.pools if p.rolled and not p.together}
    return {c.resource_id: rolled[c.desired.role] for c in changes if c.action == "update" and c.desired is not None and c.desired.role in rolled}


def together_changes(changes: list[Change], plan: RolloutPlan) -> list[Change]:
    """The pool StatefulSet updates replaced together (a KV cache layout change), in plan order."""
    together = {p.pool for p in plan.pools if p.rolled and p.together}
    return [c for c in changes if c.action == "update" and c.desired is not None and c.desired.role in together and c.resource_id.split("/")[1] == "StatefulSet"]


def roll_together(provider: Any, stack: Any, program: Any, changes: list[Change], router: Any, progress: ProgressCallback, planned_up: Callable[[], None]) -> None:
    """Replace both pools in one step (``pool_together.py``); records every change, raises after
    recording a failure or rollback."""
    from madinfra_kubernetes.pool_together import replace_together

    spec = provider._bound("apply changes")
    assert spec.k8s is not None
    up = _targeted_up(provider, stack, program, progress, planned_up)
    timeout_field = "service.health_check.timeout" if spec.is_service else "k8s.ready_timeout"
    driver = PoolDriver(provider.api(), progress, up, provider._ready_timeout(spec), timeout_field, provider.options.rollback)
    recorded = {}
    for change in changes:
        metadata = change.desired.spec["metadata"]  # type: ignore[union-attr]
        namespace = metadata.get("namespace") or spec.k8s.namespace
        recorded[change.resource_id] = _recorded(provider, change.resource_id, "StatefulSet", namespace, metadata["name"]) or change.current.spec  # type: ignore[union-attr]
    failure: MadinfraError | None = None
    try:
        replace_together(driver, changes, recorded)
    except MadinfraError as exc:
        failure = exc
    for change in changes:
        metadata = change.desired.spec["metadata"]  # type: ignore[union-attr]
        router.finish(change.resource_id, _live(provider, "StatefulSet", metadata.get("namespace") or spec.k8s.namespace, metadata["name"]), failure)
    if failure is not None:
        raise failure


def _targeted_up(provider: Any, stack: Any, program: Any, progress: ProgressCallback, planned_up: Callable[[], None]) -> Callable[[dict[str, dict[str, Any]], bool], None]:
    """``PoolDriver.up``: the planned step, or a quiet targeted ``up`` of the overridden objects."""
    from madinfra_kubernetes import automation
    from madinfra_kubernetes.program import provider_urn, resource_urn

    spec = provider._bound("apply changes")

    def up(overrides: dict[str, dict[str, Any]], planned: bool) -> None:
        with program.overridden(overrides):
            if planned:
                planned_up()
                return
            quiet = automation.EventRouter([], progress, lambda *_: None, to_live_resource)
            automation.up(stack, [provider_urn(spec.name)] + [resource_urn(spec.name, r) for r in overrides], quiet)

    return up


def settle_proxy(provider: Any, rids: list[str], progress: ProgressCallback) -> None:
    """A rolled-out proxy's old pods still route while they terminate: wait until they are gone,
    so a pool shrinking next never loses a pod some proxy still names."""
    from madinfra_kubernetes.pools import wait_old_pods_gone

    spec = provider._bound("apply changes")
    assert spec.k8s is not None
    proxy = resource_id("Deployment", workload_name(spec.name, "proxy"))
    if proxy in rids:
        wait_old_pods_gone(provider.api(), spec.k8s.namespace, proxy.rsplit("/", 1)[-1], provider._ready_timeout(spec), progress, proxy)


def _recorded(provider: Any, rid: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """Pulumi's recorded manifest, else the live object as a manifest (Pulumi adopts it)."""
    spec = provider._bound("apply changes")
    found = recorded_inputs(provider.options.work_dir, spec.name, rid)
    if found is not None:
        return found
    live = kube.read_object(provider.api(), kind, namespace, name)
    return clean(live, kind) if live is not None else None


def find_proxy(provider: Any, namespace: str) -> Proxy | None:
    """The stack's disaggregated proxy Deployment, if it runs (as Pulumi recorded it)."""
    spec = provider._bound("apply changes")
    name = workload_name(spec.name, "proxy")
    rid = resource_id("Deployment", name)
    base = _recorded(provider, rid, "Deployment", namespace, name)
    if base is None or kube.read_object(provider.api(), "Deployment", namespace, name) is None:
        return None
    labels = ((base.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return Proxy(rid, namespace, name, base, ",".join(f"{k}={v}" for k, v in labels.items()))


def roll(
    provider: Any,
    stack: Any,
    program: Any,
    change: Change,
    plan: PoolRollout,
    router: Any,
    progress: ProgressCallback,
    planned_up: Callable[[], None],
) -> None:
    """Roll one pool change as ``plan`` says; raises after recording a failure or rollback."""
    spec = provider._bound("apply changes")
    assert change.desired is not None and spec.k8s is not None
    rid = change.resource_id
    kind = rid.split("/")[1]
    metadata = change.desired.spec["metadata"]
    namespace, name = metadata.get("namespace") or spec.k8s.namespace, metadata["name"]
    up = _targeted_up(provider, stack, program, progress, planned_up)

    timeout_field = "service.health_check.timeout" if spec.is_service else "k8s.ready_timeout"
    timeout = provider._ready_timeout(spec)
    driver = PoolDriver(provider.api(), progress, up, timeout, timeout_field, provider.options.rollback)
    recorded = _recorded(provider, rid, kind, namespace, name) or change.current.spec  # type: ignore[union-attr]
    try:
        if kind == "StatefulSet":
            driver.roll_statefulset(change, plan, recorded, find_proxy(provider, namespace))
        else:
            driver.roll_deployment(change, plan, recorded, lambda: _wait(provider, rid, progress, timeout, timeout_field))
    except MadinfraError as exc:  # RolledBack included: the error says so, the live object is the old one
        router.finish(rid, _live(provider, kind, namespace, name), exc)
        raise
    router.finish(rid, _live(provider, kind, namespace, name), None)


def _wait(provider: Any, rid: str, progress: ProgressCallback, timeout: float, timeout_field: str) -> None:
    provider.wait_ready([rid], progress, timeout, timeout_field=timeout_field)


def _live(provider: Any, kind: str, namespace: str, name: str) -> Resource | None:
    obj = kube.read_object(provider.api(), kind, namespace, name)
    return to_live_resource(obj, kind) if obj is not None else None
