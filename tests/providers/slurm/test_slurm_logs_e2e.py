"""``madinfra logs`` on the SLURM sandbox, through the real CLI: a two-node training job's lines,
each prefixed with ``role[rank]`` and merged in the order they were written, once the job has
finished (``--rank``, ``--tail``, ``--json``) and followed while it runs (``--follow`` returns by
itself when the job ends, having printed every line as it came)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

pytestmark = pytest.mark.slurm


def training(command: str) -> dict:
    return {
        "slurm": {"partition": "debug", "nodes": 2, "gpus_per_node": 0, "time": "5", "exclusive": False, "ready_timeout": 60},
        "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
        "roles": {"worker": {"command": command}},
    }


# Rank 1 starts half a second after rank 0, so the two ranks' lines alternate with 0.5 s between them.
STEPS = """
if [ "$SLURM_PROCID" = 1 ]; then sleep 0.5; fi
for i in 1 2 3; do echo "rank $SLURM_PROCID step $i"; sleep 1; done
echo "rank $SLURM_PROCID done" >&2
"""


def wait_finished(stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while stack.jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not stack.jobs(), f"jobs of {stack.name} still queued: {stack.jobs()}"


def test_a_finished_training_job_shows_every_rank_in_time_order(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training(STEPS))
    stack.cli("apply", str(stack.path), "--yes")
    wait_finished(stack)

    shown = stack.cli("logs", str(stack.path)).stdout.splitlines()
    assert shown == [
        "worker[0] | rank 0 step 1",
        "worker[1] | rank 1 step 1",
        "worker[0] | rank 0 step 2",
        "worker[1] | rank 1 step 2",
        "worker[0] | rank 0 step 3",
        "worker[1] | rank 1 step 3",
        "worker[0] | rank 0 done",
        "worker[1] | rank 1 done",
    ], shown
    assert stack.cli("logs", str(stack.path), "worker", "--rank", "1").stdout.splitlines() == [
        "worker[1] | rank 1 step 1",
        "worker[1] | rank 1 step 2",
        "worker[1] | rank 1 step 3",
        "worker[1] | rank 1 done",
    ]
    assert stack.cli("logs", str(stack.path), "--tail", "1").stdout.splitlines() == ["worker[0] | rank 0 done", "worker[1] | rank 1 done"]

    objects = [json.loads(line) for line in stack.cli("logs", str(stack.path), "--json").stdout.splitlines()]
    assert [(o["rank"], o["stream"], o["text"]) for o in objects][-2:] == [(0, "stderr", "rank 0 done"), (1, "stderr", "rank 1 done")]
    times = [o["time"] for o in objects]
    assert times == sorted(times) and times[-1] - times[0] >= 3, "timed as written, not as the job ended"
    assert all(datetime.fromisoformat(o["timestamp"].replace("Z", "+00:00")).timestamp() == pytest.approx(o["time"], abs=0.001) for o in objects)

    wrong = stack.cli("logs", str(stack.path), "worker", "--rank", "2", check=False)
    assert wrong.returncode == 1 and "--rank 2 is out of range: role 'worker'" in wrong.stderr and "Traceback" not in wrong.stderr


TICKS = """
for _ in $(seq 240); do [ -e "$MADINFRA_WORKDIR/go" ] && break; sleep 0.25; done
for i in $(seq 1 8); do echo "rank $SLURM_PROCID tick $i"; sleep 1.5; done
"""
"""Ticks only once the test says go (after --follow started): however slow apply and the CLI's
start are on a loaded machine, the lines are written while --follow runs."""


def test_follow_prints_lines_as_they_come_and_returns_when_the_job_ends(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training(TICKS))
    stack.cli("apply", str(stack.path), "--yes")
    assert stack.jobs(), "the job must still run when --follow starts"

    env = {**os.environ, "MADINFRA_SSH_TARGET": str(stack.sandbox.target_file), "NO_COLOR": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from madinfra.cli import main; main()", "logs", str(stack.path), "--follow"],
        cwd=stack.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    arrived: list[tuple[float, str]] = []
    time.sleep(2)  # --follow is running and has read the empty files
    stack.sandbox.check(f"touch {stack.remote_dir()}/go")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            arrived.append((time.monotonic() - started, line.rstrip("\n")))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert not stack.jobs(), "--follow returned only once the job had ended"
    lines = [text for _, text in arrived]
    for rank in (0, 1):
        assert [text for text in lines if text.startswith(f"worker[{rank}]")] == [f"worker[{rank}] | rank {rank} tick {i}" for i in range(1, 9)]
    assert arrived[-1][0] - arrived[0][0] >= 2, f"the lines were printed as they came, not all at the end: {arrived}"
