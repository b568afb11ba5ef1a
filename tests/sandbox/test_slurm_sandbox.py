"""Checks that the SLURM sandbox started by `scripts/slurm-sandbox up` is usable over real SSH.

The sandbox's default partition `debug` is node1..node3 (4 fake GPUs each; a second partition
`pools`, node4..node6, is for tests that need a partition to themselves) on this
host, reached through sshd on 127.0.0.1:2222. These tests assume it is already up; they skip
only when its target file is missing. Everything goes through `ssh -F $DIR/ssh_config
madinfra-sandbox ...`, the same path madinfra's SLURM provider takes.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

SANDBOX_DIR = Path(os.environ.get("MADINFRA_SANDBOX_DIR", "/tmp/madinfra-slurm-sandbox"))
SSH_ALIAS = "madinfra-sandbox"
JOB_NAME = "madinfra-sandbox-selftest"


@pytest.fixture(scope="module")
def target() -> dict:
    path = SANDBOX_DIR / "target.json"
    if not path.is_file():
        pytest.skip(f"SLURM sandbox is not up ({path} missing): run `scripts/slurm-sandbox up` as root")
    return json.loads(path.read_text())


def ssh(command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run one shell command on the sandbox over SSH; fail the test if ssh itself fails."""
    proc = subprocess.run(
        ["ssh", "-F", str(SANDBOX_DIR / "ssh_config"), SSH_ALIAS, command],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"ssh {command!r} exited {proc.returncode}: {proc.stderr.strip()}"
    return proc


def job_field(job_id: str, field: str) -> str:
    out = ssh(f"scontrol show job -o {shlex.quote(job_id)}").stdout
    for token in out.split():
        key, _, value = token.partition("=")
        if key == field:
            return value
    raise AssertionError(f"no {field} in scontrol output for job {job_id}: {out!r}")


def wait_finished(job_id: str, timeout: float = 40) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = job_field(job_id, "JobState")
        if state not in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}:
            return state
        time.sleep(0.5)
    ssh(f"scancel {shlex.quote(job_id)}")
    raise AssertionError(f"job {job_id} still {state} after {timeout}s")


@pytest.fixture
def remote_dir(target):
    path = ssh("mktemp -d /tmp/madinfra-sandbox-test.XXXXXX").stdout.strip()
    assert path.startswith("/tmp/madinfra-sandbox-test.")
    yield path
    ssh(f"rm -rf {shlex.quote(path)}")


def test_target_json_describes_the_sandbox(target):
    assert target["host"] == "127.0.0.1"
    assert target["port"] == 2222
    assert target["user"] == "root"
    assert target["partition"] == "debug"
    assert target["nodes"] == 3
    assert target["gpus_per_node"] == 4
    assert target["insecure_skip_host_key_check"] is True
    assert Path(target["key_filename"]).is_absolute() and Path(target["key_filename"]).is_file()
    known_hosts = Path(target["known_hosts"]).read_text()
    assert known_hosts.startswith("[127.0.0.1]:2222 ssh-ed25519 ")


def test_direct_ssh_with_target_key_and_known_hosts(target):
    """The fields of target.json alone are enough to log in with strict host key checking."""
    proc = subprocess.run(
        [
            "ssh", "-p", str(target["port"]), "-i", target["key_filename"],
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={target['known_hosts']}",
            f"{target['user']}@{target['host']}", "sinfo -h -o %P",
        ],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["debug*", "pools"]


def test_sinfo_shows_three_nodes_with_four_gpus(target):
    out = ssh(f"sinfo -h -N -p {target['partition']} -o '%N|%t|%G|%c'").stdout
    rows = {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines() if line.strip()}
    assert sorted(rows) == ["node1", "node2", "node3"], out
    for node, (state, gres, cpus) in rows.items():
        assert state in {"idle", "mix", "alloc", "comp"}, f"{node} is {state}"
        assert gres.startswith("gpu:4"), f"{node} gres {gres!r}"
        assert int(cpus) >= 2


def test_two_node_job_runs_a_task_on_each_node(target, remote_dir):
    inner = 'echo "$SLURM_PROCID $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES"'
    wrap = f"srun bash -c {shlex.quote(inner)}"
    submit = (
        f"cd {shlex.quote(remote_dir)} && sbatch --parsable -J {JOB_NAME} -p {target['partition']}"
        f" -N2 --gres=gpu:1 -t 2 -o job.out --wrap {shlex.quote(wrap)}"
    )
    job_id = ssh(submit).stdout.strip().split(";")[0]
    assert job_id.isdigit(), job_id
    assert wait_finished(job_id) == "COMPLETED"
    assert job_field(job_id, "ExitCode") == "0:0"
    assert job_field(job_id, "NumNodes") == "2"

    lines = ssh(f"cat {shlex.quote(remote_dir)}/job.out").stdout.split("\n")
    tasks = sorted(line.split() for line in lines if line.strip())
    assert [t[0] for t in tasks] == ["0", "1"], lines
    nodes = {t[1] for t in tasks}
    assert len(nodes) == 2 and nodes <= {"node1", "node2", "node3"}, tasks
    assert all(t[2:] == ["0"] for t in tasks), f"one fake GPU per task expected: {tasks}"


def test_time_limit_update_and_cancel(target):
    job_id = ssh(
        f"sbatch --parsable --hold -J {JOB_NAME} -p {target['partition']} -t 5 -o /dev/null --wrap 'sleep 60'"
    ).stdout.strip().split(";")[0]
    try:
        assert job_field(job_id, "JobState") == "PENDING"
        ssh(f"scontrol update JobId={job_id} TimeLimit=12")
        assert ssh(f"squeue -h -j {job_id} -o %l").stdout.strip() == "12:00"
    finally:
        ssh(f"scancel {job_id}")
    deadline = time.monotonic() + 10
    while job_field(job_id, "JobState") != "CANCELLED":
        assert time.monotonic() < deadline, "scancel did not cancel the job"
        time.sleep(0.2)


def test_ray_for_the_ray_cluster_tests_runs_inside_a_job(target):
    """`up` installs Ray once (ray-path names its bin directory); a job step can import it."""
    ray_bin = (SANDBOX_DIR / "ray-path").read_text().strip()
    out = ssh(
        f"srun -N1 -n1 -t 1 {shlex.quote(ray_bin)}/python3 -c 'import ray; print(ray.__version__)'", timeout=90
    ).stdout
    assert out.strip() == "2.58.0"
