"""Dependency order of changes, and the ``--only`` selection (Terraform's ``-target``).

Creates, updates and replaces run dependencies first; deletes run in reverse (a resource goes
before the resources it depends on), and all deletes come first so capacity (GPUs, node
allocations) is freed before new workloads ask for it. Ties keep the provider's order, so plans are
stable from run to run.
"""

from __future__ import annotations

from typing import Iterable

from madinfra.errors import MadinfraError
from madinfra.resources import Change, Resource


def topological(ids: list[str], deps: dict[str, Iterable[str]]) -> list[str]:
    """``ids`` with every id after the ids it depends on (dependencies outside ``ids`` are ignored).

    Depth-first in the given order, so a resource follows its dependencies as closely as possible
    and independent resources keep the provider's order.
    """
    known = set(ids)
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(rid: str, path: list[str]) -> None:
        mark = state.get(rid)
        if mark == "done":
            return
        if mark == "visiting":
            cycle = " -> ".join(path[path.index(rid):] + [rid])
            raise MadinfraError(f"The resources depend on each other in a cycle ({cycle}); the provider must declare dependencies without cycles")
        state[rid] = "visiting"
        for dep in deps.get(rid, ()):
            if dep in known and dep != rid:
                visit(dep, path + [rid])
        state[rid] = "done"
        ordered.append(rid)

    for rid in ids:
        visit(rid, [])
    return ordered


def order_changes(changes: list[Change]) -> list[Change]:
    """Deletes (reverse dependency order) first, then everything else in dependency order."""
    deletes = [c for c in changes if c.action == "delete"]
    others = [c for c in changes if c.action != "delete"]
    by_id_others = {c.resource_id: c for c in others}
    forward = topological(list(by_id_others), {c.resource_id: _deps(c.desired) for c in others})
    by_id_deletes = {c.resource_id: c for c in deletes}
    reverse = reversed(topological(list(by_id_deletes), {c.resource_id: _deps(c.current) for c in deletes}))
    return [by_id_deletes[r] for r in reverse] + [by_id_others[r] for r in forward]


def _deps(resource: Resource | None) -> tuple[str, ...]:
    return resource.depends_on if resource is not None else ()


def match_ids(names: Iterable[str], resources: list[Resource], flag: str) -> set[str]:
    """The resource ids that ``names`` (ids, bare names, or a role: its workload) denote; an
    unknown one is an error."""
    chosen: set[str] = set()
    for item in (n for n in names if n):
        hits = [r.id for r in resources if r.id == item or r.name == item or (r.workload and r.role == item)]
        if not hits:
            valid = ", ".join(sorted({r.id for r in resources})) or "none"
            raise MadinfraError(f"{flag} {item} matches no resource of this stack; valid resource ids: {valid}")
        chosen.update(hits)
    return chosen


def select(only: Iterable[str], resources: list[Resource]) -> set[str]:
    """The ids ``--only`` names (by id or by name) plus everything they depend on.

    An unknown name is an error listing the valid ids, so a typo never silently plans nothing.
    """
    by_id = {r.id: r for r in resources}
    chosen = match_ids(only, resources, "--only")
    closure: set[str] = set()
    stack = list(chosen)
    while stack:
        rid = stack.pop()
        if rid in closure:
            continue
        closure.add(rid)
        resource = by_id.get(rid)
        if resource is not None:
            stack.extend(d for d in resource.depends_on if d in by_id)
    return closure
