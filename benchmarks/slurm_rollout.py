"""How long a disaggregated pool's replica-by-replica changes take on the SLURM sandbox.

One stack of stand-in servers (the e2e tests' ``standin_server.py`` for the pools, madinfra's own
generated proxy around the stand-in mini_lb, copied from tests/providers/slurm) goes through, with
the real ``madinfra`` CLI: create (1 proxy + 1 prefill + 3 decode replicas, 1 GPU each), decode
3 -> 2, decode 2 -> 3, an env change rolled with surge 1, a ``--page-size`` change of both pools
(a KV cache layout change: both pools replaced together, so the proxy must never list old and new
replicas at once, and serves nothing in between), then destroy. Each step's wall time is
printed, with the plan's pool line, so the cost of draining (the proxy's acknowledgement) and of
each replica's health check can be read off. During every apply a thread polls the proxy's own
endpoint list (the stand-in mini_lb's ``/endpoints``, every 0.1 s) and measures the time from
apply start until the proxy serves the new topology (the final replica counts, from a router
started after the last change), the seconds any pool had no replica in the proxy's list (the
goal is 0), and the seconds the proxy did not answer (mini_lb restarting on a list change).

Needs the sandbox (scripts/slurm-sandbox up; /tmp/madinfra-slurm-sandbox/target.json).
Run: python benchmarks/slurm_rollout.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from _common import SANDBOX_TARGET, Poller, free_port, header, sandbox_cli, table

HERE = Path(__file__).resolve().parent
STANDINS = HERE.parent / "tests" / "providers" / "slurm"
STEPS = ("create 1+3", "decode 3 -> 2", "decode 2 -> 3", "roll decode (surge 1)", "KV layout change (both pools together)", "destroy")


def stack(name: str, port: int, decode: int, version: str = "1", page_size: int = 16) -> dict[str, Any]:
    """The e2e tests' surge stack (``serving_support.serving``), self-contained."""
    health = (
        f'd="$HOME/.madinfra/{name}/standin"; f="$d/$SLURM_JOB_ID.0.port"; [ -s "$f" ] &&'
        ' curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$(cat "$f")/health"'
    )
    pool = 'exec python3 standin_server.py --role {role} --port 0 --port-dir "$MADINFRA_WORKDIR/standin" --ready-after 1 --page-size ' + str(page_size)
    nnodes = 2 + decode
    return {
        "name": name,
        "slurm": {"partition": "debug", "nodes": nnodes, "gpus_per_node": 1, "time": "10", "exclusive": False, "ready_timeout": 30},
        "distributed": {"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": 1, "sglang_disagg": {"prefill_nodes": 1, "decode_nodes": decode}},
        "model": {"scripts_dir": "scripts"},
        "env_vars": {"MODEL_PATH": "/models/none"},
        "service": {"port": port, "health_check": {"http_path": None, "command": health}},
        "roles": {
            "prefill": {"command": pool.format(role="prefill")},
            "decode": {"command": pool.format(role="decode"), "env": {"STANDIN_VERSION": version}},
        },
    }


def install(workdir: Path) -> None:
    scripts = workdir / "scripts"
    package = scripts / "sglang" / "srt" / "disaggregation"
    package.mkdir(parents=True)
    shutil.copy(STANDINS / "standin_server.py", scripts / "standin_server.py")
    shutil.copy(STANDINS / "standin_mini_lb.py", package / "mini_lb.py")
    for directory in (scripts / "sglang", scripts / "sglang" / "srt", package):
        (directory / "__init__.py").write_text("")


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sandbox_cli(workdir, *args)


