"""Disaggregated SGLang on the K8s sandbox: destroy order, rollout order across pools, a pool that
never gets ready (with --no-rollback). Resizes and replica-by-replica rolls are in
test_k8s_e2e_rollout.py."""

from __future__ import annotations

import json

import pytest
from k8s_sandbox import K8sStack, prepare_cluster_for
from tests_support import ROOT

pytestmark = pytest.mark.k8s_e2e

DISAGG = ROOT / "stacks" / "k8s" / "sglang-disagg.yaml"


def test_destroy_goes_in_reverse_rollout_order_found_from_the_live_objects(k8s_stack: K8sStack) -> None:
    """Live objects carry the rollout order (an annotation, not the pod template), so a destroy
    planned from the cluster alone stops the proxy first and the pools in reverse order."""
    stack = k8s_stack
    stack.write_from(DISAGG)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    elsewhere = stack.workdir / "elsewhere"
    elsewhere.mkdir()
    planned = json.loads(stack.cli("plan", str(stack.path), "--destroy", "--json", cwd=elsewhere).stdout)
    order = [c["address"] for c in planned["changes"]]
    assert all(c["action"] == "delete" for c in planned["changes"])
    name = stack.name
    proxy, decode, prefill = (f"k8s/Deployment/{name}-proxy", f"k8s/StatefulSet/{name}-decode", f"k8s/StatefulSet/{name}-prefill")
    assert order.index(proxy) < order.index(decode) < order.index(prefill) < order.index(f"k8s/ConfigMap/{name}-topology")


def test_a_new_image_rolls_prefill_then_decode_then_the_proxy_each_ready_before_the_next(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write_from(DISAGG)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    stack.write({**stack.spec, "model": {**stack.spec["model"], "image": "rocm/sgl-dev:v2"}})
    applied = stack.apply()
    lines = applied.stdout.splitlines()

    def first(rid_suffix: str, words: str) -> int:
        return next(i for i, line in enumerate(lines) if f"-{rid_suffix}:" in line and words in line)

    assert first("prefill", "ready") < first("decode", "update started") < first("decode", "ready") < first("proxy", "update started"), applied.stdout
    images = {o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["image"] for o in stack.objects("StatefulSet") + stack.objects("Deployment")}
    assert set(images.values()) == {"rocm/sgl-dev:v2"}
    stack.assert_plan_empty()


def test_a_pool_that_never_gets_ready_stops_the_rollout_before_the_next_pool(k8s_stack: K8sStack) -> None:
    """With --no-rollback the failed pool stays where it stopped (new template, its pod pending);
    the pools after it and the proxy are not touched. (Without it the pool is rolled back: see
    test_k8s_e2e_rollout.py.)"""
    stack = k8s_stack
    stack.write_from(DISAGG, ready_timeout=10)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    broken = {**stack.spec, "model": {**stack.spec["model"], "image": "rocm/sgl-dev:v2"}, "k8s": {**stack.spec["k8s"], "node_selector": {"no-such-node": "true"}}}
    stack.write(broken)
    planned = stack.plan().stdout
    assert "-/+ prefill[0] rolling, 1 at a time, no surge (0 GPU(s) free, no node has 8 free for a surge replica)" in planned, planned
    failed = stack.cli("apply", str(stack.path), "--yes", "--no-rollback", check=False)
    assert failed.returncode == 1 and "-prefill was not ready after 10 s" in failed.stderr and "stopped there (--no-rollback)" in failed.stderr, failed.stdout + failed.stderr
    assert "rolled back" not in failed.stdout + failed.stderr
    pending = [p for p in stack.objects("Pod") if p["metadata"]["labels"].get("madinfra.io/role") == "prefill"]
    assert [p["status"].get("phase") for p in pending] == ["Pending"], "the failed pod is left where it stopped"
    images = {o["metadata"]["labels"]["madinfra.io/role"]: o["spec"]["template"]["spec"]["containers"][0]["image"] for o in stack.objects("StatefulSet") + stack.objects("Deployment")}
    assert images == {"prefill": "rocm/sgl-dev:v2", "decode": "rocm/sgl-dev:latest", "proxy": "rocm/sgl-dev:latest"}, images
    replanned = stack.plan()
    assert "-decode will be updated in-place" in replanned.stdout and "-proxy will be updated in-place" in replanned.stdout, replanned.stdout
