"""End to end on the SLURM sandbox as an ordinary user (``mluser``), through the real CLI.

The rest of the SLURM end-to-end tests log in as root, for whom Slurm allows everything; these
run the core of plan/apply/destroy as a user who is not a Slurm operator, and show that raising
a running job's time limit, which Slurm refuses that user, is planned (and applied) as a
replacement, while root still updates it in place. Needs ``scripts/slurm-sandbox up``.
"""

from __future__ import annotations

import pytest

from test_slurm_sandbox_e2e import only_job, sleeper

pytestmark = pytest.mark.slurm

REASON = "only a Slurm operator can raise a running job's time limit, and mluser is not one"


def test_an_ordinary_user_applies_lowers_and_destroys(new_user_sandbox_stack) -> None:
    stack = new_user_sandbox_stack()
    stack.write(sleeper(time_limit="5"))
    applied = stack.cli("apply", str(stack.path), "--yes")
    assert "Apply complete! Resources: 1 added" in applied.stdout
    assert "No changes" in stack.cli("plan", str(stack.path)).stdout
    job_id = only_job(stack)["id"]
    job = stack.sandbox.scontrol_job(job_id)
    assert job["UserId"].startswith("mluser(") and job["JobState"] == "RUNNING"

    stack.write(sleeper(time_limit="3"))
    planned = stack.cli("plan", str(stack.path))
    assert "~ slurm/Job/worker" in planned.stdout and "1 to change, 0 to replace" in planned.stdout, planned.stdout
    stack.cli("apply", str(stack.path), "--yes")
    assert only_job(stack)["id"] == job_id, "a user may lower a running job's limit in place"
    assert stack.sandbox.scontrol_job(job_id)["TimeLimit"] == "00:03:00"

    destroyed = stack.cli("destroy", str(stack.path), "--yes")
    assert "Destroy complete! Resources: 1 destroyed." in destroyed.stdout
    stack.wait_gone()
    assert stack.sandbox.ssh(f"test -e {stack.remote_dir()}").returncode == 1, "destroy leaves nothing in the user's home"


def test_raising_a_running_jobs_time_limit_replaces_it_only_for_an_ordinary_user(login_sandbox_stack) -> None:
    stack = login_sandbox_stack
    operator = stack.sandbox.user == "root"
    stack.write(sleeper(time_limit="5"))
    stack.cli("apply", str(stack.path), "--yes")
    before = only_job(stack)["id"]

    stack.write(sleeper(time_limit="9"))
    planned = stack.cli("plan", str(stack.path))
    assert 'time: "00:05:00" -> "00:09:00"' in planned.stdout
    if operator:
        assert "~ slurm/Job/worker" in planned.stdout and "1 to change, 0 to replace" in planned.stdout, planned.stdout
        assert REASON.split(",")[0] not in planned.stdout
    else:
        assert "-/+ slurm/Job/worker" in planned.stdout and "0 to change, 1 to replace" in planned.stdout, planned.stdout
        assert REASON in planned.stdout and "# forces replacement" in planned.stdout
        assert "Workloads that will restart: slurm/Job/worker (replaced)" in planned.stdout

    applied = stack.cli("apply", str(stack.path), "--yes")
    assert ("1 changed, 0 replaced" if operator else "0 changed, 1 replaced") in applied.stdout, applied.stdout
    after = only_job(stack)["id"]
    assert (after == before) is operator
    assert stack.sandbox.scontrol_job(after)["TimeLimit"] == "00:09:00"
    assert "No changes" in stack.cli("plan", str(stack.path)).stdout
