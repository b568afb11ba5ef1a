"""``madinfra logs`` on SLURM without a cluster: the job script's stamped, labelled output
(``logformat.py``, executed by bash with a stand-in srun) and the reader (``logs.py``), whose
remote commands run here under ``sh`` (dash: no bashisms on the login node) against a HOME with
the stack's ``logs/`` directory and a stand-in ``squeue``."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from madinfra.config import resolve
from madinfra.errors import ProviderError
from madinfra.launchers import compile as compile_launch
from madinfra.logs import LogQuery
from madinfra.resources import ProviderOptions
from madinfra_slurm import SlurmProvider, logformat, logs, scripts, squeue
from madinfra_slurm.connection import CommandResult

# -- the job script's side -----------------------------------------------------------------------

TWO_TASK_SRUN = r"""#!/bin/bash
# Stand-in for `srun --label` over two nodes: runs the command as task 0 and task 1 at once,
# labelling each line of each task's stdout and stderr as srun does, then exits with the
# first failing task's status (as --kill-on-bad-exit would report it).
set -o pipefail
label=no
while [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; do [ "$1" = --label ] && label=yes; shift; done
run() { SLURM_PROCID=$1 "${@:2}" 2> >(sed -u "s/^/$1: /" >&2) | sed -u "s/^/$1: /"; }
[ "$label" = yes ] || { echo "srun: the step was not labelled" >&2; exit 99; }
run 0 "$@" & a=$!
run 1 "$@" & b=$!
wait $a; ra=$?; wait $b; rb=$?
[ $rb -eq 0 ] || echo "srun: error: node2: task 1: Exited with exit code $rb" >&2
exit $(( ra ? ra : rb ))
"""

TASK = r"""
for i in 1 2 3; do echo "rank $SLURM_PROCID line $i"; sleep 0.3; done
echo "rank $SLURM_PROCID warning" >&2
[ "$SLURM_PROCID" = 0 ] || exit 3
"""


def two_node_spec():
    return resolve(
        {
            "name": "demo",
            "slurm": {"partition": "debug", "nodes": 2, "gpus_per_node": 0, "time": "10"},
            "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
            "roles": {"worker": {"command": TASK}},
        },
        source="test",
    )


def run_job(tmp_path: Path, prelude: str = "") -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """The worker's generated script, run with bash as job 4242 and srun stand-in; sbatch's
    ``--output``/``--error`` become the redirections. Returns the process and both files."""
    spec = two_node_spec()
    launch = compile_launch(spec)
    job = scripts.render_job(spec, launch, launch.roles[0])
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    (home / ".madinfra" / "demo").mkdir(parents=True)
    (home / ".madinfra" / "demo" / "worker.sbatch").write_text(job.script)
    (bin_dir / "srun").write_text(TWO_TASK_SRUN)
    (bin_dir / "srun").chmod(0o755)
    script = job.script.replace("set -eo pipefail\n", "set -eo pipefail\n" + prelude, 1)
    (tmp_path / "job.sbatch").write_text(script)
    out, err = tmp_path / "job.out", tmp_path / "job.err"
    # A node whose local time is not UTC: the stamps must be UTC all the same.
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[1-2]", "TZ": "Asia/Tokyo"}
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.run(["bash", str(tmp_path / "job.sbatch")], stdout=stdout, stderr=stderr, env=env, cwd=tmp_path, timeout=30, text=True)
    return proc, out, err


def read(path: Path) -> list[logformat.RawLine]:
    return logformat.Reader().feed(path.read_bytes(), final=True)


def test_the_job_script_runs_every_step_labelled_and_stamped_and_keeps_its_exit_status(tmp_path: Path) -> None:
    spec = two_node_spec()
    launch = compile_launch(spec)
    script = scripts.render_job(spec, launch, launch.roles[0]).script
    assert f"\n{logformat.STEP} srun --label --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c " in script
    proc, out, err = run_job(tmp_path)
    assert proc.returncode == 3, "the step's failure is the job's, as without the stamping"
    assert out.read_text().splitlines()[0] == logformat.HEADER and err.read_text().splitlines()[0] == logformat.HEADER
    lines = read(out)
    assert sorted((line.task, line.text) for line in lines) == sorted((rank, f"rank {rank} line {i}") for rank in (0, 1) for i in (1, 2, 3))
    times = [line.time for line in lines]
    assert all(t is not None for t in times) and times == sorted(times), "stamped in the order the lines arrived"
    assert abs(times[0] - time.time()) < 60, "stamped in UTC on a node whose local time is not"
    for rank in (0, 1):
        mine = [line.time for line in lines if line.task == rank]
        assert mine[-1] - mine[0] >= 0.3, "each line is stamped when it arrives (0.6 s apart), not when the step ends"
    errors = read(err)
    assert {(line.task, line.text) for line in errors} >= {(0, "rank 0 warning"), (1, "rank 1 warning")}
    assert (1, "srun: error: node2: task 1: Exited with exit code 3") in {(line.task, line.text) for line in errors}
    marker = (tmp_path / "home" / ".madinfra" / "demo" / "status" / "worker.4242").read_text()
    assert "exit=3" in marker, "the end marker still records the step's exit status"


def test_an_old_bash_without_epochrealtime_stamps_whole_seconds(tmp_path: Path) -> None:
    proc, out, _ = run_job(tmp_path, prelude="unset EPOCHREALTIME\n")
    assert proc.returncode == 3
    first = out.read_text().splitlines()[1]
    assert first[19:21] == "Z ", first
    lines = read(out)
    assert all(line.time is not None and line.time == int(line.time) for line in lines)


def test_every_step_of_a_pyxis_job_is_stamped(tmp_path: Path) -> None:
    spec = resolve(
        {
            "name": "demo",
            "model": {"image": "registry.example/ml:1"},
            "slurm": {"partition": "debug", "nodes": 2, "gpus_per_node": 0, "time": "10", "container": {"runtime": "pyxis"}},
            "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
        },
        source="test",
    )
    launch = compile_launch(spec)
    script = scripts.render_job(spec, launch, launch.roles[0]).script
    steps = [line for line in script.splitlines() if " srun " in line and not line.startswith("#")]
    assert len(steps) == 2 and all(line.startswith(f"{logformat.STEP} srun --label ") for line in steps)
    assert script.count("\nmadinfra_stamp() {") == 1


# -- reading lines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "task", "time", "text"),
    [
        ("2026-11-28T01:00:00.250000Z 0: hello", 0, 1795827600.25, "hello"),
        ("2026-11-28T01:00:00,5Z  7: padded label", 7, 1795827600.5, "padded label"),
        ("2026-11-28T01:00:01Z 12: whole seconds", 12, 1795827601.0, "whole seconds"),
        ("2026-11-28T01:00:00.000001Z 1: ", 1, 1795827600.000001, ""),
        ("2026-11-28T01:00:00.1Z 1: 2: a label in the text stays", 1, 1795827600.1, "2: a label in the text stays"),
        ("2026-11-28T01:00:00.1Z srun: error: node3: task 2: Killed", 2, 1795827600.1, "srun: error: node3: task 2: Killed"),
        ("2026-11-28T01:00:00.1Z madinfra: the batch script itself", None, 1795827600.1, "madinfra: the batch script itself"),
        ("an unstamped line", None, None, "an unstamped line"),
    ],
)
def test_a_stamped_line(line: str, task: int | None, time: float | None, text: str) -> None:
    raw = logformat.parse_line(line, stamped=True)
    assert (raw.task, raw.text) == (task, text)
    assert raw.time == pytest.approx(time) if time is not None else raw.time is None


def test_a_file_without_the_header_is_the_programs_text_as_is() -> None:
    text = b"2026-11-28T01:00:00.250000Z 0: printed by the program\nplain\n"
    assert logformat.Reader().feed(text, final=True) == [
        logformat.RawLine(None, None, "2026-11-28T01:00:00.250000Z 0: printed by the program"),
        logformat.RawLine(None, None, "plain"),
    ]


def test_the_reader_keeps_a_line_until_its_newline_and_a_character_split_between_reads_whole() -> None:
    reader = logformat.Reader()
    head = (logformat.HEADER + "\n").encode()
    word = "naïve ✓".encode()
    assert reader.feed(head + b"2026-11-28T01:00:00.1Z 0: " + word[:3]) == []
    assert reader.feed(word[3:-1]) == []
    assert reader.feed(word[-1:] + b"\n2026-11-28T01:00:00.2Z 1: last") == [logformat.RawLine(0, pytest.approx(1795827600.1), "naïve ✓")]
    assert reader.feed(b"", final=True) == [logformat.RawLine(1, pytest.approx(1795827600.2), "last")]


# -- the reader against a local "login node" ----------------------------------------------------

FAKE_SQUEUE = """#!/bin/sh
# Stand-in for squeue: the rows the test put in $FAKE_ROWS (fields joined by the unit separator).
cat "$FAKE_ROWS"
exit "$(cat "$FAKE_EXIT" 2>/dev/null || echo 0)"
"""


class LocalLogin:
    """``SlurmConnection.run`` over ``sh -c`` on this machine, HOME and PATH pointing at the test's."""

    def __init__(self, tmp_path: Path):
        self.home = tmp_path / "home"
        self.bin = tmp_path / "bin"
        self.rows = tmp_path / "rows"
        self.exit = tmp_path / "squeue-exit"
        self.bin.mkdir()
        (self.bin / "squeue").write_text(FAKE_SQUEUE)
        (self.bin / "squeue").chmod(0o755)
        self.logs = self.home / ".madinfra" / "demo" / "logs"
        self.logs.mkdir(parents=True)
        self.rows.write_text("")
        self.commands: list[str] = []

    def run(self, command: str, *, what: str, timeout: float | None = None, idempotent: bool = True, encoding: str | None = None) -> CommandResult:
        self.commands.append(command)
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.home), "FAKE_ROWS": str(self.rows), "FAKE_EXIT": str(self.exit)}
        proc = subprocess.run(["sh", "-c", command], capture_output=True, env=env, timeout=30)
        assert b"not found" not in proc.stderr and b"syntax error" not in proc.stderr.lower(), proc.stderr
        return CommandResult(command, proc.stdout.decode(encoding or "utf-8"), proc.stderr.decode(encoding or "utf-8"), proc.returncode)

    def queue(self, *jobs: tuple[str, str, str]) -> None:
        """squeue lists these ``(job id, job name, state)``."""
        rows = []
        for job_id, name, state in jobs:
            values = {field: "" for field, _ in squeue.FIELDS} | {"job_id": job_id, "name": name, "state": state}
            rows.append(squeue.SEPARATOR.join(values[field] for field, _ in squeue.FIELDS))
        self.rows.write_text("".join(row + "\n" for row in rows))

    def write(self, name: str, data: bytes, append: bool = False) -> None:
        with (self.logs / name).open("ab" if append else "wb") as handle:
            handle.write(data)


