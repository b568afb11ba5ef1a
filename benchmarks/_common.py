"""Shared helpers for the benchmark scripts: stack builders, timers and plain-text tables.

Benchmarks print tables; they assert nothing. Timings are medians of repeated runs because the
machine they run on (2 cores, shared with other work) is noisy; the repeat count is printed next
to every table so a reader can judge it.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Measure this checkout's code even when another copy of madinfra is the installed one.
    sys.path.insert(0, str(ROOT))
SANDBOX_TARGET = Path("/tmp/madinfra-slurm-sandbox/target.json")
NODE_COUNTS = (1, 10, 100, 1000)
DISAGG_MIN_NODES = 3
"""sglang-disagg needs 1 proxy + 1 prefill + 1 decode node, so its smallest stack has 3 nodes."""


def header(title: str) -> None:
    """Title plus when and where, so a pasted table carries its context."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {title}")
    import madinfra

    print(f"{stamp}; Python {platform.python_version()} on {platform.machine()}, {_cpus()} CPU(s); madinfra from {Path(madinfra.__file__).parent}\n")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into RESULTS.md)."""
    text_rows = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(col)), *(len(r[i]) for r in text_rows)) if text_rows else len(str(col)) for i, col in enumerate(columns)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(columns, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) + " |" for r in text_rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace("x", "", 1).replace("%", "", 1).replace("-", "", 1).isdigit()


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def stack_dict(target: str, launcher: str, nnodes: int, name: str = "bench", **extra: Any) -> dict[str, Any]:
    """A minimal stack of ``nnodes`` nodes for ``launcher`` on ``target`` (presets fill the rest)."""
    # Inference launchers run their own servers (the disaggregated proxy lists every pool node on
    # Kubernetes); a training launcher runs the model's script.
    model = {"image": "rocm/pytorch:latest", "model_path": "/models/llama"}
    if launcher not in ("vllm", "sglang", "sglang-disagg"):
        model["script"] = "train.py"
    raw: dict[str, Any] = {
        "name": name,
        "target": target,
        "model": model,
        "distributed": {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": 8},
        "env_vars": {"NCCL_DEBUG": "WARN"},
    }
    if target == "slurm":
        raw["slurm"] = {"partition": "debug", "nodes": nnodes, "gpus_per_node": 8, "time": "01:00:00"}
    else:
        raw["k8s"] = {"namespace": "ml", "gpu_count": 8}
    raw.update(extra)
    return raw


def node_counts(launcher: str) -> list[int]:
    return [max(n, DISAGG_MIN_NODES) if launcher == "sglang-disagg" else n for n in NODE_COUNTS]


def checkout_env(**extra: str) -> dict[str, str]:
    """Environment for child processes that run this checkout's madinfra (PYTHONPATH first)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT), **extra}


def free_port() -> int:
    """A free TCP port on the loopback, for a stand-in server's fixed port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sandbox_cli(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``madinfra ARGS`` (this checkout's) in ``workdir`` against the SLURM sandbox; a failure
    ends the benchmark with madinfra's own output."""
    env = checkout_env(MADINFRA_SSH_TARGET=str(SANDBOX_TARGET), NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-c", "from madinfra.cli import main; main()", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"madinfra {' '.join(args)} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return proc


class Poller:
    """Calls ``sample(step)`` every ``interval`` seconds in a thread while the ``with`` block runs
    (an apply), ``step`` being the seconds since the last sample, so a subclass can add up how
    long something was observed."""

    interval = 0.1

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self, step: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(self.interval)
            now = time.perf_counter()
            step, last = now - last, now
            self.sample(step)
