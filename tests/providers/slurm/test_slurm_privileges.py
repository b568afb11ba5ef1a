"""Plans that hold for a user who is not a Slurm operator (no cluster: scripted remote).

Slurm lets only an operator (root, SlurmUser, AdminLevel Operator/Administrator) raise a running
job's time limit; the job's owner may lower it, and raise it while the job is pending. The live
read says who the SSH user is, in the same round trip as squeue, and the plan follows Slurm's
rule, so apply never meets "Access/permission denied" after a plan that promised ``~``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from madinfra.engine.pipeline import compute_plan
from madinfra.launchers import compile as compile_launch
from madinfra.resources import Resource
from madinfra_slurm import SlurmProvider, readout
from madinfra_slurm.provider import _raises_time
from slurm_fakes import apply_changes, ok, provider_with, row_text

ORDINARY = "@@madinfra user 1001 mluser\n@@madinfra config AccountingStorageType=accounting_storage/none\n@@madinfra config SlurmUser=slurm(64030)\n"
ROOT = "@@madinfra user 0 root\n@@madinfra config AccountingStorageType=accounting_storage/none\n@@madinfra config SlurmUser=slurm(64030)\n"


def stack(slurm_stack, time_limit: str):
    return slurm_stack(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": time_limit, "exclusive": False})


def job(spec) -> Resource:
    (resource,) = SlurmProvider().desired(spec, compile_launch(spec))
    return resource


def live_read(rows: str, identity: str) -> str:
    return rows + f"{readout.MARK} squeue-exit 0\n" + identity + f"{readout.MARK} dir /home/u/.madinfra/demo\n"


def planned(slurm_stack, before: str, after: str, identity: str, state: str = "RUNNING"):
    """The plan ``compute_plan`` makes (as ``madinfra plan`` does) for a job live with the time
    limit ``before`` when the stack asks for ``after``, read as ``identity``."""
    output = live_read(row_text(job(stack(slurm_stack, before)), "12", state), identity)
    provider, conn = provider_with(lambda command, _: ok(output) if command.startswith("squeue") else ok())
    result = compute_plan(stack(slurm_stack, after), provider, None)
    return result, provider, conn


# -- who am I ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "operator"),
    [
        (readout.Identity("root", 0, "slurm(64030)"), True),
        (readout.Identity("slurm", 64030, "slurm(64030)"), True),
        (readout.Identity("renamed", 64030, "slurm(64030)"), True),
        (readout.Identity("mluser", 1001, "slurm(64030)"), False),
        (readout.Identity("mluser", 1001, "root(0)", "None"), False),
        (readout.Identity("mluser", 1001, "root(0)", "Operator"), True),
        (readout.Identity("mluser", 1001, "root(0)", "Administrator"), True),
        (readout.Identity("mluser", None, None), False),
    ],
)
def test_operators_are_root_slurm_user_and_admin_levels(identity: readout.Identity, operator: bool) -> None:
    assert identity.operator is operator


def test_the_identity_comes_in_the_same_round_trip_as_squeue() -> None:
    command = readout.read_command("demo")
    assert "id -un" in command and "scontrol show config" in command and "sacctmgr" in command
    text = "1\x1frow\n@@madinfra squeue-exit 0\n@@madinfra sinfo\n@@madinfra sinfo-exit 1\n" + ORDINARY + "@@madinfra admin-level Operator\n@@madinfra dir /h/d\n"
    live = readout.parse_read(text)
    assert live.squeue_text == "1\x1frow\n" and live.directory == "/h/d"
    assert live.identity == readout.Identity("mluser", 1001, "slurm(64030)", "Operator")
    assert readout.parse_read("1\x1frow\n@@madinfra squeue-exit 0\n").identity is None


def _fake_bin(tmp_path: Path, scontrol: str, sacctmgr: str) -> dict[str, str]:
    """``scontrol`` and ``sacctmgr`` stand-ins on PATH; ``sacctmgr`` records that it was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("scontrol", scontrol), ("sacctmgr", f"echo asked >> {tmp_path}/sacctmgr.log\n{sacctmgr}")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("storage", "asks_sacctmgr", "level"),
    [("accounting_storage/slurmdbd", True, "Operator"), ("accounting_storage/none", False, None)],
)
def test_the_identity_command_asks_sacctmgr_only_with_slurmdbd(tmp_path: Path, storage: str, asks_sacctmgr: bool, level: str | None) -> None:
    config = f"printf 'ClusterName             = c\\nSlurmUser               = slurm(64030)\\nAccountingStorageType   = {storage}\\n'"
    env = _fake_bin(tmp_path, config, "echo Operator")
    out = subprocess.run(["sh", "-c", readout.identity_command()], capture_output=True, text=True, env=env, timeout=30, check=True).stdout
    identity = readout.parse_read("@@madinfra squeue-exit 0\n" + out).identity
    assert identity is not None and identity.slurm_user == "slurm(64030)" and identity.admin_level == level
    assert identity.user == subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    assert (tmp_path / "sacctmgr.log").exists() is asks_sacctmgr


def test_a_failing_scontrol_leaves_only_the_user(tmp_path: Path) -> None:
    env = _fake_bin(tmp_path, "exit 1", "echo Operator")
    out = subprocess.run(["sh", "-c", readout.identity_command()], capture_output=True, text=True, env=env, timeout=30, check=True).stdout
    identity = readout.parse_read("@@madinfra squeue-exit 0\n" + out).identity
    assert identity is not None and identity.slurm_user is None and identity.admin_level is None
    assert not (tmp_path / "sacctmgr.log").exists()


