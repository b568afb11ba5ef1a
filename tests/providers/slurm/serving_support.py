"""Shared parts of the SLURM serving end-to-end tests: a disaggregated stack of stand-ins, and a
watcher that checks, while apply runs, that the proxy only ever routes to running replicas.

The pools run ``standin_server.py`` (``roles.<pool>.command``, port 0: every sandbox node is
127.0.0.1); the proxy is madinfra's own generated command (mini_lb under its supervisor), with
``standin_mini_lb.py`` uploaded as ``sglang/srt/disaggregation/mini_lb.py`` so the supervisor's
restarts and ``.proxy-seen`` acknowledgements are the real ones.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
HEALTH = (
    'd="$HOME/.madinfra/{stack}/standin"; n=$(squeue -h -j "$SLURM_JOB_ID" -o %D); [ -n "$n" ] || exit 1; i=0;'
    ' while [ "$i" -lt "$n" ]; do f="$d/$SLURM_JOB_ID.$i.port"; [ -s "$f" ] || exit 1;'
    ' curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$(cat "$f")/health" || exit 1; i=$((i+1)); done'
)
"""Healthy = every node of the job has a stand-in that answers /health (run inside the job)."""
POOLS = ("prefill", "decode")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_standins(workdir: Path) -> None:
    """``scripts/``: the stand-in server, and the stand-in mini_lb where ``python3 -m`` finds it."""
    scripts = workdir / "scripts"
    package = scripts / "sglang" / "srt" / "disaggregation"
    package.mkdir(parents=True)
    shutil.copy(HERE / "standin_server.py", scripts / "standin_server.py")
    shutil.copy(HERE / "standin_mini_lb.py", package / "mini_lb.py")
    for directory in (scripts / "sglang", scripts / "sglang" / "srt", package):
        (directory / "__init__.py").write_text("")


def pool_command(role: str) -> str:
    return f'exec python3 standin_server.py --role {role} --port 0 --port-dir "$MADINFRA_WORKDIR/standin" --ready-after 1'


def serving(
    stack_name: str,
    port: int,
    prefill: int,
    decode: int,
    *,
    gpus: int = 1,
    time_limit: str = "10",
    ready_timeout: int = 15,
    env: dict[str, dict[str, str]] | None = None,
    rollout: dict[str, Any] | None = None,
    page_size: int | None = None,
    partition: str = "debug",
) -> dict[str, Any]:
    """A disaggregated stack of 1 proxy + ``prefill`` + ``decode`` one-node replicas with
    ``gpus`` GPUs each, not exclusive; ``env`` adds env per pool (a rolling change);
    ``page_size`` passes ``--page-size`` to both pools' servers (their KV cache layout)."""
    nnodes = 1 + prefill + decode
    roles: dict[str, Any] = {}
    for role in POOLS:
        roles[role] = {"command": pool_command(role) + (f" --page-size {page_size}" if page_size is not None else "")}
        if env and env.get(role):
            roles[role]["env"] = env[role]
    service: dict[str, Any] = {"port": port, "health_check": {"http_path": None, "command": HEALTH.format(stack=stack_name)}}
    if rollout:
        service["rollout"] = rollout
    return {
        "slurm": {"partition": partition, "nodes": nnodes, "gpus_per_node": gpus, "time": time_limit, "exclusive": False, "ready_timeout": ready_timeout},
        "distributed": {
            "launcher": "sglang-disagg",
            "nnodes": nnodes,
            "nproc_per_node": gpus,
            "sglang_disagg": {"prefill_nodes": prefill, "decode_nodes": decode},
        },
        "model": {"scripts_dir": "scripts"},
        "env_vars": {"MODEL_PATH": "/models/none"},
        "service": service,
        "roles": roles,
    }


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class Serving:
    """The stack under test plus what the checks need to read back."""

    def __init__(self, stack, port: int, partition: str = "debug"):
        self.stack = stack
        self.port = port
        self.partition = partition
        """``pools`` (the sandbox's node4..node6) for a test whose plans count every free GPU
        of its partition: no other test's jobs run there."""

    def write(self, prefill: int, decode: int, **kwargs: Any) -> None:
        self.stack.write(serving(self.stack.name, self.port, prefill, decode, partition=self.partition, **kwargs))

    def plan(self, *extra: str) -> dict[str, Any]:
        return json.loads(self.stack.cli("plan", str(self.stack.path), "--json", *extra).stdout)

    def plan_text(self) -> str:
        return self.stack.cli("plan", str(self.stack.path)).stdout

    def plan_is_empty(self) -> bool:
        return self.stack.cli("plan", str(self.stack.path), "--detailed-exitcode", check=False).returncode == 0

    def apply(self, *extra: str, check: bool = True):
        return self.stack.cli("apply", str(self.stack.path), "--yes", *extra, check=check)

    def ids(self) -> dict[str, list[str]]:
        """Running job ids by job role (``decode-1``): oldest first when a role has two."""
        found: dict[str, list[str]] = {}
        for job in sorted(self.stack.jobs(), key=lambda j: int(j["id"])):
            if job["state"] == "RUNNING":
                found.setdefault(job["name"].rsplit(".", 1)[1], []).append(job["id"])
        return found

    def id_of(self) -> dict[str, str]:
        """The one running job of each job role (fails when a role has two)."""
        ids = self.ids()
        assert all(len(v) == 1 for v in ids.values()), ids
        return {role: v[0] for role, v in ids.items()}

    def remote(self, path: str) -> str:
        return self.stack.sandbox.check(f"cat {self.stack.remote_dir()}/{path}")

    def source_jobs(self, pool: str) -> list[str]:
        text = self.remote(f"endpoints/{pool}.source")
        return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("replica.")]

    def proxy(self) -> dict[str, Any]:
        return get(f"http://127.0.0.1:{self.port}/endpoints")

    def info(self, job_id: str) -> dict[str, Any]:
        port = self.remote(f"standin/{job_id}.0.port").strip()
        return get(f"http://127.0.0.1:{port}/info")


