"""Saved plans: ``plan --out FILE`` and ``apply FILE``.

A saved plan is the JSON plan plus a ``plan_file`` section holding the desired resources (secrets
only as digests) and the stack file's path. ``apply FILE`` re-reads the live resources and refuses
the plan when their fingerprint, or the stack file's, differs from what the plan was computed
from: what was reviewed is exactly what is applied, or nothing is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madinfra.errors import MadinfraError
from madinfra.planner.plan import Plan
from madinfra.render.json_plan import FORMAT_VERSION, dumps, plan_to_data, resource_from_data, resource_to_data
from madinfra.resources import Resource
from madinfra.secrets import Redactor

PLAN_FILE_KIND = "madinfra-saved-plan"


@dataclass
class SavedPlan:
    path: Path
    stack: str
    stack_file: Path
    target: str
    only: tuple[str, ...]
    destroy: bool
    desired: list[Resource]
    live_fingerprint: str
    stack_fingerprint: str
    actions: list[tuple[str, str]]
    replace: tuple[str, ...] = ()
    rollouts: tuple[tuple[str, ...], ...] = ()
    """Each pool's plan lines: apply refuses a saved plan whose pools would now roll otherwise
    (the free GPUs changed, so a surge is no longer possible or now is)."""


def save_plan(plan: Plan, path: Path, redactor: Redactor | None = None) -> None:
    """Write the plan file (readable by the owner only: it describes the whole deployment)."""
    redactor = redactor or Redactor()
    data = plan_to_data(plan, redactor)
    data["plan_file"] = {
        "kind": PLAN_FILE_KIND,
        "desired": redactor.data([resource_to_data(r) for r in plan.desired]),
    }
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(dumps(data) + "\n")


def read_plan_document(path: Path) -> dict[str, Any] | None:
    """The parsed document if ``path`` is a saved plan, ``None`` if it is something else
    (``apply`` accepts both a stack file and a saved plan)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("plan_file"), dict) and data["plan_file"].get("kind") == PLAN_FILE_KIND:
        return data
    return None


def load_plan_file(path: Path, data: dict[str, Any] | None = None) -> SavedPlan:
    data = data if data is not None else read_plan_document(path)
    if data is None:
        raise MadinfraError(f"{path} is not a saved madinfra plan; create one with `madinfra plan STACK_FILE --out {path}`")
    version = str(data.get("format_version", ""))
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise MadinfraError(f"The saved plan {path} has format version {version or 'none'}, which this madinfra cannot apply; create it again with `madinfra plan --out`")
    try:
        return SavedPlan(
            path=Path(path),
            stack=data["stack"],
            stack_file=Path(data["stack_file"]),
            target=data["target"],
            only=tuple(data.get("only") or ()),
            destroy=bool(data.get("destroy")),
            desired=[resource_from_data(r) for r in data["plan_file"]["desired"]],
            live_fingerprint=data["fingerprints"]["live"],
            stack_fingerprint=data["fingerprints"]["stack_file"],
            actions=[(c["action"], c["address"]) for c in data["changes"]],
            replace=tuple(data.get("replace") or ()),
            rollouts=tuple(tuple(pool.get("lines") or ()) for pool in data.get("rollouts") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MadinfraError(f"The saved plan {path} is incomplete ({exc.__class__.__name__}: {exc}); create it again with `madinfra plan --out`") from None


def check_stack_file(saved: SavedPlan, current_fingerprint: str | None) -> None:
    if current_fingerprint is None:
        raise MadinfraError(f"The saved plan {saved.path} was made from {saved.stack_file}, which no longer exists; run `madinfra plan --out` again")
    if current_fingerprint != saved.stack_fingerprint:
        raise MadinfraError(
            f"The saved plan {saved.path} is stale: the stack file {saved.stack_file} changed since it was made; run `madinfra plan {saved.stack_file} --out {saved.path}` again"
        )


def check_live(saved: SavedPlan, fresh: Plan) -> None:
    stale = fresh.live_fingerprint != saved.live_fingerprint or [(c.action, c.resource_id) for c in fresh.changes] != saved.actions
    if stale:
        raise MadinfraError(
            f"The saved plan {saved.path} is stale: the live resources of stack '{saved.stack}' changed since it was made; run `madinfra plan {saved.stack_file} --out {saved.path}` again"
        )
    fresh_pools = tuple(tuple(pool.lines()) for pool in fresh.rollouts)
    if fresh_pools != saved.rollouts:
        now = "; ".join(line for lines in fresh_pools for line in lines) or "no pool rolls"
        raise MadinfraError(
            f"The saved plan {saved.path} is stale: the cluster's free GPUs changed how the pools would roll (now: {now}); run `madinfra plan {saved.stack_file} --out {saved.path}` again"
        )
