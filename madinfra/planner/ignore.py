"""Fields the stack creates but does not fight over (Terraform's ``lifecycle.ignore_changes``).

Some values belong to someone else once a workload runs: an autoscaler (HPA, KEDA) sets a
Deployment's ``spec.replicas``, an operator extends a SLURM job's ``time``. A stack lists them
per role (``roles.<role>.ignore_changes``, dotted field paths of that role's resources as the
plan shows them). Where the live resource has a value there, the desired resource takes it
before the diff: the plan shows no change, apply sends the live value back (a no-op, so it never
resets it), and a note says whose value is kept. A resource that does not exist yet is created
with the stack's value. A path that names no field of the role's resources is an error naming the
fields there are, so a typo never silently ignores nothing. Pure.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Mapping

from madinfra.errors import ConfigError
from madinfra.resources import Resource

_MISSING = object()


def _get(spec: Mapping[str, Any], path: str) -> Any:
    node: Any = spec
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = spec
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = copy.deepcopy(value)


def _fields(spec: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in spec.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.append(path)
        if isinstance(value, Mapping) and path.count(".") < 2:
            out.extend(_fields(value, path))
    return out


def keep_live_values(desired: list[Resource], live: list[Resource], ignored: Mapping[str, list[str]], source: str) -> tuple[list[Resource], list[str]]:
    """``desired`` with the live value at every ignored path of its role, and one note per kept
    value that differs from the stack's. ``ignored`` maps a role to its paths."""
    if not ignored:
        return desired, []
    live_by_id = {r.id: r for r in live}
    out: list[Resource] = []
    notes: list[str] = []
    matched: dict[tuple[str, str], bool] = {(role, path): False for role, paths in ignored.items() for path in paths}
    for resource in desired:
        paths = ignored.get(resource.role or "", []) if resource.workload else []
        if not paths:
            out.append(resource)
            continue
        have = live_by_id.get(resource.id)
        spec = copy.deepcopy(resource.spec)
        gpus = resource.gpus
        for path in paths:
            wanted = _get(resource.spec, path)
            if wanted is _MISSING:
                continue
            matched[(resource.role or "", path)] = True
            current = _get(have.spec, path) if have is not None else _MISSING
            if current is _MISSING:
                continue
            _set(spec, path, current)
            if path.split(".")[-1] == "replicas" and isinstance(wanted, int) and isinstance(current, int) and wanted > 0:
                gpus = resource.gpus * current // wanted  # a workload's GPUs are its replicas' GPUs
            if current != wanted:
                notes.append(f"{resource.id} {path}: the live value {current!r} is kept, not the stack's {wanted!r} (roles.{resource.role}.ignore_changes)")
        out.append(replace(resource, spec=spec, gpus=gpus))
    problems = []
    for (role, path), found in matched.items():
        if found:
            continue
        examples = sorted({f for r in desired if r.role == role and r.workload for f in _fields(r.spec) if not f.startswith("submit")})
        where = f"fields there: {', '.join(examples[:12])}" if examples else f"role '{role}' has no workload in this stack"
        problems.append((f"roles.{role}.ignore_changes", f"'{path}' names no field of the {role} resources ({where}); use a path as the plan shows it"))
    if problems:
        raise ConfigError(source, problems)
    return out, notes