class ProxyWatch:
    """Polls the proxy's endpoint list from a thread while apply runs and records every moment
    it routed to a replica job that was not RUNNING (or, with ``min_ready``, to fewer replicas
    of a pool than that). A sample counts only when the same router process answered before and
    after squeue was asked, so a restart in between cannot make a correct proxy look wrong."""

    def __init__(self, svc: Serving, min_ready: dict[str, int] | None = None):
        self.svc = svc
        self.min_ready = min_ready or {}
        self.samples = 0
        self.violations: list[str] = []
        self.seen: dict[str, set[str]] = {pool: set() for pool in POOLS}
        self.listings: list[tuple[str, ...]] = []
        """Every sample's listed job ids, both pools (prefill first)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProxyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _states(self, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        out = self.svc.stack.sandbox.ssh(f"squeue -h -t all -j {','.join(ids)} -o '%i %T'").stdout
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                before = self.svc.proxy()
                listed = [job for pool in POOLS for job in before["jobs"][pool]]
                states = self._states(listed)
                after = self.svc.proxy()
            except Exception:  # noqa: BLE001 - the router restarting, or squeue busy: no sample
                time.sleep(0.2)
                continue
            if before["started"] != after["started"]:
                continue
            self.samples += 1
            self.listings.append(tuple(listed))
            for pool in POOLS:
                self.seen[pool].update(before["jobs"][pool])
                if len(before["jobs"][pool]) < self.min_ready.get(pool, 0):
                    self.violations.append(f"{pool} listed only {before['jobs'][pool]}")
            for job in listed:
                if states.get(job) != "RUNNING":
                    self.violations.append(f"the proxy listed job {job} while it was {states.get(job, 'gone')}")
            time.sleep(0.3)
