"""A scripted stand-in for the SSH connection and helpers to drive ``SlurmProvider`` with it
(shared by the pure provider tests; no cluster involved)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from madinfra.resources import Change, ProviderOptions, Resource
from madinfra_slurm import SlurmProvider, squeue
from madinfra_slurm.connection import CommandResult


class FakeConnection:
    """Answers commands with a handler; records commands and uploaded files."""

    attempts = 3

    def __init__(self, handler: Callable[[str, bool], CommandResult]):
        self.handler = handler
        self.commands: list[str] = []
        self.files: dict[str, tuple[str, int]] = {}

    def run(self, command: str, *, what: str, timeout: float | None = None, idempotent: bool = True) -> CommandResult:
        self.commands.append(command)
        return self.handler(command, idempotent)

    def write_text(self, path: str, text: str, *, mode: int = 0o644, what: str) -> None:
        self.files[path] = (text, mode)

    def put_file(self, local: Path, remote: str, *, what: str) -> None:
        self.files[remote] = (Path(local).read_text(), 0o644)

    def close(self) -> None:
        self.commands.append("<close>")


def ok(stdout: str = "") -> CommandResult:
    return CommandResult("", stdout, "", 0)


def failed(stderr: str) -> CommandResult:
    return CommandResult("", "", stderr, 1)


def row_text(resource: Resource, job_id: str, state: str = "RUNNING") -> str:
    spec = resource.spec
    values = {
        "job_id": job_id, "name": spec["name"], "state": state, "time": spec["time"], "nodes": str(spec["nodes"]),
        "nodelist": "node1" if state == "RUNNING" else "", "partition": spec["partition"], "tres_per_node": f"gres:gpu:{spec['gpus_per_node']}",
        "reason": "None", "oversubscribe": "NO" if spec.get("exclusive") else "OK", "qos": "(null)", "account": "(null)", "constraint": "(null)", "req_nodes": "",
        "exc_nodes": "", "reservation": "(null)", "mem": "0", "workdir": "/home/u/.madinfra/demo", "elapsed": "1:05" if state == "RUNNING" else "0:00",
        "comment": spec["submit"]["comment"],
    }
    return squeue.SEPARATOR.join(values[name] for name, _ in squeue.FIELDS) + "\n"


def provider_with(handler, **kwargs) -> tuple[SlurmProvider, FakeConnection]:
    conn = FakeConnection(handler)
    ticks = iter(range(0, 10_000))
    provider = SlurmProvider(ProviderOptions(), connection=conn, sleep=lambda s: None, clock=lambda: float(next(ticks)), **kwargs)
    return provider, conn


def apply_changes(provider: SlurmProvider, changes: list[Change]) -> list[tuple[str, str | None, Exception | None]]:
    outcomes: list[tuple[str, str | None, Exception | None]] = []
    provider.apply(changes, lambda rid, message: None, lambda change, live, error: outcomes.append((change.action, live.provider_id if live else None, error)))
    return outcomes
