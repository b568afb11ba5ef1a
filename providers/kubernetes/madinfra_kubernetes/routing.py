"""Who carries out each planned change, and which step Pulumi must take for it (pure).

madinfra plans from the cluster; Pulumi acts from its own state. For each change:

- create: Pulumi creates (server-side apply).
- update: Pulumi updates an object it knows; one it does not know (state lost, another machine,
  applied from another directory) it "creates", which with server-side apply adopts the live
  object in place. Either way the object is patched, never recreated.
- replace: the old object is deleted through the Kubernetes API first (foreground, waiting until
  it and its pods are gone: Pulumi's own delete-before-replace may return earlier, and the new
  object of the same name then collides with the old one). Pulumi then replaces what it knows
  (``replace=`` so it does even when its own diff sees nothing, as for ``--replace``; its delete
  finds nothing left) and creates what it does not know.
- delete: Pulumi deletes what it knows; everything else found by the stack's labels is deleted
  through the Kubernetes API, so ``destroy`` works with no Pulumi state at all.

The expected Pulumi action is checked against the steps Pulumi really announced (a preview
before anything changes, and the events of every ``up``): a difference stops the apply and
names the resource and both actions.
"""

from __future__ import annotations

from dataclasses import dataclass

from madinfra.resources import Change, Resource
from madinfra_kubernetes.pulumi_state import KnownObject

PULUMI = "pulumi"
API_DELETE = "api-delete"
API_DELETE_THEN_PULUMI = "api-delete-then-pulumi"


@dataclass(frozen=True)
class Route:
    """How one change is carried out: ``how`` (one of the constants) and Pulumi's expected action."""

    how: str
    pulumi_action: str | None

    @property
    def api_delete(self) -> bool:
        return self.how in (API_DELETE, API_DELETE_THEN_PULUMI)

    @property
    def uses_pulumi(self) -> bool:
        return self.pulumi_action is not None


def object_key(resource: Resource) -> str:
    """``<namespace>/<name>`` (or ``<name>``), the id Pulumi gives a Kubernetes object."""
    metadata = resource.spec.get("metadata") or {}
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))


def knows(change: Change, known: dict[str, KnownObject]) -> bool:
    """Pulumi's state holds this change's live object (same id, same namespace/name)."""
    entry = known.get(change.resource_id)
    return entry is not None and change.current is not None and entry.pulumi_id == object_key(change.current)


def route(change: Change, known: dict[str, KnownObject]) -> Route:
    if change.action == "create":
        return Route(PULUMI, "create")
    if change.action == "update":
        return Route(PULUMI, "update" if knows(change, known) else "create")
    if change.action == "replace":
        return Route(PULUMI, "replace") if knows(change, known) else Route(API_DELETE_THEN_PULUMI, "create")
    return Route(PULUMI, "delete") if knows(change, known) else Route(API_DELETE, None)


def routes(changes: list[Change], known: dict[str, KnownObject]) -> dict[str, Route]:
    return {change.resource_id: route(change, known) for change in changes}


def pulumi_must_diff(changes: list[Change], known: dict[str, KnownObject]) -> bool:
    """Whether Pulumi's step for some change depends on its own diff, so its state must be
    refreshed from the cluster and its steps previewed before anything changes: an update or
    replacement of an object it knows, or a create of an id it holds a stale entry for. A
    create of an object it does not know and a delete of one it does leave it no choice (the
    steps it takes are still checked after the up)."""
    for change in changes:
        if change.action in ("update", "replace") and knows(change, known):
            return True
        if change.action == "create" and change.resource_id in known:
            return True
    return False


def disagreements(changes: list[Change], known: dict[str, KnownObject], live: list[Resource]) -> list[str]:
    """Plan notes where Pulumi's state and the cluster disagree about this stack's objects."""
    notes = []
    live_keys = {r.id: object_key(r) for r in live}
    for change in changes:
        if change.action in ("update", "replace") and not knows(change, known):
            how = "adopts it in place" if change.action == "update" else "deletes it through the Kubernetes API, then creates the new one"
            notes.append(f"{change.resource_id} exists on the cluster but not in Pulumi's state (applied from another directory or machine, or the state was lost); apply {how}")
        elif change.action == "delete" and not knows(change, known):
            notes.append(f"{change.resource_id} is not in Pulumi's state; apply deletes it through the Kubernetes API")
    for rid, entry in sorted(known.items()):
        if live_keys.get(rid) != entry.pulumi_id:
            notes.append(f"Pulumi's state lists {rid} as {entry.pulumi_id}, which is not on the cluster; apply forgets it (refresh)")
    return notes
