"""Plan cost as the stack grows: nnodes 1, 10, 100, 1000, both targets, training and sglang-disagg.

Every stage of `madinfra plan` except the live read, with the real code: config.resolve (the
stack model), launchers.compile, the real providers' desired() (madinfra_slurm /
madinfra_kubernetes, built with ProviderOptions, no cluster) and the real planner
(madinfra.planner.plan) against two live sets: an identical one (no changes) and one with a single
field changed. The live read itself is counted in plan_round_trips.py.

Run: python benchmarks/plan_scaling.py [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

from _common import header, median_time, ms, node_counts, stack_dict, table

LAUNCHERS = ("torchrun", "sglang-disagg")
TARGETS = ("slurm", "k8s")
BUDGET_S = 1.0


def provider_for(target: str) -> Any:
    from madinfra.resources import ProviderOptions

    if target == "slurm":
        from madinfra_slurm import SlurmProvider

        return SlurmProvider(ProviderOptions())
    from madinfra_kubernetes import KubernetesProvider

    return KubernetesProvider(ProviderOptions())


def as_live(resources: list[Any]) -> list[Any]:
    """What a read of a cluster running exactly ``resources`` returns (ids assigned, running)."""
    live = []
    for index, resource in enumerate(resources):
        twin = copy.deepcopy(resource)
        twin.provider_id = str(1000 + index)
        twin.status = {"state": "RUNNING", "running": True}
        live.append(twin)
    return live


def with_one_change(live: list[Any], target: str) -> tuple[list[Any], str]:
    """The same live set with one field of one workload changed (the time limit on SLURM, the
    container image of the first workload on Kubernetes)."""
    changed = copy.deepcopy(live)
    workload = next(r for r in changed if r.workload)
    if target == "slurm":
        workload.spec["time"] = "00:30:00"
        return changed, f"{workload.id} time"
    containers = workload.spec["spec"]["template"]["spec"]["containers"]
    containers[0]["image"] = "rocm/pytorch:older"
    return changed, f"{workload.id} image"


def spec_bytes(resources: list[Any]) -> int:
    from madinfra.planner import canonical_json

    return sum(len(canonical_json(r.spec)) for r in resources)


def measure(target: str, launcher: str, nnodes: int, repeats: int) -> dict[str, Any]:
    from madinfra.config import resolve
    from madinfra.launchers import compile as compile_launch
    from madinfra.planner import plan

    provider = provider_for(target)
    raw = stack_dict(target, launcher, nnodes)
    spec = resolve(copy.deepcopy(raw))
    launch = compile_launch(spec)
    desired = provider.desired(spec, launch)
    live_same = as_live(desired)
    live_changed, what = with_one_change(live_same, target)

    same = plan(desired, live_same, None, provider.update_rules, stack=spec.name)
    changed = plan(desired, live_changed, None, provider.update_rules, stack=spec.name)
    assert not same.changes, f"{target}/{launcher}/{nnodes}: identical live set planned changes {[c.resource_id for c in same.changes]}"
    assert len(changed.changes) == 1, f"{target}/{launcher}/{nnodes}: one changed field planned {len(changed.changes)} changes"

    row = {
        "target": target,
        "launcher": launcher,
        "nnodes": nnodes,
        "resources": len(desired),
        "spec_kb": spec_bytes(desired) / 1024,
        "resolve": median_time(lambda: resolve(copy.deepcopy(raw)), repeats),
        "compile": median_time(lambda: compile_launch(spec), repeats),
        "desired": median_time(lambda: provider.desired(spec, launch), repeats),
        "plan_same": median_time(lambda: plan(desired, live_same, None, provider.update_rules, stack=spec.name), repeats),
        "plan_changed": median_time(lambda: plan(desired, live_changed, None, provider.update_rules, stack=spec.name), repeats),
        "action": f"{changed.changes[0].action} ({what})",
    }
    row["total"] = row["resolve"] + row["compile"] + row["desired"] + row["plan_changed"]
    provider.close()
    return row


def cold_first_plan(target: str, launcher: str, nnodes: int) -> float:
    """One plan in this process before any warm-up: includes importing the planner's deepdiff and
    building nothing twice. Called first, so the figure is what a fresh `madinfra plan` pays."""
    start = time.perf_counter()
    from madinfra.config import resolve
    from madinfra.launchers import compile as compile_launch
    from madinfra.planner import plan

    provider = provider_for(target)
    spec = resolve(stack_dict(target, launcher, nnodes))
    desired = provider.desired(spec, compile_launch(spec))
    live, _ = with_one_change(as_live(desired), target)
    plan(desired, live, None, provider.update_rules, stack=spec.name)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per stage (median reported)")
    args = parser.parse_args()

    cold = cold_first_plan("k8s", "sglang-disagg", 1000)
    header("Plan cost as the stack grows (no cluster: resolve + compile + desired + planner)")
    rows = [measure(t, l, n, args.repeats) for t in TARGETS for l in LAUNCHERS for n in node_counts(l)]

    print(f"Median of {args.repeats} runs per stage, milliseconds. plan = planner vs an identical live set /")
    print("vs a live set with one field changed; total = resolve + compile + desired + plan(changed).\n")
    print(
        table(
            ["target", "launcher", "nnodes", "resources", "spec KiB", "resolve ms", "compile ms", "desired ms", "plan same ms", "plan 1 change ms", "total ms", "planned action"],
            [
                [r["target"], r["launcher"], r["nnodes"], r["resources"], r["spec_kb"], ms(r["resolve"]), ms(r["compile"]), ms(r["desired"]),
                 ms(r["plan_same"]), ms(r["plan_changed"]), ms(r["total"]), r["action"]]
                for r in rows
            ],
        )
    )

    print("\nGrowth: total time and spec size at the largest stack relative to the smallest")
    print("(linear growth in nodes would make the time ratio about the node ratio).\n")
    growth = []
    for target in TARGETS:
        for launcher in LAUNCHERS:
            series = [r for r in rows if r["target"] == target and r["launcher"] == launcher]
            small, large = series[0], series[-1]
            growth.append([
                target,
                launcher,
                f"{small['nnodes']} -> {large['nnodes']}",
                f"{large['nnodes'] / small['nnodes']:.0f}x",
                f"{large['total'] / small['total']:.2f}x",
                f"{large['spec_kb'] / small['spec_kb']:.2f}x",
                ms(large["total"]),
                "yes" if large["total"] < BUDGET_S else "NO",
            ])
    print(table(["target", "launcher", "nnodes", "node ratio", "time ratio", "spec size ratio", "total ms at largest", "under 1 s"], growth))
    print(f"\nFirst plan in a fresh process (k8s sglang-disagg, 1000 nodes, imports of config, launchers, provider, planner and deepdiff included): {ms(cold):.0f} ms")


if __name__ == "__main__":
    main()
