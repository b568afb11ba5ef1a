"""The one-round-trip live read: its shell command, run locally with a fake ``squeue``, and the
parsing of what it prints."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from madinfra_slurm import readout

ROWS = "12|madinfra.demo.worker|RUNNING|00:10:00|1|node1|debug|gres:gpu:1|None|OK|(null)|(null)|(null)|||(null)|0|/x|madinfra:stack=demo\n"


def run_read(tmp_path: Path, files: dict[str, str], *, remote_dir: str | None = None, squeue_exit: int = 0, base: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``read_command`` with bash as the remote shell would, HOME under ``tmp_path``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "squeue"
    fake.write_text(f"#!/bin/bash\nprintf '%s' '{ROWS}'\necho 'squeue: note' >&2\nexit {squeue_exit}\n")
    fake.chmod(0o755)
    home = tmp_path / "home"
    stack_dir = base if base is not None else home / ".madinfra" / "demo"
    for path, text in files.items():
        target = stack_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home)}
    return subprocess.run(["bash", "-c", readout.read_command("demo", remote_dir)], capture_output=True, text=True, env=env, timeout=30)


def test_one_command_prints_squeue_then_the_stack_files(tmp_path: Path) -> None:
    files = {
        "topology.env": "export NNODES=5\n",
        "endpoints/decode": "http://10.0.0.1:30000\nhttp://10.0.0.2:30000",
        "endpoints/decode.source": "job=12\npool_job=sha256:ab\n",
        "status/worker.12": "exit=0\nend=2026-01-01T00:00:00Z\nrow=" + ROWS,
        "ray/server.status": "address=10.0.0.1:6379\n",
        "ray/server.status.tmp.12": "half a file\n",
        "worker.sbatch": "#!/bin/bash\n",
        "logs/x.out": "noise\n",
    }
    proc = run_read(tmp_path, files)
    assert proc.returncode == 0, proc.stderr
    live = readout.parse_read(proc.stdout)
    assert live.squeue_text == ROWS
    assert live.directory == str(tmp_path / "home" / ".madinfra" / "demo")
    assert dict(live.files) == {
        "topology.env": "export NNODES=5\n",
        "endpoints/decode": "http://10.0.0.1:30000\nhttp://10.0.0.2:30000\n",
        "endpoints/decode.source": "job=12\npool_job=sha256:ab\n",
        "status/worker.12": "exit=0\nend=2026-01-01T00:00:00Z\nrow=" + ROWS,
        "ray/server.status": "address=10.0.0.1:6379\n",
    }
    assert live.now is not None and abs(live.now - time.time()) < 60, "the remote clock, for the Ray head status's age"


def test_a_failing_squeue_fails_the_command_and_a_missing_directory_is_no_files(tmp_path: Path) -> None:
    proc = run_read(tmp_path, {}, squeue_exit=1)
    assert proc.returncode == 1 and "squeue: note" in proc.stderr
    live = readout.parse_read(proc.stdout)
    assert (live.squeue_text, live.directory, live.files) == (ROWS, None, [])


def test_commands_that_do_not_compile_the_stack_follow_the_pointer_to_its_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "scratch" / "demo"
    pointer = {".remote_dir": f"{elsewhere}\n"}
    run_read(tmp_path, pointer)
    proc = run_read(tmp_path, {"topology.env": "export A=1\n"}, base=elsewhere)
    live = readout.parse_read(proc.stdout)
    assert live.directory == str(elsewhere) and dict(live.files) == {"topology.env": "export A=1\n"}
    known = readout.parse_read(run_read(tmp_path, {}, remote_dir="~/.madinfra/demo").stdout)
    assert known.directory == str(tmp_path / "home" / ".madinfra" / "demo") and known.files == [], "a known remote_dir wins over the pointer"


def test_plain_squeue_output_parses_as_rows_only() -> None:
    assert readout.parse_read(ROWS) == readout.LiveRead(ROWS)


def test_the_command_quotes_the_stack_directory() -> None:
    command = readout.read_command("demo", "/scratch/my dir/demo")
    assert command.startswith("squeue -h -a --me -o ")
    assert "d='/scratch/my dir/demo'" in command
    assert readout.read_command("demo").count('"$HOME"/.madinfra/demo/.remote_dir') == 2
