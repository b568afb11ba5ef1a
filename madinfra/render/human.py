"""The plan as people read it: Terraform's layout, ``+ ~ -/+ -`` in colour on a terminal.

Every line goes through the redactor before it is styled, so a secret value can never reach the
terminal or a CI log even if a provider put it into a spec by mistake.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

from madinfra.planner.plan import CHANGED_OUTSIDE, DELETED_OUTSIDE, SYMBOLS, Plan
from madinfra.resources import Change, FieldChange
from madinfra.secrets import Redactor

STYLES = {"+": "green", "~": "yellow", "-/+": "magenta", "-": "red"}
NO_CHANGES = "No changes. Your infrastructure matches the configuration."
_HEADERS = {
    "create": "will be created",
    "update": "will be updated in-place",
    "replace": "will be replaced",
    "delete": "will be destroyed",
}
_RESTART_WORDS = {"replace": "replaced", "delete": "stopped", "update": "restarted by the update"}


def format_value(value: Any) -> str:
    """JSON spelling: strings quoted, mappings and lists compact on one line."""
    return json.dumps(value, sort_keys=True, default=str)


def plan_lines(plan: Plan, redactor: Redactor | None = None) -> list[Text]:
    """The whole human plan as styled lines (print each with a rich Console)."""
    redactor = redactor or Redactor()
    lines: list[Text] = []
    if not plan.changes:
        lines.append(Text(NO_CHANGES, style="bold green"))
        lines.extend(_warnings(plan, redactor))
        return lines
    what = "destroy every resource of" if plan.destroy else "perform the following actions on"
    lines.append(Text(f"madinfra will {what} stack '{plan.stack}':"))
    for change in plan.changes:
        lines.append(Text(""))
        lines.extend(change_lines(change, redactor))
    lines.append(Text(""))
    lines.extend(pool_lines(plan, redactor))
    lines.append(Text(summary_line(plan), style="bold"))
    lines.append(Text(gpu_line(plan)))
    if plan.cost is not None:
        lines.extend(Text(redactor.text(line)) for line in plan.cost.lines())
    if plan.restarts:
        restarts = ", ".join(f"{r.resource_id} ({_RESTART_WORDS.get(r.action, r.action)})" for r in plan.restarts)
        lines.append(Text(redactor.text(f"Workloads that will restart: {restarts}"), style="yellow"))
    lines.extend(_warnings(plan, redactor))
    return lines


def pool_lines(plan: Plan, redactor: Redactor) -> list[Text]:
    """``Pools:`` then one line per pool change, replica by replica (``madinfra.rollout``)."""
    if not plan.rollouts:
        return []
    lines = [Text("Pools:", style="bold")]
    for pool in plan.rollouts:
        for text in pool.lines():
            symbol = text.split(" ", 1)[0]
            line = Text("  ")
            line.append(symbol, style=STYLES.get(symbol, ""))
            line.append(redactor.text(text[len(symbol):]))
            lines.append(line)
    lines.append(Text(""))
    return lines


def gpu_line(plan: Plan) -> str:
    """``GPUs: 4 -> 8``, and while pools roll with surge: the peak during apply vs free now."""
    line = f"GPUs: {plan.gpus_before} -> {plan.gpus_after}"
    extra = []
    if plan.gpus_peak is not None:
        extra.append(f"peak {plan.gpus_peak} during apply")
    if plan.gpus_free is not None and plan.rollouts:
        extra.append(f"{plan.gpus_free} free now")
    return line + (f" ({'; '.join(extra)})" if extra else "")


def summary_line(plan: Plan) -> str:
    s = plan.summary
    return f"Plan: {s['add']} to add, {s['change']} to change, {s['replace']} to replace, {s['destroy']} to destroy."


def change_lines(change: Change, redactor: Redactor) -> list[Text]:
    symbol = SYMBOLS[change.action]
    style = STYLES[symbol]
    lines = [Text(redactor.text(f"  # {_header(change)}"), style="bold")]
    for reason in change.reasons:
        if reason not in (CHANGED_OUTSIDE, DELETED_OUTSIDE) and not reason.endswith(" forces replacement"):
            lines.append(Text(redactor.text(f"  # ({reason})"), style="dim"))
    if change.drift and change.action != "create":
        lines.append(Text("  # (drift: values shown as live -> desired)", style="dim"))
    head = Text(f"{symbol:>3} ", style=style)
    head.append(redactor.text(change.resource_id))
    lines.append(head)
    for fc in change.fields:
        lines.append(field_line(fc, change.action, redactor))
        lines.extend(Text(redactor.text(f"          {detail}"), style="dim") for detail in fc.details)
    return lines


def field_line(fc: FieldChange, action: str, redactor: Redactor) -> Text:
    """``~ spec.replicas: 2 -> 4`` (update), ``+ spec.x = 1`` (create), ``+``/``-`` for a field
    added or removed by an update; ``# forces replacement`` on the fields that force it."""
    if action == "create":
        symbol, body = "+", f"{fc.path} = {format_value(fc.after)}"
    elif fc.before is None:
        symbol, body = "+", f"{fc.path}: {format_value(fc.after)}"
    elif fc.after is None:
        symbol, body = "-", f"{fc.path}: {format_value(fc.before)}"
    else:
        symbol, body = "~", f"{fc.path}: {format_value(fc.before)} -> {format_value(fc.after)}"
    line = Text("      ")
    line.append(symbol, style=STYLES[symbol])
    line.append(" " + redactor.text(body))
    if fc.forces_replace:
        line.append("  # forces replacement", style="bold magenta")
    return line


def _header(change: Change) -> str:
    rid = change.resource_id
    if change.drift and change.action == "create":
        return f"{rid} was {DELETED_OUTSIDE} and {_HEADERS['create']}"
    if change.drift:
        return f"{rid} has {CHANGED_OUTSIDE} and {_HEADERS[change.action]}"
    return f"{rid} {_HEADERS[change.action]}"


def _warnings(plan: Plan, redactor: Redactor) -> list[Text]:
    notes = [Text(redactor.text(f"Note: {n}")) for n in plan.notes]
    return notes + [Text(redactor.text(f"Warning: {w}"), style="bold yellow") for w in plan.warnings]


def print_plan(plan: Plan, console: Console, redactor: Redactor | None = None) -> None:
    for line in plan_lines(plan, redactor):
        console.print(line, soft_wrap=True, highlight=False)


def plan_text(plan: Plan, redactor: Redactor | None = None) -> str:
    """Plain text of the plan (no colour), as a log or a test sees it."""
    return "\n".join(line.plain for line in plan_lines(plan, redactor))
