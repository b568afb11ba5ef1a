"""What a multi-node vLLM stack's Ray head saves on the SLURM sandbox: changes that keep the head
against one that restarts it.

One stack (the e2e test's stand-in engine, ``standin_ray_engine.py`` from tests/providers/slurm,
on real Ray from the sandbox's Ray venv) goes through, with the real ``madinfra`` CLI: create
(2 nodes), resize 2 -> 3 (the workers' job replaced, the head kept), the workers' job cancelled
behind madinfra's back and applied again (head kept), a change of the engine's flags (the head
replaced, the workers kept), destroy. For every apply it prints the wall time, whether the head's
job survived, and how long the endpoint did not answer ``/health`` (a thread polls it every
0.2 s from apply start until apply returns): the engine restarts in every step, so this is the
engine's restart plus, where the head restarts, the GCS's and the workers' rejoin.

Needs the sandbox (scripts/slurm-sandbox up, which also installs Ray).
Run: python benchmarks/slurm_ray_cluster.py [--rounds N]
"""

from __future__ import annotations

import argparse
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
ENGINE = HERE.parent / "tests" / "providers" / "slurm" / "standin_ray_engine.py"
RAY_PATH = SANDBOX_TARGET.parent / "ray-path"
STEPS = ("create (2 nodes)", "resize 2 -> 3 (head kept)", "workers lost, applied again", "engine flags (head restarts)", "destroy")


def stack(name: str, port: int, nnodes: int, tag: str) -> dict[str, Any]:
    return {
        "name": name,
        "slurm": {"partition": "debug", "nodes": nnodes, "gpus_per_node": 1, "time": "15", "exclusive": False, "ready_timeout": 180},
        "distributed": {"launcher": "vllm", "nnodes": nnodes, "nproc_per_node": 1},
        "model": {"scripts_dir": "scripts", "script": "standin_ray_engine.py", "args": ["--port", str(port), "--tag", tag]},
        "env_vars": {"PATH": f"{RAY_PATH.read_text().strip()}:/usr/local/bin:/usr/bin:/bin"},
        "roles": {"server": {"env": {"VLLM_HOST_IP": "127.0.0.1"}}},
        "service": {"port": port},
    }


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sandbox_cli(workdir, *args, timeout=900)


def ssh(command: str) -> str:
    config = SANDBOX_TARGET.parent / "ssh_config"
    return subprocess.run(["ssh", "-F", str(config), "madinfra-sandbox", command], capture_output=True, text=True, timeout=60, check=True).stdout


def job_ids(name: str) -> dict[str, str]:
    rows = ssh(f"squeue -h -o '%i %j %T' -n madinfra.{name}.server,madinfra.{name}.server-workers")
    return {job.rsplit(".", 1)[1]: job_id for job_id, job, state in (row.split() for row in rows.splitlines()) if state == "RUNNING"}


class Downtime(Poller):
    """Seconds ``/health`` did not answer while an apply ran (polled every 0.2 s)."""

    interval = 0.2

    def __init__(self, port: int):
        super().__init__()
        self.url = f"http://127.0.0.1:{port}/health"
        self.down = 0.0

    def sample(self, step: float) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=1):
                pass
        except OSError:
            self.down += step


def one_round() -> list[tuple[str, float, float, str]]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "scripts").mkdir()
        shutil.copy(ENGINE, workdir / "scripts" / ENGINE.name)
        path = workdir / "stack.yaml"
        try:
            for step, nnodes, tag in ((STEPS[0], 2, "v1"), (STEPS[1], 3, "v1"), (STEPS[2], 3, "v1"), (STEPS[3], 3, "v2")):
                path.write_text(yaml.safe_dump(stack(name, port, nnodes, tag)))
                before = job_ids(name)
                if step == STEPS[2]:
                    ssh(f"scancel {before['server-workers']}")
                    time.sleep(5)
                start = time.perf_counter()
                with Downtime(port) as watch:
                    cli(workdir, "apply", str(path), "--yes")
                    took = time.perf_counter() - start
                after = job_ids(name)
                kept = "-" if step == STEPS[0] else ("kept" if after.get("server") == before.get("server") else "restarted")
                rows.append((step, took, watch.down, kept))
        finally:
            start = time.perf_counter()
            cli(workdir, "destroy", str(path), "--yes")
            rows.append((STEPS[4], time.perf_counter() - start, 0.0, "-"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not SANDBOX_TARGET.is_file() or not RAY_PATH.is_file():
        raise SystemExit(f"the SLURM sandbox is not up with Ray ({SANDBOX_TARGET} or {RAY_PATH} is missing): run scripts/slurm-sandbox up")
    header("SLURM multi-node vLLM: changes that keep the Ray head vs one that restarts it (sandbox, real CLI, real Ray, stand-in engine)")
    results = [one_round() for _ in range(args.rounds)]
    out = []
    for index, step in enumerate(STEPS):
        took = [r[index][1] for r in results]
        down = [r[index][2] for r in results]
        out.append((step, f"{statistics.median(took):.1f}", f"{statistics.median(down):.1f}" if index < 4 else "-", results[0][index][3]))
    print(table(("step", "apply s", "endpoint down s", "Ray head job"), out))
    print(f"\n{args.rounds} round(s); medians")


if __name__ == "__main__":
    main()
