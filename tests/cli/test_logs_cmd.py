"""``madinfra logs`` through the real CLI (``madinfra.cli.main``) against the in-memory provider
registered as the ``slurm`` target: what the command checks before it asks the provider (role,
rank, --since, --tail, a provider without logs) and how it prints what comes back."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ENGINE_TESTS = Path(__file__).resolve().parent.parent / "engine"
sys.path.insert(0, str(ENGINE_TESTS))

import memory_provider  # noqa: E402

from madinfra.cli import main  # noqa: E402
from madinfra.cli.logs_cmd import check_rank  # noqa: E402
from madinfra.config import resolve  # noqa: E402
from madinfra.errors import MadinfraError  # noqa: E402
from madinfra.launchers import compile as compile_launch  # noqa: E402
from madinfra.logs import LogQuery  # noqa: E402
from madinfra.provider_registry import unregister  # noqa: E402
from madinfra.resources import Resource  # noqa: E402

SECRET = "s3cr3t-token-value"
STACK = """\
name: demo
slurm: {nodes: 2, partition: p1, gpus_per_node: 1}
distributed: {launcher: torchrun, nnodes: 2, nproc_per_node: 1}
secret_env:
  TOKEN: {from_env: DEMO_TOKEN}
"""
LINES = [
    ["worker", 0, 1000.0, "rank 0 step 1"],
    ["worker", 1, 1000.5, f"rank 1 step 1 token={SECRET}"],
    ["worker", 0, 1001.0, "rank 0 step 2"],
    ["worker", 1, 1001.5, "rank 1 step 2"],
]


class Cli:
    def __init__(self, root: Path, capsys, monkeypatch):
        self.root, self.capsys, self.monkeypatch = root, capsys, monkeypatch
        self.store = memory_provider.install(root / "store.json")
        self.store.set("logs", LINES)
        self.stack = root / "stack.yaml"
        self.stack.write_text(STACK)

    def run(self, *args: str) -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        try:
            main(["logs", str(self.stack), *args])
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
        out, err = self.capsys.readouterr()
        return code, out, err

    def asked(self) -> int:
        self.store.reload()
        return sum(1 for op, _ in self.store.data["calls"] if op == "logs")


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEMO_TOKEN", SECRET)
    yield Cli(tmp_path, capsys, monkeypatch)
    unregister("slurm")


def test_every_line_is_prefixed_with_role_and_rank_in_time_order_and_secrets_are_masked(cli):
    code, out, err = cli.run()
    assert code == 0, err
    assert out.splitlines() == [
        "worker[0] | rank 0 step 1",
        "worker[1] | rank 1 step 1 token=(sensitive value)",
        "worker[0] | rank 0 step 2",
        "worker[1] | rank 1 step 2",
    ]


def test_rank_tail_since_and_timestamps_reach_the_provider(cli):
    assert cli.run("worker", "--rank", "1")[1].splitlines() == ["worker[1] | rank 1 step 1 token=(sensitive value)", "worker[1] | rank 1 step 2"]
    assert cli.run("--tail", "1")[1].splitlines() == ["worker[0] | rank 0 step 2", "worker[1] | rank 1 step 2"]
    assert cli.run("--since", "1970-01-01T00:16:41Z")[1].splitlines() == ["worker[0] | rank 0 step 2", "worker[1] | rank 1 step 2"]
    first = cli.run("--timestamps", "--tail", "1", "--rank", "0")[1]
    assert first == "1970-01-01T00:16:41.000Z worker[0] | rank 0 step 2\n"


def test_json_is_one_object_per_line(cli):
    code, out, _ = cli.run("worker", "--json")
    assert code == 0
    objects = [json.loads(line) for line in out.splitlines()]
    assert [(o["role"], o["rank"], o["time"]) for o in objects] == [("worker", 0, 1000.0), ("worker", 1, 1000.5), ("worker", 0, 1001.0), ("worker", 1, 1001.5)]
    assert objects[0] == {"role": "worker", "rank": 0, "time": 1000.0, "timestamp": "1970-01-01T00:16:40.000Z", "stream": "stdout", "text": "rank 0 step 1"}
    assert objects[1]["text"] == "rank 1 step 1 token=(sensitive value)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("decoder",), "{stack}: stack 'demo' has no role 'decoder' (its roles: worker); pass one of them as ROLE"),
        (("worker", "--rank", "2"), "--rank 2 is out of range: role 'worker' of {stack} has 2 ranks, 0 to 1; pass one of them"),
        (("--rank", "-1"), "--rank -1 is out of range: no role of {stack} has more than 2 ranks (worker: 0 to 1); pass one of them"),
        (("--since", "yesterday"), "--since 'yesterday' is neither a duration (90s, 10m, 2h, 1d) nor a time (2026-11-28T01:00:00Z); give one of those"),
        (("--tail", "-3"), "--tail -3 is negative; pass 0 or more lines"),
    ],
)
def test_bad_input_is_one_sentence_before_the_provider_is_asked(cli, args, message):
    code, out, err = cli.run(*args)
    assert code == 1 and out == ""
    assert err.strip() == "Error: " + message.format(stack=cli.stack), err
    assert cli.asked() == 0


def test_a_provider_without_logs_says_so(cli, monkeypatch):
    monkeypatch.setattr(memory_provider.MemoryProvider, "logs", None)
    code, _, err = cli.run()
    assert code == 1
    assert "Error: The slurm provider cannot show logs (it has no `logs`); read the output on the cluster itself" in err


def test_ctrl_c_while_following_exits_130_quietly(cli, monkeypatch):
    from madinfra.logs import LogLine

    def interrupted(self: Any, spec: Any, desired: Any, query: LogQuery):
        assert query.follow
        yield LogLine("worker", 0, "before Ctrl-C", 1.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(memory_provider.MemoryProvider, "logs", interrupted)
    code, out, err = cli.run("--follow")
    assert code == 130
    assert out == "worker[0] | before Ctrl-C\n" and err == ""


def test_a_pool_counts_replicas():
    spec = resolve(
        {"name": "demo", "slurm": {"nodes": 5, "partition": "p1", "gpus_per_node": 1}, "distributed": {"launcher": "sglang-disagg", "nnodes": 5, "nproc_per_node": 1}},
        source="x",
    )
    launch = compile_launch(spec)
    desired = [Resource("slurm/Job", f"decode-{i}", {}, role="decode", replica=i) for i in range(3)]
    check_rank(Path("s.yaml"), launch, desired, LogQuery(role="decode", rank=2))
    with pytest.raises(MadinfraError, match=r"^--rank 3 is out of range: role 'decode' of s.yaml has 3 replicas, 0 to 2; pass one of them$"):
        check_rank(Path("s.yaml"), launch, desired, LogQuery(role="decode", rank=3))


def test_a_ray_cluster_is_one_role_of_all_its_nodes():
    spec = resolve(
        {"name": "demo", "slurm": {"nodes": 3, "partition": "p1", "gpus_per_node": 1}, "distributed": {"launcher": "vllm", "nnodes": 3, "nproc_per_node": 1}},
        source="x",
    )
    launch = compile_launch(spec)
    check_rank(Path("s.yaml"), launch, [], LogQuery(role="server", rank=2))
    with pytest.raises(MadinfraError, match=r"^--rank 3 is out of range: role 'server' of s.yaml has 3 ranks, 0 to 2; pass one of them$"):
        check_rank(Path("s.yaml"), launch, [], LogQuery(role="server", rank=3))
    from madinfra.cli.logs_cmd import check_role

    with pytest.raises(MadinfraError, match=r"has no role 'server-workers' \(its roles: server\)"):
        check_role(Path("s.yaml"), "demo", launch, LogQuery(role="server-workers"))
