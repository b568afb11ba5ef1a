"""How long a disaggregated pool's changes take on the K8s sandbox, and whether a pool ever has
no ready replica on the way.

One disaggregated SGLang stack (1 proxy + 1 prefill + 3 decode pods, 8 fake AMD GPUs per server
pod, as stacks/sandbox/k8s-sglang-disagg.yaml) goes through, with the real ``madinfra apply``:
decode 3 -> 2, decode 2 -> 3, a new image rolled with surge (the cluster has room), and a new image
rolled without surge (``service.rollout.max_surge: 0``), and a ``--page-size`` change (a KV cache
layout change: both pools are replaced together, so their zero-ready time is the downtime the
plan warns about, and the proxy names absent pods meanwhile). While each apply runs, a thread lists the
stack's pods every 0.1 s and records:

- *serving after*: seconds from apply start until the new topology serves, i.e. every proxy pod
  (terminating ones too) names exactly the final pool pods, and each of those is Ready and runs
  the final image;
- *zero-ready s*: for how long (summed poll intervals) prefill or decode had no Ready pod (goal 0;
  a one-replica pool rolled without surge cannot reach it, and the plan warns so);
- *proxy named a missing pod*: polls where some proxy pod named a pool pod that was absent, not
  ready or terminating.

Needs `scripts/k8s-sandbox up` and its binaries on PATH (`eval "$(scripts/k8s-sandbox env)"`).
Run: python benchmarks/k8s_rollout.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, header, table

SANDBOX = Path(os.environ.get("MADINFRA_K8S_SANDBOX_DIR", "/tmp/madinfra-k8s-sandbox"))
URL = re.compile(r"http://([a-z0-9-]+-(?:prefill|decode)-\d+)\.")
POLL = 0.1


def stack_spec(name: str, nnodes: int, image: str, max_surge: int = 1, args: list[str] | None = None) -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "stacks" / "sandbox" / "k8s-sglang-disagg.yaml").read_text())
    spec["name"] = name
    spec["model"]["image"] = image
    if args:
        spec["model"]["args"] = args
    spec["distributed"]["nnodes"] = nnodes
    spec["service"]["rollout"] = {"max_surge": max_surge, "max_unavailable": 1}
    return spec


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _role(pod: dict[str, Any]) -> str:
    return pod["metadata"]["labels"].get("madinfra.io/role", "")


@dataclass
class Watcher:
    """Polls the stack's pods while one apply runs (see the module docstring)."""

    api: Any
    stack: str
    final: set[str]
    image: str
    start: float = field(default_factory=time.perf_counter)
    serving_at: float | None = None
    zero: dict[str, float] = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0})
    bad_polls: int = 0
    polls: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from madinfra_kubernetes import client as kube

        last = time.perf_counter()
        while not self.stop.is_set():
            pods = kube.list_objects(self.api, "Pod", ["default"], f"madinfra.io/stack={self.stack}")
            now = time.perf_counter()
            self.polls += 1
            by_name = {p["metadata"]["name"]: p for p in pods}
            for pool in self.zero:
                if not any(_role(p) == pool and _ready(p) for p in pods):
                    self.zero[pool] += now - last
            proxies = [p for p in pods if _role(p) == "proxy"]
            named = [set(URL.findall(" ".join(w for c in p["spec"]["containers"] for w in c.get("command") or []))) for p in proxies]
            if any(by_name.get(n) is None or not _ready(by_name[n]) for names in named for n in names):
                self.bad_polls += 1
            serving = (
                proxies
                and all(names == self.final for names in named)
                and all(by_name.get(n) is not None and _ready(by_name[n]) and by_name[n]["spec"]["containers"][0]["image"] == self.image for n in self.final)
            )
            if serving and self.serving_at is None:
                self.serving_at = now - self.start
            elif not serving:
                self.serving_at = None
            last = now
            time.sleep(POLL)


def apply(workdir: Path, stack_file: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "madinfra", "apply", str(stack_file), "--yes"], cwd=workdir, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, proc


def pool_lines(workdir: Path, stack_file: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "madinfra", "plan", str(stack_file)], cwd=workdir, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = proc.stdout.splitlines()
    if "Pools:" not in lines:
        return ""
    out = []
    for line in lines[lines.index("Pools:") + 1:]:
        if not line.strip():
            break
        out.append(line.strip())
    return "; ".join(out)


def final_pods(name: str, nnodes: int) -> set[str]:
    decode = nnodes - 2  # 1 proxy + 1 prefill (the split for 4-5 nodes)
    return {f"{name}-prefill-0"} | {f"{name}-decode-{i}" for i in range(decode)}


def main() -> None:
    if not (SANDBOX / "kubeconfig").is_file() or shutil.which("pulumi") is None:
        print("The K8s sandbox is not up or pulumi is not on PATH: run `bash scripts/k8s-sandbox up` and `eval \"$(bash scripts/k8s-sandbox env)\"`.")
        return
    os.environ.setdefault("KUBECONFIG", str(SANDBOX / "kubeconfig"))
    from madinfra_kubernetes.client import KubeTarget, api_client

    header("Kubernetes pool rollouts on the K8s sandbox: time to serve the new topology, seconds without a ready replica")
    api = api_client(KubeTarget.choose(None, None, None, None))
    steps = [
        ("decode 3 -> 2", 4, "rocm/sgl-dev:latest", 1),
        ("decode 2 -> 3", 5, "rocm/sgl-dev:latest", 1),
        ("new image, surge 1", 5, "rocm/sgl-dev:v2", 1),
        ("new image, max_surge 0", 5, "rocm/sgl-dev:v3", 0),
        ("--page-size 32: both pools together", 5, "rocm/sgl-dev:v3", 0, ["--page-size", "32"]),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="madinfra-k8s-rollout-") as tmp:
        name = f"bench{uuid.uuid4().hex[:5]}-roll"
        workdir = Path(tmp)
        stack_file = workdir / "stack.yaml"
        stack_file.write_text(yaml.safe_dump(stack_spec(name, 5, "rocm/sgl-dev:latest")))
        seconds, proc = apply(workdir, stack_file)
        if proc.returncode != 0:
            print(f"creating the stack failed: {proc.stderr.strip()[-400:]}")
            return
        rows.append(["create 1+1+3", "", "ok", f"{seconds:.1f}", "", "", ""])
        try:
            for label, nnodes, image, surge, *args in steps:
                stack_file.write_text(yaml.safe_dump(stack_spec(name, nnodes, image, surge, args[0] if args else None)))
                lines = pool_lines(workdir, stack_file)
                watcher = Watcher(api, name, final_pods(name, nnodes), image)
                thread = threading.Thread(target=watcher.run, daemon=True)
                watcher.start = time.perf_counter()
                thread.start()
                seconds, proc = apply(workdir, stack_file)
                time.sleep(1.0)  # let the watcher see the settled state
                watcher.stop.set()
                thread.join(timeout=10)
                serving = f"{watcher.serving_at:.1f}" if watcher.serving_at is not None else "never"
                zero = ", ".join(f"{pool} {value:.1f}" for pool, value in watcher.zero.items())
                rows.append([label, lines, "ok" if proc.returncode == 0 else "FAILED", f"{seconds:.1f}", serving, zero, f"{watcher.bad_polls}/{watcher.polls}"])
        finally:
            subprocess.run([sys.executable, "-m", "madinfra", "destroy", str(stack_file), "--yes"], cwd=workdir, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(table(["step", "plan's pool lines", "result", "apply s", "serving after s", "zero-ready s", "proxy named a missing pod (polls)"], rows))


if __name__ == "__main__":
    main()
