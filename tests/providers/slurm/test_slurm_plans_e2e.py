"""End to end on the SLURM sandbox: plans that hold for a user who is not a Slurm operator.

- A training job that crashes before apply has finished waiting fails apply with its exit code
  and stays recorded (the next plan shows it FAILED instead of creating it again); one that
  succeeds is a success.
- A job's end marker needs no controller: with a failing ``squeue`` on the job's PATH it is still
  complete, and the next plan is empty.
- A job that can never fit its partition fails plan (sinfo in the same live read) before anything
  is submitted.
- ``destroy`` removes the stack's directory on the login node, and a new apply works after it.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

import pytest

pytestmark = pytest.mark.slurm


def training(command: str, nodes: int = 1, gpus: int = 0, **slurm: Any) -> dict[str, Any]:
    return {
        "slurm": {"partition": "debug", "nodes": nodes, "gpus_per_node": gpus, "time": "5", "exclusive": False, "ready_timeout": 60, **slurm},
        "distributed": {"launcher": "torchrun", "nnodes": nodes, "nproc_per_node": 1},
        "roles": {"worker": {"command": command}},
    }


def wait_finished(stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while stack.jobs() and time.monotonic() < deadline:
        time.sleep(1)
    assert not stack.jobs(), f"jobs of {stack.name} still queued: {stack.jobs()}"


def test_a_training_job_that_crashes_at_once_fails_apply_and_stays_recorded(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training("exit 3"))
    failed = stack.cli("apply", str(stack.path), "--yes", check=False)
    assert failed.returncode == 1, failed.stdout
    assert "Apply complete" not in failed.stdout and "Traceback" not in failed.stderr
    job_id = stack.state_job_id("worker")
    assert job_id, "the job that ran is recorded in state"
    log = f"~/.madinfra/{stack.name}/logs/madinfra.{stack.name}.worker_{job_id}.err"
    assert f"slurm/Job/worker: job {job_id} failed with exit code 3; see {log} on the cluster" in failed.stderr, failed.stderr

    planned = stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False)
    assert planned.returncode == 0, f"a failed job is shown, not created again:\n{planned.stdout}"
    assert "+ slurm/Job/worker" not in planned.stdout and "exit code 3" in planned.stdout
    shown = json.loads(stack.cli("show", str(stack.path), "--json").stdout)
    (row,) = shown["resources"]
    assert row["live"]["provider_id"] == job_id and row["live"]["status"]["state"] == "FAILED (exit code 3)"


def test_a_training_job_that_succeeds_at_once_is_a_success(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training("true"))
    applied = stack.cli("apply", str(stack.path), "--yes")
    assert "Apply complete! Resources: 1 added" in applied.stdout
    job_id = stack.state_job_id("worker")
    wait_finished(stack)
    planned = stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False)
    assert planned.returncode == 0, planned.stdout
    shown = json.loads(stack.cli("show", str(stack.path), "--json").stdout)
    (row,) = shown["resources"]
    assert row["live"]["provider_id"] == job_id and row["live"]["status"]["state"] == "COMPLETED"


def test_the_end_marker_needs_no_squeue(sandbox_stack) -> None:
    """A controller blip at the job's end (here: a squeue that always fails, first on the job's
    PATH) must not make a completed run look unfinished and be submitted again."""
    stack = sandbox_stack
    fakebin = f"/tmp/{stack.name}-fakebin"
    stack.sandbox.check(
        f"mkdir -p {fakebin} && printf '#!/bin/sh\\necho called >> {fakebin}/calls\\necho \"squeue: error: Unable to contact slurm controller\" >&2\\nexit 1\\n'"
        f" > {fakebin}/squeue && chmod 755 {fakebin}/squeue"
    )
    try:
        path = f"{fakebin}:" + stack.sandbox.check("echo $PATH").strip()
        spec = training(f'test "$(command -v squeue)" = {fakebin}/squeue && sleep 2')
        spec["roles"]["worker"]["env"] = {"PATH": path}
        stack.write(spec)
        stack.cli("apply", str(stack.path), "--yes")
        job_id = stack.state_job_id("worker")
        wait_finished(stack)
        marker = stack.sandbox.check(f"cat ~/.madinfra/{shlex.quote(stack.name)}/status/worker.{job_id}")
        assert "exit=0" in marker and f"sbatch=--job-name=madinfra.{stack.name}.worker" in marker, marker
        planned = stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False)
        assert planned.returncode == 0, f"a completed job must not be submitted again:\n{planned.stdout}"
        assert "COMPLETED" in stack.cli("show", str(stack.path)).stdout
    finally:
        stack.sandbox.ssh(f"rm -rf {fakebin}")


@pytest.mark.parametrize(
    ("nodes", "gpus", "expected"),
    [
        (10000, 0, "it asks for 10000 node(s) and the partition has 3 node(s)"),
        (1, 8, "it asks for 1 node(s) with 8 GPU(s) each and the partition has 3 node(s), 0 of them with 8 or more GPUs (the most any node has is 4)"),
    ],
)
def test_a_job_that_can_never_fit_its_partition_fails_the_plan(sandbox_stack, nodes: int, gpus: int, expected: str) -> None:
    stack = sandbox_stack
    stack.write(training("sleep 60", nodes=nodes, gpus=gpus))
    for command in (("plan",), ("apply", "--yes")):
        failed = stack.cli(*command, str(stack.path), check=False)
        assert failed.returncode == 1, failed.stdout
        assert f"slurm/Job/worker can never start in partition 'debug': {expected}" in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
    assert stack.jobs() == [], "nothing was submitted"


def test_destroy_removes_the_stack_directory_and_a_new_apply_works(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training("sleep 600"))
    stack.cli("apply", str(stack.path), "--yes")
    remote = f"~/.madinfra/{shlex.quote(stack.name)}"
    assert stack.sandbox.ssh(f"test -f {remote}/worker.sbatch && test -d {remote}/logs").returncode == 0

    destroyed = stack.cli("destroy", str(stack.path), "--yes")
    assert "Destroy complete! Resources: 1 destroyed." in destroyed.stdout
    assert stack.jobs() == []
    assert stack.sandbox.ssh(f"test -e {remote}").returncode != 0, "destroy leaves no stack directory behind"

    stack.cli("apply", str(stack.path), "--yes")
    assert [job["state"] for job in stack.jobs()] == ["RUNNING"]
    assert "No changes" in stack.cli("plan", str(stack.path)).stdout
