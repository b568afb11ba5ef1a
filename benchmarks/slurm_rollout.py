"""How long a disaggregated pool's replica-by-replica changes take on the SLURM sandbox.

One stack of stand-in servers (the e2e tests' ``standin_server.py`` for the pools, madinfra's own
generated proxy around the stand-in mini_lb, copied from tests/providers/slurm) goes through, with
the real ``madinfra`` CLI: create (1 proxy + 1 prefill + 3 decode replicas, 1 GPU each), decode
3 -> 2, decode 2 -> 3, an env change rolled with surge 1, then destroy. Each step's wall time is
printed, with the plan's pool line, so the cost of draining (the proxy's acknowledgement) and of
each replica's health check can be read off.

Needs the sandbox (scripts/slurm-sandbox up; /tmp/madinfra-slurm-sandbox/target.json).
Run: python benchmarks/slurm_rollout.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from _common import SANDBOX_TARGET, header, table

HERE = Path(__file__).resolve().parent
STANDINS = HERE.parent / "tests" / "providers" / "slurm"
STEPS = ("create 1+3", "decode 3 -> 2", "decode 2 -> 3", "roll decode (surge 1)", "destroy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack(name: str, port: int, decode: int, version: str = "1") -> dict[str, Any]:
    """The e2e tests' surge stack (``serving_support.serving``), self-contained."""
    health = (
        f'd="$HOME/.madinfra/{name}/standin"; f="$d/$SLURM_JOB_ID.0.port"; [ -s "$f" ] &&'
        ' curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$(cat "$f")/health"'
    )
    pool = 'exec python3 standin_server.py --role {role} --port 0 --port-dir "$MADINFRA_WORKDIR/standin" --ready-after 1'
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
    env = {**os.environ, "MADINFRA_SSH_TARGET": str(SANDBOX_TARGET), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-c", "from madinfra.cli import main; main()", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"madinfra {' '.join(args)} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return proc


def pool_line(workdir: Path, path: Path) -> str:
    plan = json.loads(cli(workdir, "plan", str(path), "--json").stdout)
    return "; ".join(line for pool in plan["rollouts"] for line in pool["lines"]) or "-"


def one_round() -> tuple[dict[str, float], dict[str, str]]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    times: dict[str, float] = {}
    lines: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        install(workdir)
        path = workdir / "stack.yaml"
        variants = [(STEPS[0], 3, "1"), (STEPS[1], 2, "1"), (STEPS[2], 3, "1"), (STEPS[3], 3, "2")]
        try:
            for step, decode, version in variants:
                path.write_text(yaml.safe_dump(stack(name, port, decode, version)))
                lines[step] = pool_line(workdir, path)
                start = time.perf_counter()
                cli(workdir, "apply", str(path), "--yes")
                times[step] = time.perf_counter() - start
        finally:
            start = time.perf_counter()
            cli(workdir, "destroy", str(path), "--yes")
            times[STEPS[4]] = time.perf_counter() - start
    return times, lines


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
        values = [times[step] for times, _ in results]
        rows.append((step, f"{statistics.median(values):.1f}", f"{min(values):.1f}-{max(values):.1f}", results[0][1].get(step, "-")))
    print(table(("step", "median s", "range s", "plan's pool line"), rows))


if __name__ == "__main__":
    main()
