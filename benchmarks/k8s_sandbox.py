"""Kubernetes on the real K8s sandbox: `madinfra plan` next to `pulumi preview` of the same
stack, API round trips per plan, and the latency of a decode resize.

For each size of a disaggregated SGLang stack (5, 50 and 500 nodes; the pods ask for no GPU and a
little CPU so 500 of them fit on the sandbox's fake nodes) the stack is applied once, then:
- `madinfra plan` as a user runs it (a fresh `madinfra plan FILE` process, wall time) and the plan
  computation inside one process (compute_plan, with the API requests it makes counted);
- `pulumi preview` of the same resources through the same Automation API stack and Pulumi state
  madinfra uses (a refreshing preview, since Pulumi's state is otherwise blind to the cluster).
Then, on the 5-node stack, `madinfra apply` of a decode resize (3 -> 2 decode pods) and back,
with the time spent in each Pulumi call.

Needs `scripts/k8s-sandbox up` and its binaries on PATH (`eval "$(scripts/k8s-sandbox env)"`).
Run: python benchmarks/k8s_sandbox.py [--repeats 5] [--sizes 5,50,500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, header, ms, table

SANDBOX = Path(os.environ.get("MADINFRA_K8S_SANDBOX_DIR", "/tmp/madinfra-k8s-sandbox"))


def stack_spec(name: str, nnodes: int) -> dict[str, Any]:
    return {
        "name": name,
        "k8s": {"namespace": "default", "gpu_count": 0, "cpu": "100m", "memory": "64Mi", "cpu_limit": "1", "memory_limit": "1Gi", "ready_timeout": 600},
        "model": {"image": "rocm/sgl-dev:latest", "model_path": "/models/m"},
        "distributed": {"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": 1, "master_port": 8000},
        "service": {"health_check": {"http_path": "/health", "timeout": 600}},
    }


def cli(workdir: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "madinfra", *args], cwd=workdir, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start, proc


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def in_process_plan(stack_file: Path, workdir: Path) -> tuple[float, int, int]:
    """compute_plan in this process: seconds, API requests, changes."""
    from madinfra.engine.pipeline import compute_plan, open_stack

    ctx = open_stack(stack_file, workdir / ".madinfra" / "state")
    try:
        api = ctx.provider.api()
        before = api.calls
        start = time.perf_counter()
        plan = compute_plan(ctx.spec, ctx.provider, ctx.store.load(ctx.name))
        return time.perf_counter() - start, api.calls - before, len(plan.changes)
    finally:
        ctx.close()


def pulumi_preview(stack_file: Path, workdir: Path) -> float:
    """A refreshing `pulumi preview` of the stack's resources, as madinfra's program declares them."""
    from madinfra.engine.pipeline import desired_resources, open_stack
    from madinfra_kubernetes import automation
    from madinfra_kubernetes.program import KubeSettings, build_program

    ctx = open_stack(stack_file, workdir / ".madinfra" / "state")
    try:
        resources = desired_resources(ctx.spec, ctx.provider)
        target = ctx.provider.kube_target()
        program = build_program(resources, KubeSettings(kubeconfig=target.kubeconfig, context=target.context), {})
        stack = automation.select_stack(ctx.name, workdir / ".madinfra", program)
        start = time.perf_counter()
        stack.preview(refresh=True, color="never", suppress_outputs=True, suppress_progress=True)
        return time.perf_counter() - start
    finally:
        ctx.close()


def fresh_pulumi_preview(stack_file: Path, workdir: Path) -> float:
    """The same preview in a new process, as a user's `pulumi preview` of a Python program pays
    for starting Python and importing pulumi and pulumi_kubernetes (wall time of the process)."""
    code = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'benchmarks')!r}]; from pathlib import Path; from k8s_sandbox import pulumi_preview; pulumi_preview(Path({str(stack_file)!r}), Path({str(workdir)!r}))"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, capture_output=True)
    return time.perf_counter() - start


def plan_vs_preview(sizes: list[int], repeats: int, root: Path) -> list[list[Any]]:
    rows = []
    for nnodes in sizes:
        name = f"bench{uuid.uuid4().hex[:5]}-{nnodes}"
        workdir = root / name
        workdir.mkdir()
        stack_file = workdir / "stack.yaml"
        stack_file.write_text(yaml.safe_dump(stack_spec(name, nnodes)))
        applied, proc = cli(workdir, "apply", str(stack_file), "--yes")
        if proc.returncode != 0:
            print(f"apply of {nnodes} nodes failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            continue
        try:
            cli_times = [cli(workdir, "plan", str(stack_file), "--detailed-exitcode")[0] for _ in range(repeats)]
            inner = [in_process_plan(stack_file, workdir) for _ in range(repeats)]
            previews = [pulumi_preview(stack_file, workdir) for _ in range(repeats)]
            fresh = [fresh_pulumi_preview(stack_file, workdir) for _ in range(repeats)]
            plan_s, inner_s, preview_s, fresh_s = median(cli_times), median([i[0] for i in inner]), median(previews), median(fresh)
            rows.append([nnodes, ms(applied), ms(plan_s), ms(fresh_s), f"{fresh_s / plan_s:.1f}x", ms(inner_s), ms(preview_s), f"{preview_s / inner_s:.0f}x", inner[0][1], inner[0][2]])
        finally:
            cli(workdir, "destroy", str(stack_file), "--yes")
    return rows


def resize_latency(root: Path, rounds: int) -> list[list[Any]]:
    """Decode 3 -> 2 and back on the 5-node stack, timing each Pulumi call inside the apply."""
    from madinfra.engine.pipeline import compute_plan, open_stack, rules_for
    from madinfra.engine.run import apply_plan
    from madinfra_kubernetes import automation

    spent: dict[str, list[float]] = {}
    originals = {name: getattr(automation, name) for name in ("refresh", "preview", "up")}

    def timed(name: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                spent.setdefault(name, []).append(time.perf_counter() - start)

        return call

    name = f"bench{uuid.uuid4().hex[:5]}-resize"
    workdir = root / name
    workdir.mkdir()
    stack_file = workdir / "stack.yaml"
    stack_file.write_text(yaml.safe_dump(stack_spec(name, 5)))
    cli(workdir, "apply", str(stack_file), "--yes")
    rows = []
    for name_ in ("refresh", "preview", "up"):
        setattr(automation, name_, timed(name_))
    try:
        for _ in range(rounds):
            for nnodes, label in ((4, "decode 3 -> 2"), (5, "decode 2 -> 3")):
                stack_file.write_text(yaml.safe_dump(stack_spec(name, nnodes)))
                spent.clear()
                ctx = open_stack(stack_file, workdir / ".madinfra" / "state")
                try:
                    state = ctx.store.load_or_new(ctx.name)
                    start = time.perf_counter()
                    plan = compute_plan(ctx.spec, ctx.provider, state)
                    result = apply_plan(plan, ctx.provider, ctx.store, state, rules_for(ctx.provider), lambda rid, msg: None)
                    total = time.perf_counter() - start
                finally:
                    ctx.close()
                pulumi = sum(sum(v) for v in spent.values())
                rows.append([label, len(plan.changes), "ok" if result.ok else "FAILED", ms(total), ms(sum(spent.get("refresh", []))), ms(sum(spent.get("preview", []))), ms(sum(spent.get("up", []))), f"{100 * pulumi / total:.0f}%"])
    finally:
        for name_, fn in originals.items():
            setattr(automation, name_, fn)
        cli(workdir, "destroy", str(stack_file), "--yes")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="5,50,500")
    args = parser.parse_args()
    if not (SANDBOX / "kubeconfig").is_file() or shutil.which("pulumi") is None:
        print("The K8s sandbox is not up or pulumi is not on PATH: run `bash scripts/k8s-sandbox up` and `eval \"$(bash scripts/k8s-sandbox env)\"`.")
        return
    os.environ.setdefault("KUBECONFIG", str(SANDBOX / "kubeconfig"))
    header("Kubernetes on the K8s sandbox: madinfra plan vs pulumi preview, resize latency")
    with tempfile.TemporaryDirectory(prefix="madinfra-k8s-bench-") as tmp:
        root = Path(tmp)
        rows = plan_vs_preview([int(s) for s in args.sizes.split(",")], args.repeats, root)
        print(f"## plan vs preview (disaggregated SGLang, median of {args.repeats}; the stack applied, so both find no change)\n")
        print(table(["nnodes", "apply ms (first)", "madinfra plan (process) ms", "pulumi preview (process) ms", "ratio", "plan in process ms", "pulumi preview via Automation API ms", "ratio", "API requests per plan", "changes"], rows))
        print("\n## decode resize on the 5-node stack (in process: plan + apply, Pulumi calls timed)\n")
        print(table(["change", "planned changes", "result", "total ms", "pulumi refresh ms", "pulumi preview ms", "pulumi up ms", "share in Pulumi"], resize_latency(root, args.rounds)))


if __name__ == "__main__":
    main()
