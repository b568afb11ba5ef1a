"""Pool rollout planning (pure): free GPUs per node, per-replica plan lines, the proxy's list."""

from __future__ import annotations

import pytest

from madinfra.config import resolve
from madinfra.config.schema import Toleration
from madinfra.errors import ProviderError
from madinfra.launchers import compile
from madinfra.planner import plan
from madinfra.resources import ProviderOptions
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.apiserver import ApiError
from madinfra_kubernetes.gpu_room import FreeGpus, free_per_node, pod_gpus
from madinfra_kubernetes.pool_plan import plan_pools
from madinfra_kubernetes.proxy_routes import ROUTE_ANNOTATION, listing, with_listing
from madinfra_kubernetes.rollout import warnings
from madinfra_kubernetes.rules import update_rules

pytestmark = pytest.mark.k8s

GPU = "amd.com/gpu"


def node(name, gpus=8, labels=None, ready="True", unschedulable=False, taints=None, resource=GPU):
    spec = {"unschedulable": True} if unschedulable else {}
    if taints:
        spec["taints"] = taints
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": {"allocatable": {resource: str(gpus), "cpu": "128"}, "conditions": [{"type": "Ready", "status": ready}]},
    }


def pod(node_name, gpus, phase="Running", init=0):
    spec = {"nodeName": node_name, "containers": [{"resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}}}]}
    if init:
        spec["initContainers"] = [{"resources": {"limits": {GPU: str(init)}}}]
    return {"spec": spec, "status": {"phase": phase}}


def test_free_gpus_count_only_nodes_the_stack_may_use_minus_what_running_pods_hold():
    nodes = [
        node("a"),
        node("b", labels={"pool": "x"}),
        node("down", ready="False"),
        node("cordoned", unschedulable=True),
        node("tainted", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
        node("soft", taints=[{"key": "other", "effect": "PreferNoSchedule"}]),
        node("nv", resource="nvidia.com/gpu"),
    ]
    pods = [pod("a", 4), pod("a", 2, phase="Succeeded"), pod("soft", 8), pod("b", 1, init=3)]
    assert free_per_node(nodes, pods, GPU, {}, []) == {"a": 4, "b": 5, "soft": 0, "nv": 0}
    assert free_per_node(nodes, pods, GPU, {"pool": "x"}, []) == {"b": 5}
    tolerating = [Toleration(key="gpu", operator="Equal", value="yes", effect="NoSchedule")]
    assert free_per_node(nodes, pods, GPU, {}, tolerating)["tainted"] == 8
    assert "tainted" in free_per_node(nodes, pods, GPU, {}, [Toleration(operator="Exists")])
    assert pod_gpus(pod("a", 1, init=3), GPU) == 3


def test_room_is_counted_per_node_not_from_the_total():
    free = FreeGpus({"a": 4, "b": 4, "c": 8, "d": 17})
    assert free.total == 33
    assert free.room_for(8) == 3  # c, and two on d; the 4+4 on a and b make no 8-GPU replica
    assert free.room_for(4) == 2 + 2 + 1 + 1 + 2 - 2 + 2  # 1+1+2+4
    assert free.room_for(0) > 1000


def stack(nnodes=5, image="img:1", **extra):
    return resolve({
        "name": "demo",
        "k8s": {"namespace": "ml", "gpu_count": 8},
        "model": {"image": image, "model_path": "/m"},
        "distributed": {"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": 8},
        **extra,
    })


def resources(spec):
    return KubernetesProvider().desired(spec, compile(spec))


def changes(before, after):
    return plan(resources(after), resources(before), None, update_rules).changes


def lines(rollout_plan):
    return [line for pool in rollout_plan.pools for line in pool.lines()]


def test_a_resize_removes_or_adds_the_highest_replicas_and_leaves_the_others_untouched():
    shrink = plan_pools(stack(nnodes=4), changes(stack(nnodes=5), stack(nnodes=4)), FreeGpus({}).room_for, 0, 32, 24)
    assert lines(shrink) == ["~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)"]
    assert (shrink.gpus_peak, shrink.gpus_free) == (32, 0)
    grow = plan_pools(stack(nnodes=5), changes(stack(nnodes=4), stack(nnodes=5)), FreeGpus({"a": 8}).room_for, 8, 24, 32)
    assert lines(grow) == ["~ decode: 2 -> 3 replicas (replica 2 added; replicas 0-1 untouched)"]
    assert grow.warnings() == []


def test_a_template_change_surges_within_room_else_goes_one_at_a_time():
    rolled = changes(stack(image="img:1"), stack(image="img:2"))
    roomy = plan_pools(stack(image="img:2"), rolled, FreeGpus({"a": 8, "b": 8}).room_for, 16, 32, 32)
    assert lines(roomy) == ["-/+ prefill[0] rolling, surge 1", "-/+ decode[0..2] rolling, surge 1"]
    assert roomy.gpus_peak == 40 and roomy.warnings() == []
    split = plan_pools(stack(image="img:2"), rolled, FreeGpus({"a": 4, "b": 4}).room_for, 8, 32, 32)
    assert lines(split)[1] == "-/+ decode[0..2] rolling, 1 at a time, no surge (8 GPU(s) free, no node has 8 free for a surge replica)"
    assert split.gpus_peak == 32
    assert split.warnings() == ["prefill: rolling its only replica without a surge leaves the pool with no ready replica during apply (8 GPU(s) free, no node has 8 free for a surge replica)"]
    unknown = plan_pools(stack(image="img:2"), rolled, None, None, 32, 32)
    assert lines(unknown)[1] == "-/+ decode[0..2] rolling, 1 at a time, no surge (the cluster's free GPUs are unknown)"


def test_rollout_limits_come_from_the_stack_and_a_plan_that_grows_uses_room_first():
    spec = stack(nnodes=6, image="img:2", service={"rollout": {"max_surge": 2}}, roles={"prefill": {"rollout": {"max_surge": 0, "max_unavailable": 1}}})
    rolled = plan_pools(spec, changes(stack(nnodes=6), spec), FreeGpus({"a": 8, "b": 8, "c": 8}).room_for, 24, 40, 40)
    assert lines(rolled) == ["-/+ prefill[0..1] rolling, 1 at a time, no surge", "-/+ decode[0..2] rolling, surge 2"]
    assert [p.batches() for p in rolled.pools] == [[(0,), (1,)], [(0, 1), (2,)]]
    grown = stack(nnodes=7, image="img:2")  # decode 3 -> 4, and a new image
    both = plan_pools(grown, changes(stack(nnodes=6), grown), FreeGpus({"a": 8}).room_for, 8, 40, 48)
    assert lines(both) == [
        "-/+ prefill[0..1] rolling, 1 at a time, no surge (0 GPU(s) free, no node has 8 free for a surge replica)",
        "~ decode: 3 -> 4 replicas (replica 3 added; replicas 0-2 rolled)",
        "-/+ decode[0..2] rolling, 1 at a time, no surge (0 GPU(s) free, no node has 8 free for a surge replica)",
    ]
    one = stack(nnodes=6, image="img:2")  # prefill 1 -> 2: the added replica serves while 0 rolls
    assert plan_pools(one, changes(stack(nnodes=5), one), FreeGpus({}).room_for, 0, 32, 40).warnings() == []


def test_a_pool_that_cannot_roll_is_refused_in_one_sentence():
    spec = stack(image="img:2", roles={"prefill": {"rollout": {"max_surge": 1, "max_unavailable": 0}}})
    with pytest.raises(ProviderError, match="pool 'prefill' cannot roll: .*roles.prefill.rollout.max_unavailable"):
        plan_pools(spec, changes(stack(), spec), FreeGpus({}).room_for, 0, 32, 32)


def test_pool_updates_are_warned_about_by_the_rollout_plan_not_twice():
    rolled = changes(stack(image="img:1"), stack(image="img:2"))
    assert any("demo-prefill" in w for w in warnings(rolled))
    assert not any("demo-prefill" in w or "demo-decode" in w for w in warnings(rolled, ("prefill", "decode")))


class ForbiddenNodes:
    def request(self, method, path, query=None, body=None, content_type=None):
        raise ApiError(403, "nodes is forbidden")


def test_without_rbac_to_list_nodes_the_plan_says_the_free_gpus_are_unknown():
    spec = stack(image="img:2")
    provider = KubernetesProvider(ProviderOptions(), api=ForbiddenNodes())
    provider.desired(spec, compile(spec))
    result = provider.plan_rollouts(changes(stack(), spec), 32, 32)
    assert result.gpus_free is None and all(p.surge == 0 and p.no_surge_reason == "the cluster's free GPUs are unknown" for p in result.pools)


def test_the_proxy_list_of_one_pool_is_rewritten_and_the_others_kept():
    spec = stack()
    proxy = next(r for r in resources(spec) if r.id == "k8s/Deployment/demo-proxy").spec
    assert listing(proxy, "demo-decode") == [0, 1, 2] and listing(proxy, "demo-prefill") == [0]
    routed = with_listing(proxy, "demo-decode", [0, 1, 3], "surge")
    assert listing(routed, "demo-decode") == [0, 1, 3] and listing(routed, "demo-prefill") == [0]
    assert routed["metadata"]["annotations"][ROUTE_ANNOTATION] == "surge"
    assert "annotations" not in routed["spec"]["template"]["metadata"]
    assert with_listing(routed, "demo-decode", [0, 1, 2], None)["spec"] == proxy["spec"]
    assert with_listing(routed, "demo-decode", [0, 1, 2], None)["metadata"].get("annotations", {}).get(ROUTE_ANNOTATION) is None
    assert listing(proxy, "demo-other") is None