def stamped(*lines: tuple[float, int, str], header: bool = True) -> bytes:
    out = [logformat.HEADER] if header else []
    out += [stamp(when, task, text) for when, task, text in lines]
    return ("".join(line + "\n" for line in out)).encode()


def stamp(when: float, task: int, text: str) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + f"Z {task}: {text}"


def desired_of(stack: dict) -> tuple[object, list]:
    spec = resolve({"name": "demo", **stack}, source="test")
    return spec, SlurmProvider(ProviderOptions()).desired(spec, compile_launch(spec))


TRAINING = {"slurm": {"partition": "debug", "nodes": 2, "gpus_per_node": 0, "time": "10"}, "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1}}
WORKER = "madinfra.demo.worker"


def shown(login: LocalLogin, query: LogQuery, stack: dict = TRAINING, sleep=lambda s: None) -> list[tuple[str, int, str, str]]:
    spec, desired = desired_of(stack)
    return [(l.role, l.rank, l.stream, l.text) for l in logs.read_logs(login, spec, desired, query, sleep=sleep, poll_interval=0)]


def test_a_finished_job_is_read_in_one_round_trip_merged_by_time(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    login.write(f"{WORKER}_41.out", stamped((10.0, 0, "older run")))
    login.write(f"{WORKER}_42.out", stamped((100.0, 0, "a"), (100.2, 1, "b"), (100.4, 0, "c"), (100.6, 1, "d")))
    login.write(f"{WORKER}_42.err", stamped((100.3, 1, "warning of rank 1"), (100.7, 0, "srun: error: node1: task 0: Exited")))
    assert shown(login, LogQuery()) == [
        ("worker", 0, "stdout", "a"),
        ("worker", 1, "stdout", "b"),
        ("worker", 1, "stderr", "warning of rank 1"),
        ("worker", 0, "stdout", "c"),
        ("worker", 1, "stdout", "d"),
        ("worker", 0, "stderr", "srun: error: node1: task 0: Exited"),
    ]
    assert len(login.commands) == 1
    assert [text for *_, text in shown(login, LogQuery(rank=1))] == ["b", "warning of rank 1", "d"]
    assert [text for *_, text in shown(login, LogQuery(tail=1))] == ["d", "srun: error: node1: task 0: Exited"]
    assert [text for *_, text in shown(login, LogQuery(since=100.3, tail=5))] == ["warning of rank 1", "c", "d", "srun: error: node1: task 0: Exited"]


def test_a_job_of_an_older_madinfra_is_read_as_rank_0_without_time(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    login.write(f"{WORKER}_7.out", b"epoch 1\nepoch 2\nno newline at the end")
    login.write(f"{WORKER}_7.err", b"Traceback (most recent call last):\n")
    assert shown(login, LogQuery()) == [
        ("worker", 0, "stdout", "epoch 1"),
        ("worker", 0, "stdout", "epoch 2"),
        ("worker", 0, "stdout", "no newline at the end"),
        ("worker", 0, "stderr", "Traceback (most recent call last):"),
    ]


def test_a_newer_job_still_pending_shows_nothing_of_the_older_one(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    login.write(f"{WORKER}_42.out", stamped((100.0, 0, "the finished run")))
    login.queue(("43", WORKER, "PENDING"), ("44", "madinfra.other.worker", "RUNNING"))
    assert shown(login, LogQuery()) == []
    login.queue(("40", WORKER, "RUNNING"))
    assert shown(login, LogQuery()) == [("worker", 0, "stdout", "the finished run")], "the newest job wins, queued or not"


def test_pool_replicas_are_ranks_of_their_pool(tmp_path: Path) -> None:
    stack = {"slurm": {"partition": "debug", "nodes": 4, "gpus_per_node": 1, "time": "10"}, "distributed": {"launcher": "sglang-disagg", "nnodes": 4, "nproc_per_node": 1}}
    _, desired = desired_of(stack)
    names = {r.name: r.spec["name"] for r in desired if r.kind == scripts.KIND}
    assert {"decode-0", "decode-1", "prefill-0", "proxy"} <= set(names)
    login = LocalLogin(tmp_path)
    login.write(f"{names['decode-0']}_10.out", stamped((5.0, 0, "decode 0 ready")))
    login.write(f"{names['decode-1']}_11.out", stamped((4.0, 0, "decode 1 ready")))
    login.write(f"{names['proxy']}_12.out", stamped((6.0, 0, "router up")))
    assert shown(login, LogQuery(), stack) == [("decode", 1, "stdout", "decode 1 ready"), ("decode", 0, "stdout", "decode 0 ready"), ("proxy", 0, "stdout", "router up")]
    assert shown(login, LogQuery(role="decode", rank=1), stack) == [("decode", 1, "stdout", "decode 1 ready")]
    assert names["decode-0"] not in login.commands[-1], "a replica outside --rank is not read at all"


def test_a_ray_clusters_head_is_rank_0_and_its_workers_follow(tmp_path: Path) -> None:
    stack = {
        "slurm": {"partition": "debug", "nodes": 3, "gpus_per_node": 1, "time": "10"},
        "distributed": {"launcher": "vllm", "nnodes": 3, "nproc_per_node": 1},
        "model": {"model_path": "/m"},
    }
    _, desired = desired_of(stack)
    names = {r.name: r.spec["name"] for r in desired if r.kind == scripts.KIND}
    login = LocalLogin(tmp_path)
    login.write(f"{names['server']}_20.out", stamped((1.0, 0, "head up")))
    login.write(f"{names['server-workers']}_21.out", stamped((2.0, 0, "joined"), (3.0, 1, "joined too")))
    assert shown(login, LogQuery(role="server"), stack) == [
        ("server", 0, "stdout", "head up"), ("server", 1, "stdout", "joined"), ("server", 2, "stdout", "joined too"),
    ]
    assert shown(login, LogQuery(role="server", rank=2), stack) == [("server", 2, "stdout", "joined too")]


def test_follow_prints_lines_as_they_come_and_returns_when_the_job_ends(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    login.queue(("50", WORKER, "PENDING"))
    word = "✓ done".encode()
    steps = [
        lambda: login.queue(("50", WORKER, "RUNNING")),
        lambda: login.write(f"{WORKER}_50.out", stamped((200.0, 0, "rank 0 up"), (200.1, 1, "rank 1 up")) + b"2026-11-28T01:00:00.1Z 1: half "),
        lambda: login.write(f"{WORKER}_50.out", b"a line\n", append=True),
        lambda: login.write(f"{WORKER}_50.err", stamped((1795827601.0, 0, "")) + b"2026-11-28T01:00:02.0Z 0: " + word[:2]),
        lambda: (login.write(f"{WORKER}_50.err", word[2:], append=True), login.queue(("50", WORKER, "COMPLETING"))),
    ]
    seen: list[tuple[int, str]] = []
    printed: list[tuple[str, str]] = []

    def sleep(_: float) -> None:
        seen.append((len(printed), ""))
        steps.pop(0)()

    spec, desired = desired_of(TRAINING)
    for line in logs.read_logs(login, spec, desired, LogQuery(follow=True), sleep=sleep, poll_interval=0):
        printed.append((line.stream, line.text))
    assert steps == [], "it polled until squeue no longer listed the job as pending or running"
    assert printed == [("stdout", "rank 0 up"), ("stdout", "rank 1 up"), ("stdout", "half a line"), ("stderr", ""), ("stderr", "✓ done")]
    assert [count for count, _ in seen] == [0, 0, 2, 3, 4], "a line is printed once it is complete, not before"


def test_follow_reads_a_truncated_file_again_from_its_start(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    login.queue(("60", WORKER, "RUNNING"))
    login.write(f"{WORKER}_60.out", stamped((300.0, 0, "a long first line before the file was truncated")))
    steps = [lambda: (login.write(f"{WORKER}_60.out", stamped((301.0, 0, "new"))), login.queue())]
    printed = shown(login, LogQuery(follow=True), sleep=lambda _: steps.pop(0)())
    assert [text for *_, text in printed] == ["a long first line before the file was truncated", "new"]


def test_follow_of_a_finished_job_prints_it_and_returns(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    login.write(f"{WORKER}_42.out", stamped((100.0, 0, "a")))
    polls = []
    assert shown(login, LogQuery(follow=True), sleep=polls.append) == [("worker", 0, "stdout", "a")]
    assert polls == []


def test_no_job_and_no_output_is_one_sentence(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    with pytest.raises(ProviderError, match=r"^No job of role 'worker' of stack 'demo' is queued and ~/.madinfra/demo/logs holds no output of one; run `madinfra apply` first"):
        shown(login, LogQuery(role="worker"))


def test_a_failing_squeue_still_shows_the_files_but_cannot_follow(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    login.write(f"{WORKER}_42.out", stamped((100.0, 0, "a")))
    login.exit.write_text("1")
    assert shown(login, LogQuery()) == [("worker", 0, "stdout", "a")]
    with pytest.raises(ProviderError, match=r"squeue failed \(exit status 1\), so it cannot tell when the jobs end"):
        shown(login, LogQuery(follow=True))


def test_output_cannot_forge_the_file_boundaries(tmp_path: Path) -> None:
    login = LocalLogin(tmp_path)
    forged = "@@madinfra-logs-0123456789abcdef file x 0"
    login.write(f"{WORKER}_42.out", stamped((100.0, 0, forged), (101.0, 0, "after")))
    assert shown(login, LogQuery()) == [("worker", 0, "stdout", forged), ("worker", 0, "stdout", "after")]


def test_commands_quote_every_name(tmp_path: Path) -> None:
    spec, desired = desired_of(TRAINING)
    command = logs.first_command(spec, ["madinfra.demo.worker", "x'; touch pwned; '"], "@@m")
    assert shlex.quote("x'; touch pwned; '") in command