class ProxyWatch(Poller):
    """Polls the proxy's ``/endpoints`` while an apply runs (see the module docstring)."""

    def __init__(self, port: int, final: dict[str, int], rolled: str | None = None):
        super().__init__()
        self.url = f"http://127.0.0.1:{port}/endpoints"
        self.final = final
        self.rolled = rolled
        """The pool a roll changes: it keeps its counts, so the new topology is served once no
        job of that pool the proxy named at the start is still in its list."""
        self.old_jobs: set[str] | None = None
        self.start = time.perf_counter()
        self.serving_at: float | None = None
        self.zero: dict[str, float] = {pool: 0.0 for pool in final}
        self.silent = 0.0
        self.first_jobs: set[str] | None = None
        self.mixed = 0
        """Samples in which the proxy listed jobs of before the apply and jobs started by it at
        once (after a KV layout change: old prefill with new decode; the goal is 0)."""

    def sample(self, step: float) -> None:
        now = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url, timeout=1) as response:
                seen = json.loads(response.read())
        except OSError:
            self.silent += step
            return
        for pool in self.final:
            if not seen.get(pool):
                self.zero[pool] += step
        counts = {pool: len(seen.get(pool) or []) for pool in self.final}
        every = {job for pool in self.final for job in (seen.get("jobs") or {}).get(pool, [])}
        if self.first_jobs is None:
            self.first_jobs = every
        elif every & self.first_jobs and every - self.first_jobs:
            self.mixed += 1
        jobs = set((seen.get("jobs") or {}).get(self.rolled, [])) if self.rolled else set()
        if self.old_jobs is None:
            self.old_jobs = jobs
        new = not self.rolled or not (jobs & self.old_jobs)
        if counts == self.final and new and self.serving_at is None:
            self.serving_at = now - self.start
        elif counts != self.final or not new:
            self.serving_at = None


def pool_line(workdir: Path, path: Path) -> str:
    plan = json.loads(cli(workdir, "plan", str(path), "--json").stdout)
    return "; ".join(line for pool in plan["rollouts"] for line in pool["lines"]) or "-"


def one_round() -> tuple[dict[str, float], dict[str, str], dict[str, ProxyWatch]]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    times: dict[str, float] = {}
    lines: dict[str, str] = {}
    watches: dict[str, ProxyWatch] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        install(workdir)
        path = workdir / "stack.yaml"
        variants = [(STEPS[0], 3, "1", 16), (STEPS[1], 2, "1", 16), (STEPS[2], 3, "1", 16), (STEPS[3], 3, "2", 16), (STEPS[4], 3, "2", 32)]
        try:
            for step, decode, version, page_size in variants:
                path.write_text(yaml.safe_dump(stack(name, port, decode, version, page_size)))
                lines[step] = pool_line(workdir, path)
                start = time.perf_counter()
                with ProxyWatch(port, {"prefill": 1, "decode": decode}, rolled="decode" if version != "1" else None) as watch:
                    cli(workdir, "apply", str(path), "--yes")
                    times[step] = time.perf_counter() - start
                    time.sleep(1)  # the proxy picks up the last list within its 2 s poll
                watches[step] = watch
        finally:
            start = time.perf_counter()
            cli(workdir, "destroy", str(path), "--yes")
            times[STEPS[5]] = time.perf_counter() - start
    return times, lines, watches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not SANDBOX_TARGET.is_file():
        raise SystemExit(f"the SLURM sandbox is not up ({SANDBOX_TARGET} is missing): run scripts/slurm-sandbox up")
    header("SLURM pool changes replica by replica (sandbox, real CLI, stand-in servers)")
    results = [one_round() for _ in range(args.rounds)]
    rows = []
    for step in STEPS:
        values = [times[step] for times, _, _ in results]
        watched = [w[step] for _, _, w in results if step in w]
        serving = [w.serving_at for w in watched if w.serving_at is not None]
        zero = max((max(w.zero.values()) for w in watched), default=None)
        silent = max((w.silent for w in watched), default=None)
        mixed = max((w.mixed for w in watched), default=None)
        rows.append((
            step,
            f"{statistics.median(values):.1f}",
            f"{min(values):.1f}-{max(values):.1f}",
            f"{statistics.median(serving):.1f}" if serving else "-",
            f"{zero:.1f}" if zero is not None else "-",
            f"{silent:.1f}" if silent is not None else "-",
            str(mixed) if mixed is not None else "-",
            results[0][1].get(step, "-"),
        ))
    print(table(("step", "apply median s", "range s", "new topology served after s", "max s a pool had no replica in the proxy", "max s the proxy did not answer", "samples listing old and new replicas", "plan's pool line"), rows))


if __name__ == "__main__":
    main()
