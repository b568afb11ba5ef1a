"""A KV cache layout change replaces prefill and decode together on the K8s sandbox (issue 14
part 3), through the real CLI, Pulumi and API server.

A thread polls the stack's pods while apply runs; old and new pods of the pools must never
exist at the same moment (terminating ones count: they may still serve), since an old prefill
handing KV cache to a new decode is what the plan promises cannot happen.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from k8s_sandbox import K8sStack, prepare_cluster_for

from tests_support import ROOT

pytestmark = pytest.mark.k8s_e2e

SANDBOX_DISAGG = ROOT / "stacks" / "sandbox" / "k8s-sglang-disagg.yaml"
POOLS = ("prefill", "decode")
REASON = "prefill: --page-size 1 -> 32; decode: --page-size 1 -> 32"


def pool_pods(stack: K8sStack) -> dict[str, str]:
    """uid -> pod name of every prefill/decode pod, terminating ones included."""
    return {p["metadata"]["uid"]: p["metadata"]["name"] for p in stack.objects("Pod") if p["metadata"]["labels"].get("madinfra.io/role") in POOLS}


class Generations:
    """Polls the pools' pods and records every poll in which pods of ``old`` and pods not in
    ``old`` existed together."""

    def __init__(self, stack: K8sStack, old: set[str]):
        self.stack, self.old = stack, old
        self.mixed: list[list[str]] = []
        self.polls = 0
        self.saw_new = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Generations":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            pods = pool_pods(self.stack)
            self.polls += 1
            new = set(pods) - self.old
            self.saw_new = self.saw_new or bool(new)
            if new and set(pods) & self.old:
                self.mixed.append(sorted(pods.values()))
            time.sleep(0.2)


def with_args(spec: dict[str, Any], args: list[str], **k8s: Any) -> dict[str, Any]:
    return {**spec, "model": {**spec["model"], "args": args}, "k8s": {**spec["k8s"], **k8s}}


def test_a_page_size_change_replaces_both_pools_together_and_a_failure_rolls_both_back(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write_from(SANDBOX_DISAGG, ready_timeout=8)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    good = stack.spec
    first = pool_pods(stack)
    assert len(first) == 4

    stack.write(with_args(good, ["--page-size", "32"]))
    planned = json.loads(stack.plan("--json").stdout)
    lines = {p["pool"]: p["lines"] for p in planned["rollouts"]}
    how = "old replicas stop first: a StatefulSet's new pods take the old pods' names"
    assert lines == {
        "prefill": [f"-/+ prefill[0] replaced together with the other pool ({REASON}); {how}"],
        "decode": [f"-/+ decode[0..2] replaced together with the other pool ({REASON}); {how}"],
    }, lines
    assert any(w.startswith(f"prefill and decode are replaced together because their KV cache layout changes ({REASON})") for w in planned["warnings"])
    prefill_sts = next(c["address"] for c in planned["changes"] if c["address"].endswith("-prefill"))
    split = stack.cli("plan", str(stack.path), "--only", prefill_sts, check=False)
    assert split.returncode != 0 and "would change one disaggregated pool without the other" in split.stdout + split.stderr
    assert "Traceback" not in split.stdout + split.stderr

    with Generations(stack, set(first)) as watch:
        stack.apply()
    stack.assert_plan_empty()
    second = pool_pods(stack)
    assert len(second) == 4 and not set(second) & set(first), "every pod of both pools was replaced"
    assert watch.polls > 5 and watch.saw_new and watch.mixed == [], watch.mixed[:3]
    sts = {s["metadata"]["name"]: s for s in stack.objects("StatefulSet")}
    assert all("--page-size 32" in " ".join(s["spec"]["template"]["spec"]["containers"][0]["command"]) for s in sts.values())
    assert {s["spec"]["updateStrategy"]["rollingUpdate"]["partition"] for s in sts.values()} == {0}

    # New pods that can never be scheduled: both pools go back to the previous template together.
    stack.write(with_args(good, ["--page-size", "64"], cpu="1000", cpu_limit="1000"))
    with Generations(stack, set(second)) as failing:
        failed = stack.cli("apply", str(stack.path), "--yes", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1 and "Traceback" not in output, output
    assert "rolled back: prefill and decode run their previous template again" in output, output
    assert failing.mixed == [], failing.mixed[:3]
    back = {s["metadata"]["name"]: s for s in stack.objects("StatefulSet")}
    assert all("--page-size 32" in " ".join(s["spec"]["template"]["spec"]["containers"][0]["command"]) for s in back.values())
    assert len([p for p in stack.objects("Pod") if p["metadata"]["labels"].get("madinfra.io/role") in POOLS and not p["metadata"].get("deletionTimestamp")]) == 4
    stack.write(with_args(good, ["--page-size", "32"]))
    stack.assert_plan_empty()
