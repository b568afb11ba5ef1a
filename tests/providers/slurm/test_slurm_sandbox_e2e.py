"""End to end on the SLURM sandbox, through the real ``madinfra`` CLI over real SSH.

Needs ``scripts/slurm-sandbox up`` (skipped only when its target file is absent). Every test has
its own stack name and its jobs are cancelled in teardown whatever happens. Jobs that must stay
RUNNING replace the launcher's command with ``sleep``; limits are minutes, so nothing outlives a
crashed run for long.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from madinfra_slurm import logformat
from tests_support import ROOT

pytestmark = pytest.mark.slurm


def sleeper(nodes: int = 1, gpus: int = 0, time_limit: str = "5", **extra) -> dict:
    stack = {
        "slurm": {"partition": "debug", "nodes": nodes, "gpus_per_node": gpus, "time": time_limit, "exclusive": False, "ready_timeout": 60},
        "distributed": {"launcher": "torchrun", "nnodes": nodes, "nproc_per_node": 1},
        "roles": {"worker": {"command": "sleep 600"}},
    }
    stack.update(extra)
    return stack


def only_job(stack) -> dict:
    jobs = stack.jobs()
    assert len(jobs) == 1, f"expected one job of {stack.name}, found {jobs}"
    return jobs[0]


def test_plan_apply_and_a_second_empty_plan(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(sleeper())
    planned = stack.cli("plan", str(stack.path))
    assert "+ slurm/Job/worker" in planned.stdout and "Plan: 1 to add, 0 to change, 0 to replace, 0 to destroy." in planned.stdout
    assert not stack.jobs(), "plan must not submit anything"

    applied = stack.cli("apply", str(stack.path), "--yes")
    assert "Apply complete! Resources: 1 added" in applied.stdout

    again = stack.cli("plan", str(stack.path))
    assert "No changes" in again.stdout, again.stdout

    job = stack.sandbox.scontrol_job(only_job(stack)["id"])
    assert job["JobName"] == f"madinfra.{stack.name}.worker"
    assert job["JobState"] == "RUNNING"
    assert job["TimeLimit"] == "00:05:00" and job["NumNodes"] == "1" and job["Partition"] == "debug"
    assert job["Comment"].startswith(f"madinfra:stack={stack.name};resource=slurm/Job/worker;script=")
    assert stack.state_job_id("worker") == only_job(stack)["id"]


def test_a_new_time_limit_is_updated_in_place(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(sleeper(time_limit="5"))
    stack.cli("apply", str(stack.path), "--yes")
    before = only_job(stack)["id"]

    stack.write(sleeper(time_limit="9"))
    planned = stack.cli("plan", str(stack.path))
    assert "~ slurm/Job/worker" in planned.stdout and 'time: "00:05:00" -> "00:09:00"' in planned.stdout
    assert "1 to change" in planned.stdout and "forces replacement" not in planned.stdout
    stack.cli("apply", str(stack.path), "--yes")

    job = only_job(stack)
    assert job["id"] == before, "an in-place update must keep the job"
    assert stack.sandbox.scontrol_job(before)["TimeLimit"] == "00:09:00"
    assert "No changes" in stack.cli("plan", str(stack.path)).stdout


def test_more_nodes_or_gpus_replace_the_job(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(sleeper(nodes=1, gpus=0))
    stack.cli("apply", str(stack.path), "--yes")
    first = only_job(stack)["id"]

    stack.write(sleeper(nodes=2, gpus=0))
    planned = stack.cli("plan", str(stack.path))
    assert "-/+ slurm/Job/worker" in planned.stdout
    assert "nodes: 1 -> 2  # forces replacement" in planned.stdout
    stack.cli("apply", str(stack.path), "--yes")
    second = only_job(stack)
    assert second["id"] != first and second["nodes"] == "2" and second["state"] == "RUNNING"

    stack.write(sleeper(nodes=2, gpus=2))
    planned = stack.cli("plan", str(stack.path))
    assert "gpus_per_node: 0 -> 2  # forces replacement" in planned.stdout and "GPUs: 0 -> 4" in planned.stdout
    stack.cli("apply", str(stack.path), "--yes")
    third = only_job(stack)
    assert third["id"] not in (first, second["id"]) and third["tres"] in ("gres:gpu:2", "gres/gpu:2")


def test_a_job_cancelled_by_hand_is_planned_again_as_drift(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(sleeper())
    stack.cli("apply", str(stack.path), "--yes")
    stack.sandbox.check(f"scancel {only_job(stack)['id']}")
    stack.wait_gone()

    planned = stack.cli("plan", str(stack.path))
    assert "+ slurm/Job/worker" in planned.stdout and "deleted outside madinfra" in planned.stdout
    stack.cli("apply", str(stack.path), "--yes")
    assert only_job(stack)["state"] == "RUNNING"


def test_destroy_leaves_no_job_and_a_second_destroy_is_a_no_op(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(sleeper(nodes=2))
    stack.cli("apply", str(stack.path), "--yes")
    assert stack.jobs()

    destroyed = stack.cli("destroy", str(stack.path), "--yes")
    assert "Destroy complete! Resources: 1 destroyed." in destroyed.stdout
    assert stack.jobs() == [], "destroy waits until squeue no longer lists the job"

    again = stack.cli("destroy", str(stack.path), "--yes")
    assert again.returncode == 0 and "Resources: 0 destroyed." in again.stdout


def test_torchrun_all_reduce_across_two_nodes(sandbox_stack) -> None:
    pytest.importorskip("torch", reason="the distributed smoke test needs PyTorch (pip install torch==2.13.0)")
    stack = sandbox_stack
    (stack.workdir / "scripts").mkdir()
    shutil.copy(ROOT / "examples" / "scripts" / "allreduce.py", stack.workdir / "scripts" / "allreduce.py")
    stack.write(
        {
            "slurm": {"partition": "debug", "nodes": 2, "gpus_per_node": 0, "time": "5", "exclusive": False, "ready_timeout": 60},
            "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1, "backend": "gloo"},
            "model": {"scripts_dir": "scripts", "script": "allreduce.py"},
        }
    )
    stack.cli("apply", str(stack.path), "--yes")
    job_id = stack.state_job_id("worker")
    log = f"{stack.remote_dir()}/logs/madinfra.{stack.name}.worker_{job_id}.out"
    deadline = time.monotonic() + 150
    lines: list[str] = []
    tasks: list[int | None] = []
    while time.monotonic() < deadline:
        # Each line of the file is "<UTC time> <task>: <text>" (madinfra_slurm/logformat.py).
        raw = [line for line in logformat.Reader().feed(stack.sandbox.ssh(f"cat {log}").stdout.encode(), final=True) if line.text.startswith("allreduce ")]
        lines, tasks = [line.text for line in raw], [line.task for line in raw]
        if len(lines) == 2 or not stack.jobs():
            break
        time.sleep(2)
    errors = stack.sandbox.ssh(f"tail -n 30 {log.replace('.out', '.err')}").stdout
    assert len(lines) == 2, f"expected one line per rank in {log}, got {lines}; stderr:\n{errors}"
    by_rank = {line.split()[1]: line for line in lines}
    assert set(by_rank) == {"rank=0", "rank=1"}
    assert {f"rank={task}" for task in tasks} == set(by_rank), "srun labels each line with the task (node rank) that wrote it"
    for line in lines:
        assert "world=2" in line and "value=3 expected=3 OK" in line, line
    assert len({line.split()[3] for line in lines}) == 2, "the two ranks must run on two different nodes"


INJECTIONS = {
    "INJECT": "$(touch /tmp/pwned)",
    "BACKTICKS": "`touch /tmp/pwned`",
    "QUOTES": "it's \"double\" and 'single'",
    "NEWLINE": "one\ntwo; touch /tmp/pwned",
    "SEMICOLON": "a; touch /tmp/pwned; b",
}


def test_hostile_values_reach_the_job_unchanged_and_execute_nothing(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.sandbox.check("rm -f /tmp/pwned")
    Path("/tmp/pwned").unlink(missing_ok=True)
    dump = " && ".join(f'printf %s "${name}" > "$MADINFRA_WORKDIR/seen.{name}"' for name in INJECTIONS)
    stack.write(sleeper(env_vars=dict(INJECTIONS), roles={"worker": {"command": f"{dump}; sleep 600", "env": {"ROLE_VALUE": "$(id)"}}}))
    stack.cli("apply", str(stack.path), "--yes")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.sandbox.ssh(f"test -e {stack.remote_dir()}/seen.SEMICOLON").returncode != 0:
        time.sleep(0.5)
    for name, value in INJECTIONS.items():
        seen = stack.sandbox.check(f"cat {stack.remote_dir()}/seen.{name}")
        assert seen == value, f"{name}: job saw {seen!r}, stack said {value!r}"
    script = stack.sandbox.check(f"cat {stack.remote_dir()}/worker.sbatch")
    assert "export ROLE_VALUE='$(id)'" in script
    assert stack.sandbox.ssh("test -e /tmp/pwned").returncode != 0, "a stack value was executed on the cluster"
    assert not Path("/tmp/pwned").exists()


def test_sbatch_rejections_name_the_resource_and_keep_state_consistent(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(sleeper(slurm={"partition": "no-such-partition", "nodes": 1, "gpus_per_node": 0, "time": "5", "exclusive": False}))
    failed = stack.cli("apply", str(stack.path), "--yes", check=False)
    assert failed.returncode == 1
    assert "sbatch rejected slurm/Job/worker" in failed.stderr and "Invalid partition name specified" in failed.stderr
    assert "Traceback" not in failed.stderr

    # More GPUs per node than any node has: the plan already says so (sinfo), nothing is submitted.
    stack.write(sleeper(gpus=8))
    failed = stack.cli("apply", str(stack.path), "--yes", check=False)
    assert failed.returncode == 1
    assert "slurm/Job/worker can never start in partition 'debug'" in failed.stderr and "with 8 GPU(s) each" in failed.stderr
    assert stack.jobs() == []
    stack.write(sleeper())
    assert "1 to add" in stack.cli("plan", str(stack.path)).stdout, "neither failure left anything in state"


def write_target(stack, **changes) -> Path:
    target = {**stack.sandbox.target, **changes}
    path = stack.workdir / "target.json"
    path.write_text(json.dumps(target))
    return path


def test_connection_failures_are_one_clear_sentence(sandbox_stack, tmp_path: Path) -> None:
    stack = sandbox_stack
    stack.write(sleeper())
    closed = write_target(stack, port=1)
    failed = stack.cli("plan", str(stack.path), "--ssh-target", str(closed), check=False)
    assert failed.returncode == 1 and "Cannot reach the SLURM login node root@127.0.0.1:1: connection refused" in failed.stderr

    for kind, key in (("ed25519", ed25519_key()), ("rsa", rsa_key())):
        stranger = tmp_path / f"stranger_{kind}"
        stranger.write_bytes(key)
        stranger.chmod(0o600)
        wrong_key = write_target(stack, key_filename=str(stranger))
        started = time.monotonic()
        failed = stack.cli("plan", str(stack.path), "--ssh-target", str(wrong_key), check=False)
        assert failed.returncode == 1 and "SSH authentication to root@127.0.0.1:2222 failed" in failed.stderr, (kind, failed.stderr)
        assert "Traceback" not in failed.stderr and "times" not in failed.stderr, "authentication failures are not retried"
        assert time.monotonic() - started < 10


def ed25519_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())


def rsa_key() -> bytes:
    import io

    buffer = io.StringIO()
    paramiko.RSAKey.generate(2048).write_private_key(buffer)
    return buffer.getvalue().encode()


def test_host_keys_are_checked_unless_the_target_opts_out(sandbox_stack, tmp_path: Path) -> None:
    stack = sandbox_stack
    stack.write(sleeper())
    known = stack.sandbox.target.get("known_hosts")
    if not known or not Path(known).is_file():
        pytest.skip("the sandbox target names no known_hosts file")
    checked = write_target(stack, insecure_skip_host_key_check=False)
    assert stack.cli("plan", str(stack.path), "--ssh-target", str(checked)).returncode == 0

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unknown = write_target(stack, insecure_skip_host_key_check=False, known_hosts=str(empty))
    failed = stack.cli("plan", str(stack.path), "--ssh-target", str(unknown), check=False)
    if "not in known_hosts" not in failed.stderr and failed.returncode == 0:
        pytest.skip("~/.ssh/known_hosts already trusts the sandbox key")
    assert failed.returncode == 1 and "is not in known_hosts" in failed.stderr
    opted_out = stack.cli("plan", str(stack.path), "--ssh-target", str(unknown), "--insecure-skip-host-key-check")
    assert opted_out.returncode == 0
    # The hint's command works as printed: run it, and the checked plan goes through.
    hint = failed.stderr.split("add it (`", 1)[1].split("`)", 1)[0]
    assert hint == f"ssh-keyscan -p {stack.sandbox.target['port']} {stack.sandbox.target['host']} >> {empty}", hint
    subprocess.run(["bash", "-c", hint], check=True, capture_output=True, timeout=30)
    assert stack.cli("plan", str(stack.path), "--ssh-target", str(unknown)).returncode == 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_service_is_ready_only_once_its_http_health_check_passes(sandbox_stack) -> None:
    stack = sandbox_stack
    port = free_port()
    stack.write(
        {
            "slurm": {"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "5", "exclusive": False, "ready_timeout": 60},
            "distributed": {"launcher": "vllm", "nnodes": 1, "nproc_per_node": 1},
            "service": {"port": port, "health_check": {"http_path": "/ready.txt"}},
            # The stand-in server starts answering only after a few seconds, like a model loading.
            "roles": {"server": {"command": f'mkdir -p "$MADINFRA_WORKDIR/www" && cd "$MADINFRA_WORKDIR/www" && {{ (sleep 4; echo ok > ready.txt) & exec python3 -m http.server {port} --bind 127.0.0.1; }}'}},
        }
    )
    started = time.monotonic()
    applied = stack.cli("apply", str(stack.path), "--yes")
    assert time.monotonic() - started >= 4, "apply returned before the health check could pass"
    assert "job " in applied.stdout and "is running" in applied.stdout
    assert stack.sandbox.check(f"curl -fsS http://127.0.0.1:{port}/ready.txt") == "ok\n"
    outputs = stack.cli("output", str(stack.path), "endpoint").stdout.strip()
    assert outputs == f"http://127.0.0.1:{port}/v1"


def test_a_job_that_cannot_start_in_time_fails_apply_but_stays_recorded(new_sandbox_stack) -> None:
    blocker, waiting = new_sandbox_stack(), new_sandbox_stack()
    blocker.write(sleeper(nodes=3, slurm={"partition": "debug", "nodes": 3, "gpus_per_node": 0, "time": "5", "exclusive": True, "ready_timeout": 60}))
    blocker.cli("apply", str(blocker.path), "--yes")
    waiting.write(sleeper(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": "5", "exclusive": False, "ready_timeout": 3}))
    failed = waiting.cli("apply", str(waiting.path), "--yes", check=False)
    assert failed.returncode == 1
    assert "slurm/Job/worker: job" in failed.stderr and "timed out after 3 s waiting for it to start (state PENDING" in failed.stderr
    (job,) = waiting.jobs()
    assert job["state"] == "PENDING"
    assert waiting.state_job_id("worker") == job["id"], "the submitted job is in state although apply failed"
    assert "No changes" in waiting.cli("plan", str(waiting.path)).stdout

    # While it is pending, allocation fields change in place with scontrol update.
    waiting.write(sleeper(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": "5", "exclusive": False, "ready_timeout": 3, "exclude": "node3", "mem": "100M"}))
    planned = waiting.cli("plan", str(waiting.path)).stdout
    assert '+ exclude: "node3"' in planned and "1 to change" in planned and "forces replacement" not in planned, planned
    waiting.cli("apply", str(waiting.path), "--yes")
    record = waiting.sandbox.scontrol_job(job["id"])
    assert record["JobState"] == "PENDING" and record["ExcNodeList"] == "node3" and record["MinMemoryNode"] == "100M"
    assert "No changes" in waiting.cli("plan", str(waiting.path)).stdout


def test_an_ssh_config_alias_is_a_target_with_its_identity_and_known_hosts(sandbox_stack, tmp_path: Path) -> None:
    """``--ssh-target ALIAS`` resolves through ~/.ssh/config (HostName, Port, User, IdentityFile,
    UserKnownHostsFile with StrictHostKeyChecking yes), as ssh itself would."""
    stack = sandbox_stack
    stack.write(sleeper())
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text((stack.sandbox.dir / "ssh_config").read_text())
    env_home = {"HOME": str(home)}
    planned = stack.cli("plan", str(stack.path), "--ssh-target", "madinfra-sandbox", env=env_home)
    assert "1 to add" in planned.stdout

    (home / ".ssh" / "config").write_text(
        (stack.sandbox.dir / "ssh_config").read_text().replace(str(stack.sandbox.target.get("known_hosts", "")), str(home / "none"))
    )
    failed = stack.cli("plan", str(stack.path), "--ssh-target", "madinfra-sandbox", env=env_home, check=False)
    assert failed.returncode == 1 and "is not in known_hosts" in failed.stderr


def test_a_slurm_or_constraint_is_read_back_as_written(sandbox_stack) -> None:
    """`a|b` is legal Slurm (either feature): squeue's fields must not shift, so the job is
    not replaced on every apply."""
    stack = sandbox_stack
    stack.write(sleeper(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": "5", "exclusive": False, "ready_timeout": 60, "constraint": "sandbox|fakegpu"}))
    stack.cli("apply", str(stack.path), "--yes")
    job = only_job(stack)
    assert stack.sandbox.scontrol_job(job["id"])["Features"] == "sandbox|fakegpu"
    again = stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False)
    assert again.returncode == 0, again.stdout