# -- what the plan says --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "raised"),
    [
        ("10", "20", True), ("20", "10", False), ("10", "10", False), ("00:10:00", "1-00:00:00", True),
        ("10", "UNLIMITED", True), ("UNLIMITED", "10", False), ("UNLIMITED", "UNLIMITED", False), (None, "10", True),
    ],
)
def test_raising_a_time_limit(before: str | None, after: str, raised: bool) -> None:
    assert _raises_time(before, after) is raised


def test_an_ordinary_user_raising_a_running_jobs_time_limit_gets_a_replacement(slurm_stack) -> None:
    result, _, conn = planned(slurm_stack, "10", "20", ORDINARY)
    (change,) = result.changes
    assert change.action == "replace"
    assert [(f.path, f.before, f.after, f.forces_replace) for f in change.fields] == [("time", "00:10:00", "00:20:00", True)]
    assert any("only a Slurm operator can raise a running job's time limit" in r and "mluser" in r for r in change.reasons)
    assert [(r.resource_id, r.action) for r in result.restarts] == [("slurm/Job/worker", "replace")]
    assert result.summary["replace"] == 1 and result.summary["change"] == 0
    assert len(conn.commands) == 1, "the identity is read in the same round trip as squeue"


@pytest.mark.parametrize(
    ("before", "after", "identity", "state"),
    [
        ("20", "10", ORDINARY, "RUNNING"),
        ("10", "20", ORDINARY, "PENDING"),
        ("10", "20", ROOT, "RUNNING"),
        ("10", "20", ORDINARY.replace("SlurmUser=slurm(64030)", "SlurmUser=mluser(1001)"), "RUNNING"),
    ],
    ids=["user-lowers-running", "user-raises-pending", "root-raises-running", "slurm-user-raises-running"],
)
def test_what_slurm_allows_stays_in_place(slurm_stack, before: str, after: str, identity: str, state: str) -> None:
    result, _, _ = planned(slurm_stack, before, after, identity, state)
    (change,) = result.changes
    assert change.action == "update" and not any(f.forces_replace for f in change.fields)
    assert result.restarts == []


def test_a_remote_that_does_not_say_who_it_is_keeps_the_rules(slurm_stack) -> None:
    result, provider, _ = planned(slurm_stack, "10", "20", "")
    assert [c.action for c in result.changes] == ["update"]
    assert provider.plan_warnings(result.changes) == []


def test_the_plans_hooks_do_not_change_a_planned_change(slurm_stack) -> None:
    """The replacement comes from the planner's not_in_place hook; the warnings and restart
    hooks only read the change (planning is pure)."""
    result, provider, _ = planned(slurm_stack, "10", "20", ORDINARY)
    (change,) = result.changes
    action, reasons, fields = change.action, list(change.reasons), list(change.fields)
    provider.plan_warnings(result.changes)
    provider.restarts_on_update(change)
    assert (change.action, change.reasons, change.fields) == (action, reasons, fields)


# -- what apply does -----------------------------------------------------------------------------


def test_apply_replaces_the_job_the_plan_said_it_would(slurm_stack) -> None:
    result, provider, conn = planned(slurm_stack, "10", "20", ORDINARY)
    want = result.changes[0].desired
    assert want is not None
    cancelled: list[str] = []

    def handler(command: str, idempotent: bool):
        if command.startswith("scancel"):
            cancelled.append(command)
            return ok()
        if command.startswith("squeue") and "--jobs=12" in command:
            return ok("")
        if "sbatch" in command:
            return ok("13\n")
        if command.startswith("squeue"):
            return ok(row_text(want, "13"))
        return ok()

    conn.handler = handler
    outcomes = apply_changes(provider, result.changes)
    assert [(action, job_id, error) for action, job_id, error in outcomes] == [("replace", "13", None)]
    assert cancelled == ["scancel 12"] and not any("scontrol update" in c for c in conn.commands)


def test_a_job_that_started_running_after_the_plan_is_not_raised_in_place(slurm_stack) -> None:
    result, provider, conn = planned(slurm_stack, "10", "20", ORDINARY, state="PENDING")
    (change,) = result.changes
    assert change.action == "update"
    old = job(stack(slurm_stack, "10"))
    conn.handler = lambda command, _: ok(row_text(old, "12", "RUNNING")) if command.startswith("squeue") else ok()
    ((action, _, error),) = apply_changes(provider, result.changes)
    assert action == "update" and error is not None
    assert "started running after the plan was made" in str(error) and "only a Slurm operator" in str(error) and "run plan again" in str(error)
    assert not any("scontrol update" in c for c in conn.commands)


def test_an_ordinary_user_lowers_a_running_jobs_limit_with_scontrol(slurm_stack) -> None:
    result, provider, conn = planned(slurm_stack, "20", "10", ORDINARY)
    want = job(stack(slurm_stack, "10"))
    old = job(stack(slurm_stack, "20"))
    updated: list[str] = []

    def handler(command: str, idempotent: bool):
        if command.startswith("scontrol update"):
            updated.append(command)
            return ok()
        if command.startswith("squeue"):
            return ok(row_text(want if updated else old, "12", "RUNNING"))
        return ok()

    conn.handler = handler
    ((action, job_id, error),) = apply_changes(provider, result.changes)
    assert (action, job_id, error) == ("update", "12", None)
    assert any("TimeLimit=00:10:00" in c for c in updated)
