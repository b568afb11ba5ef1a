"""``show``/``status``: what state says next to what the cluster says, and the outputs."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from madinfra.planner.normalise import canonical_json, comparable_live, normalise
from madinfra.planner.plan import RulesFor
from madinfra.resources import Resource
from madinfra.secrets import Redactor
from madinfra.state.store import State


def show_data(stack: str, state: State | None, live: list[Resource], rules_for: RulesFor, outputs: dict[str, str] | None) -> dict[str, Any]:
    """One row per resource known to state or the cluster, with how the two compare."""
    live_by_id = {r.id: r for r in live}
    recorded = state.resources if state is not None else {}
    rows = []
    for rid in sorted(set(recorded) | set(live_by_id)):
        record, have = recorded.get(rid), live_by_id.get(rid)
        rows.append(
            {
                "address": rid,
                "state": None if record is None else {"provider_id": record.provider_id, "spec_hash": record.spec_hash, "tainted": record.tainted},
                "live": None if have is None else {"provider_id": have.provider_id, "status": have.status, "gpus": have.gpus},
                "sync": _sync(record, have, rules_for),
            }
        )
    return {
        "stack": stack,
        "state": None if state is None else {"serial": state.serial, "lineage": state.lineage, "updated_at": state.updated_at},
        "resources": rows,
        "gpus": sum(r.gpus for r in live),
        "outputs": outputs if outputs is not None else (dict(state.outputs) if state is not None else {}),
    }


def _sync(record: Any, have: Resource | None, rules_for: RulesFor) -> str:
    if record is None:
        return "not in state"
    if have is None:
        return "missing on the cluster"
    if record.tainted:
        # madinfra's own unfinished change, not someone else's edit
        return "last apply interrupted" if (record.error or "").startswith("interrupted") else "last apply failed"
    rules = rules_for(have.kind)
    live = canonical_json(comparable_live(have.spec, record.spec, None, rules))
    return "in sync" if live == canonical_json(normalise(record.spec, rules)) else "changed outside madinfra"


def print_show(data: dict[str, Any], console: Console, redactor: Redactor | None = None) -> None:
    redactor = redactor or Redactor()
    data = redactor.data(data)
    st = data["state"]
    where = f"state serial {st['serial']}, lineage {st['lineage']}, updated {st['updated_at']}" if st else "no state file"
    console.print(f"Stack '{data['stack']}' ({where})", highlight=False, markup=False, soft_wrap=True)
    if not data["resources"]:
        console.print("No resources in state or on the cluster.", highlight=False)
    else:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("RESOURCE", "STATE", "CLUSTER", "STATUS", "SYNC"):
            table.add_column(column, overflow="fold")
        for row in data["resources"]:
            state_cell = "-" if row["state"] is None else (row["state"]["provider_id"] or "(no id)")
            live = row["live"]
            cluster_cell = "-" if live is None else (live["provider_id"] or "(no id)")
            status_cell = "-" if live is None else _status_text(live["status"])
            style = "green" if row["sync"] == "in sync" else "yellow"
            table.add_row(Text(row["address"]), Text(state_cell), Text(cluster_cell), Text(status_cell), Text(row["sync"], style=style))
        console.print(table)
    console.print(f"GPUs in use: {data['gpus']}", highlight=False)
    print_outputs(data["outputs"], console)


def _status_text(status: dict[str, Any]) -> str:
    if not status:
        return "-"
    if "state" in status:
        cluster = status.get("ray")
        if isinstance(cluster, dict):
            # A Ray head's job: its cluster's health is part of its status (the provider's words).
            return f"{status['state']}; Ray head {cluster.get('address')}: {cluster.get('health')}"
        return str(status["state"])
    return ", ".join(f"{k}={v}" for k, v in sorted(status.items()))


def print_outputs(outputs: dict[str, str], console: Console) -> None:
    if not outputs:
        return
    console.print("Outputs:", highlight=False)
    for key, value in sorted(outputs.items()):
        console.print(f"  {key} = {value}", highlight=False, markup=False, soft_wrap=True)
