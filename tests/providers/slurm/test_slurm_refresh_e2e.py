"""``madinfra refresh`` on the SLURM sandbox, through the real CLI over real SSH (issue 14, part 6):
what an operator did outside madinfra, a lost state file and a run that finished are recorded
into state, and the cluster is not touched."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytestmark = pytest.mark.slurm


def training(command: str, time_limit: str = "10") -> dict[str, Any]:
    return {
        "slurm": {"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": time_limit, "exclusive": False, "ready_timeout": 60},
        "distributed": {"launcher": "torchrun", "nnodes": 1, "nproc_per_node": 1},
        "roles": {"worker": {"command": command}},
    }


def state_records(stack) -> dict[str, dict[str, Any]]:
    path = stack.workdir / ".madinfra" / "state" / f"{stack.name}.json"
    return {f"{r['kind']}/{r['name']}": r for r in json.loads(path.read_text())["resources"]}


def test_refresh_records_an_operators_time_limit_and_a_lost_state_without_touching_the_job(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training("sleep 300"))
    stack.cli("apply", str(stack.path), "--yes")
    job_id = stack.state_job_id("worker")

    # An operator extends the running job's limit: plan calls it drift.
    stack.sandbox.check(f"scontrol update JobId={job_id} TimeLimit=15")
    planned = stack.cli("plan", str(stack.path)).stdout
    assert "slurm/Job/worker has changed outside madinfra and will be updated in-place" in planned

    shown = stack.cli("refresh", str(stack.path), "--yes").stdout
    assert "  ~ slurm/Job/worker: record drift (time)" in shown
    assert "Refresh complete! State: 1 recorded." in shown
    assert stack.sandbox.scontrol_job(job_id)["TimeLimit"] == "00:15:00", "refresh changes nothing on the cluster"
    assert state_records(stack)["slurm/Job/worker"]["spec"]["time"] == "00:15:00"
    planned = stack.cli("plan", str(stack.path)).stdout
    assert "slurm/Job/worker will be updated in-place" in planned and "changed outside" not in planned
    assert "~ time: \"00:15:00\" -> \"00:10:00\"" in planned

    # The stack file takes the operator's limit: nothing left to do; then the state is lost.
    stack.write(training("sleep 300", time_limit="15"))
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False).returncode == 0
    (stack.workdir / ".madinfra" / "state" / f"{stack.name}.json").unlink()
    data = json.loads(stack.cli("refresh", str(stack.path), "--json", "--yes").stdout)
    assert data["updates"] == [{"action": "adopt", "address": "slurm/Job/worker", "detail": job_id}]
    assert stack.state_job_id("worker") == job_id
    assert stack.cli("refresh", str(stack.path)).stdout.startswith("No changes. State matches the cluster.")


def test_refresh_records_a_run_that_finished_while_nobody_looked(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training("sleep 8"))
    stack.cli("apply", str(stack.path), "--yes")
    assert state_records(stack)["slurm/Job/worker"]["finished"] is None, "apply saw it running"
    deadline = time.monotonic() + 60
    while stack.jobs() and time.monotonic() < deadline:
        time.sleep(1)
    shown = stack.cli("refresh", str(stack.path), "--yes").stdout
    assert "  ~ slurm/Job/worker: record finished (COMPLETED" in shown, shown
    assert state_records(stack)["slurm/Job/worker"]["finished"], "state says the run ended"
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False).returncode == 0
