"""``roles.<role>.ignore_changes`` on the SLURM sandbox, through the real CLI (issue 14, part 4):
an operator extends a running job's time limit; the stack leaves it to them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slurm


def training(command: str, *, time_limit: str = "10", ignore: list[str] | None = None, extra_env: str = "1") -> dict:
    return {
        "slurm": {"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": time_limit, "exclusive": False, "ready_timeout": 60},
        "distributed": {"launcher": "torchrun", "nnodes": 1, "nproc_per_node": 1},
        "roles": {"worker": {"command": command, **({"ignore_changes": ignore} if ignore else {})}},
    }


def test_an_operators_time_limit_is_kept_and_never_reset(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training("sleep 300", ignore=["time"]))
    stack.cli("apply", str(stack.path), "--yes")
    job_id = stack.state_job_id("worker")
    stack.sandbox.check(f"scontrol update JobId={job_id} TimeLimit=20")

    planned = stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False)
    assert planned.returncode == 0, planned.stdout
    assert f"Note: slurm/Job/worker time: the live value '00:20:00' is kept, not the stack's '00:10:00' (roles.worker.ignore_changes)" in planned.stdout

    # Another change of the same job goes through without touching the operator's limit.
    stack.write(training("sleep 300", time_limit="30", ignore=["time"]))
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False).returncode == 0
    stack.cli("apply", str(stack.path), "--yes")
    assert stack.sandbox.scontrol_job(job_id)["TimeLimit"] == "00:20:00"

    # Without ignore_changes the stack takes its limit back (state recorded the kept value as
    # what madinfra applied, so this is an ordinary change, not drift).
    stack.write(training("sleep 300", time_limit="10"))
    planned = stack.cli("plan", str(stack.path)).stdout
    assert "# slurm/Job/worker will be updated in-place" in planned and '~ time: "00:20:00" -> "00:10:00"' in planned

    stack.write(training("sleep 300", ignore=["tiem"]))
    wrong = stack.cli("plan", str(stack.path), check=False)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "roles.worker.ignore_changes: 'tiem' names no field of the worker resources (fields there:" in wrong.stderr
