"""Fixtures for the SLURM provider tests: stack builders (pure) and the sandbox (integration).

The sandbox is the cluster ``scripts/slurm-sandbox up`` starts (partition ``debug``: node1..node3,
the default; ``pools``: node4..node6, for the tests that count every free GPU of a partition and
run beside the others; 4 fake GPUs per node, sshd on 127.0.0.1:2222). ``sandbox`` logs in as root, a Slurm
operator; ``user_sandbox`` as ``mluser`` (``target-user.json``, sshd on port 2223), an ordinary
user, since what Slurm refuses a user (raising a running job's time limit) root never meets.
Each skips a test only when its target file is absent; every ``sandbox_stack`` gets a unique name, and teardown cancels whatever
jobs of that stack are still queued and removes its remote directory, whatever the test did.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests_support import run_madinfra

from madinfra.config import resolve
from madinfra.config.schema import StackSpec

SANDBOX_DIR = Path(os.environ.get("MADINFRA_SANDBOX_DIR", "/tmp/madinfra-slurm-sandbox"))


def slurm_stack_dict(**overrides: Any) -> dict[str, Any]:
    """A small SLURM stack as a plain mapping; nested dicts in ``overrides`` replace sections."""
    base: dict[str, Any] = {
        "name": "demo",
        "slurm": {"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "10", "exclusive": False},
        "distributed": {"launcher": "torchrun", "nnodes": 1, "nproc_per_node": 1},
    }
    base.update(overrides)
    return base


@pytest.fixture
def slurm_stack():
    """Build a resolved StackSpec from ``slurm_stack_dict`` overrides."""

    def _build(**overrides: Any) -> StackSpec:
        return resolve(slurm_stack_dict(**overrides), source="test-stack")

    return _build


# -- sandbox -----------------------------------------------------------------------------------


@dataclass
class Sandbox:
    """The running sandbox: its target file and a way to run commands on its login node."""

    dir: Path
    target_file: Path
    target: dict[str, Any]
    host_alias: str = "madinfra-sandbox"
    """The ``ssh_config`` host that logs in as the target's user."""

    @property
    def user(self) -> str:
        return str(self.target["user"])

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.dir / "ssh_config"), self.host_alias, command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def check(self, command: str, timeout: float = 60) -> str:
        proc = self.ssh(command, timeout)
        assert proc.returncode == 0, f"{command!r} on the sandbox exited {proc.returncode}: {proc.stderr.strip()}"
        return proc.stdout

    def jobs(self, prefix: str) -> list[dict[str, str]]:
        """Active jobs whose name starts with ``prefix``: id, name, state, nodes, time limit."""
        out = self.check("squeue -h -a -o '%i|%j|%T|%N|%l|%D|%b'")
        rows = []
        for line in out.splitlines():
            job_id, name, state, nodes, limit, count, tres = line.split("|")
            if name.startswith(prefix):
                rows.append({"id": job_id, "name": name, "state": state, "nodelist": nodes, "time": limit, "nodes": count, "tres": tres})
        return rows

    def scontrol_job(self, job_id: str) -> dict[str, str]:
        out = self.check(f"scontrol show job -o {shlex.quote(job_id)}")
        record = {}
        for token in out.split():
            key, _, value = token.partition("=")
            record[key] = value
        return record


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    target_file = SANDBOX_DIR / "target.json"
    if not target_file.is_file():
        pytest.skip(f"SLURM sandbox is not up ({target_file} is missing): run `scripts/slurm-sandbox up` as root")
    return Sandbox(SANDBOX_DIR, target_file, json.loads(target_file.read_text()))


@pytest.fixture(scope="session")
def user_sandbox() -> Sandbox:
    """The sandbox as the unprivileged ``mluser`` (not root, not SlurmUser, no AdminLevel)."""
    target_file = SANDBOX_DIR / "target-user.json"
    if not target_file.is_file():
        pytest.skip(f"the SLURM sandbox has no unprivileged user ({target_file} is missing): run `scripts/slurm-sandbox up` as root")
    return Sandbox(SANDBOX_DIR, target_file, json.loads(target_file.read_text()), host_alias="madinfra-sandbox-user")


@dataclass
class SandboxStack:
    """One stack under test: writes its stack file and runs the real ``madinfra`` CLI on it."""

    sandbox: Sandbox
    name: str
    workdir: Path
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.workdir / "stack.yaml"

    @property
    def prefix(self) -> str:
        return f"madinfra.{self.name}."

    def write(self, spec: dict[str, Any]) -> Path:
        self.spec = {**spec, "name": self.name}
        self.path.write_text(yaml.safe_dump(self.spec, sort_keys=False))
        return self.path

    def cli(self, *args: str, check: bool | None = True, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``madinfra ARGS`` in the stack's directory (its state lives under ``.madinfra``)."""
        env = {**os.environ, "MADINFRA_SSH_TARGET": str(self.sandbox.target_file), "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
        return run_madinfra(args, self.workdir, env, timeout, check)

    def jobs(self) -> list[dict[str, str]]:
        return self.sandbox.jobs(self.prefix)

    def state_job_id(self, role: str) -> str | None:
        """The job id the state file records for a role (None when it records none)."""
        path = self.workdir / ".madinfra" / "state" / f"{self.name}.json"
        for record in json.loads(path.read_text())["resources"]:
            if record["kind"] == "slurm/Job" and record["name"] == role:
                return record["provider_id"]
        return None

    def remote_dir(self) -> str:
        return f"~/.madinfra/{self.name}"

    def wait_gone(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not self.jobs(), f"jobs of {self.name} still queued: {self.jobs()}"


@pytest.fixture
def new_sandbox_stack(sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Factory of stacks with unique names; all their jobs and remote files go in teardown."""
    yield from _stack_factory(sandbox, tmp_path, request)


@pytest.fixture
def new_user_sandbox_stack(user_sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``new_sandbox_stack`` as the unprivileged user: its jobs, its home directory."""
    yield from _stack_factory(user_sandbox, tmp_path, request)


@pytest.fixture(params=["root", "mluser"])
def login_sandbox_stack(request: pytest.FixtureRequest) -> SandboxStack:
    """One stack per login: root (a Slurm operator) and ``mluser`` (an ordinary user), for the
    behaviours that differ between them."""
    factory = request.getfixturevalue("new_sandbox_stack" if request.param == "root" else "new_user_sandbox_stack")
    return factory()


def _stack_factory(sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[SandboxStack] = []
    short = request.node.name.split("[")[0].removeprefix("test_")[:14].replace("_", "-").strip("-")

    def _new() -> SandboxStack:
        name = f"t{uuid.uuid4().hex[:6]}-{short}".rstrip("-")
        workdir = tmp_path / name
        workdir.mkdir()
        made.append(SandboxStack(sandbox, name, workdir))
        return made[-1]

    yield _new
    for stack in made:
        # as the stack's own user: its jobs and its home directory
        ids = [job["id"] for job in sandbox.jobs(stack.prefix)]
        if ids:
            sandbox.ssh("scancel " + " ".join(ids))
        sandbox.ssh(f"rm -rf ~/.madinfra/{shlex.quote(stack.name)}")


@pytest.fixture
def sandbox_stack(new_sandbox_stack) -> SandboxStack:
    return new_sandbox_stack()
