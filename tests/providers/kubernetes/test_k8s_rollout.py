"""Apply steps, restarts and "no ready replica" warnings, from planned changes (pure)."""

from __future__ import annotations

import copy

import pytest
from k8s_support import ROOT, K8S_STACK_FILES, build

from madinfra.config import resolve
from madinfra.engine.pipeline import compute_plan
from madinfra.launchers import compile
from madinfra.planner import plan
from madinfra.resources import Change, ProviderOptions
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.automation import EventRouter
from madinfra_kubernetes.live import to_live_resource
from madinfra_kubernetes.rollout import restarts_pods, steps, warnings
from madinfra_kubernetes.rules import update_rules

pytestmark = pytest.mark.k8s


def stack(launcher="sglang-disagg", nnodes=5, image="img:1", name="demo", **extra):
    return resolve({
        "name": name,
        "k8s": {"namespace": "ml", "gpu_count": 8},
        "model": {"image": image, "model_path": "/m"},
        "distributed": {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": 8},
        **extra,
    })


def resources(spec):
    return KubernetesProvider().desired(spec, compile(spec))


def changes(before, after):
    return plan(resources(after), resources(before), None, update_rules).changes


def ids(groups):
    return [[c.resource_id for c in group] for group in groups]


def test_first_apply_creates_everything_in_one_step():
    created = plan(resources(stack()), [], None, update_rules).changes
    assert ids(steps(created)) == [[c.resource_id for c in created]]
    assert warnings(created) == []


def test_each_changed_workload_ends_a_step_and_a_pure_shrink_goes_last():
    assert ids(steps(changes(stack(image="img:1"), stack(image="img:2")))) == [
        ["k8s/StatefulSet/demo-prefill"],
        ["k8s/StatefulSet/demo-decode"],
        ["k8s/Deployment/demo-proxy"],
    ]
    shrink = changes(stack(nnodes=7), stack(nnodes=6))  # 2/4 -> 2/3
    assert ids(steps(shrink)) == [["k8s/ConfigMap/demo-topology", "k8s/Deployment/demo-proxy"], ["k8s/StatefulSet/demo-decode"]]


def test_deletes_go_first_in_reverse_rollout_order_and_do_not_wait():
    gone = changes(stack("sglang-disagg", 5), stack("vllm", 2))
    assert ids(steps(gone)) == [[
        "k8s/Deployment/demo-proxy",
        "k8s/StatefulSet/demo-decode",
        "k8s/Service/demo-decode",
        "k8s/StatefulSet/demo-prefill",
        "k8s/Service/demo-prefill",
        "k8s/ConfigMap/demo-topology",
        "k8s/Deployment/demo",
        "k8s/Service/demo-api",
    ]]



def test_restarts_only_for_pod_template_changes_of_rolling_workloads():
    image = {c.resource_id: c for c in changes(stack(image="img:1"), stack(image="img:2"))}
    assert all(restarts_pods(c) for c in image.values())
    resize = {c.resource_id: c for c in changes(stack(nnodes=6), stack(nnodes=7))}  # decode 3 -> 4
    assert not restarts_pods(resize["k8s/StatefulSet/demo-decode"]) and not restarts_pods(resize["k8s/ConfigMap/demo-topology"])
    job = changes(stack("torchrun", 2), stack("torchrun", 2, image="img:2"))
    assert [c.action for c in job] == ["replace"] and not restarts_pods(job[0])


@pytest.mark.parametrize(
    "launcher, nnodes, expected",
    [
        ("vllm", 1, ["k8s/Deployment/demo"]),  # one GPU replica, no surge
        ("vllm", 2, []),  # the other replica keeps serving
        ("sglang", 1, ["k8s/StatefulSet/demo"]),
        ("sglang", 2, ["k8s/StatefulSet/demo"]),  # two pods serve one model together
    ],
)
def test_rolling_update_warnings(launcher, nnodes, expected):
    found = warnings(changes(stack(launcher, nnodes, image="img:1"), stack(launcher, nnodes, image="img:2")))
    assert [w.split()[1] for w in found] == expected
    assert all("has no ready replica until it is ready again" in w for w in found)


def test_scaling_to_zero_deleting_and_recreate_strategies_warn():
    (decode,) = [r for r in resources(stack()) if r.id == "k8s/StatefulSet/demo-decode"]
    zero = copy.deepcopy(decode)
    zero.spec["spec"]["replicas"] = 0
    (change,) = plan([zero], [decode], None, update_rules).changes
    assert warnings([change]) == ["scaling k8s/StatefulSet/demo-decode to 0 replicas leaves role 'decode' with no replica"]
    deleted = Change("delete", decode.id, None, decode)
    assert warnings([deleted, Change("update", "k8s/Service/x", None, None)]) == ["destroying k8s/StatefulSet/demo-decode leaves role 'decode' with no replica"]
    assert warnings([deleted]) == [], "destroying the whole stack is what was asked for"
    (server,) = [r for r in resources(stack("vllm", 4)) if r.kind == "k8s/Deployment"]
    recreate, after = copy.deepcopy(server), copy.deepcopy(server)
    for obj in (recreate, after):
        obj.spec["spec"]["strategy"] = {"type": "Recreate"}
    after.spec["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
    (change,) = plan([after], [recreate], None, update_rules).changes
    assert "stops all 4 pod(s) before starting new ones" in warnings([change])[0]
    for surge, unavailable, warned in (("0%", "100%", True), ("0", "25%", False), ("25%", "100%", False)):
        after.spec["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
        (change,) = plan([after], [server], None, update_rules).changes
        assert bool(warnings([change])) is warned, (surge, unavailable)


class FakeNodesApi:
    """Answers the two cluster-wide lists the rollout plan makes (Nodes, Pods)."""

    def __init__(self, nodes, pods=()):
        self.nodes, self.pods, self.calls = list(nodes), list(pods), []

    def request(self, method, path, query=None, body=None, content_type=None):
        self.calls.append(path)
        return {"items": self.nodes if path.endswith("/nodes") else self.pods}


def gpu_node(name, gpus=8, resource="amd.com/gpu"):
    return {"metadata": {"name": name, "labels": {}}, "spec": {}, "status": {"allocatable": {resource: str(gpus)}, "conditions": [{"type": "Ready", "status": "True"}]}}


def test_the_engine_shows_the_providers_warnings_restarts_and_pool_lines():
    """compute_plan calls plan_rollouts, plan_warnings and restarts_on_update when the provider
    has them: with no free GPU the one-replica prefill pool rolls with no ready replica (warned),
    decode rolls one at a time; with room both surge and nothing is warned."""

    class Cluster(KubernetesProvider):
        def __init__(self, live, api):
            super().__init__(ProviderOptions(), api=api)
            self.live = live

        def read(self, stack):
            return self.live

    spec = stack(nnodes=4)
    live = [to_live_resource(r.spec, r.kind.split("/")[1]) for r in resources(spec)]
    full = FakeNodesApi([gpu_node("a", 8), gpu_node("b", 8)], [{"spec": {"nodeName": n, "containers": [{"resources": {"requests": {"amd.com/gpu": "8"}}}]}, "status": {"phase": "Running"}} for n in "ab"])
    result = compute_plan(stack(nnodes=4, image="img:2"), Cluster(live, full), None)
    assert {r.resource_id for r in result.restarts} == {"k8s/StatefulSet/demo-prefill", "k8s/StatefulSet/demo-decode", "k8s/Deployment/demo-proxy"}
    assert len(result.warnings) == 1 and result.warnings[0].startswith("prefill: rolling its only replica without a surge"), result.warnings
    assert [line for pool in result.rollouts for line in pool.lines()] == [
        "-/+ prefill[0] rolling, 1 at a time, no surge (0 GPU(s) free, no node has 8 free for a surge replica)",
        "-/+ decode[0..1] rolling, 1 at a time, no surge (0 GPU(s) free, no node has 8 free for a surge replica)",
    ]
    assert (result.gpus_peak, result.gpus_free) == (24, 0)
    assert full.calls == ["/api/v1/nodes", "/api/v1/pods"], "one cluster-wide list of Nodes and one of Pods"
    roomy = compute_plan(stack(nnodes=4, image="img:2"), Cluster(live, FakeNodesApi([gpu_node("a", 8), gpu_node("b", 8)])), None)
    assert roomy.warnings == [] and [p.surge for p in roomy.rollouts] == [1, 1] and (roomy.gpus_peak, roomy.gpus_free) == (32, 16)


def test_event_router_holds_workloads_until_their_readiness_is_known():
    (decode,) = [r for r in resources(stack()) if r.id == "k8s/StatefulSet/demo-decode"]
    (cm,) = [r for r in resources(stack()) if r.kind == "k8s/ConfigMap"]
    records = []
    router = EventRouter(
        [Change("update", decode.id, decode, decode), Change("update", cm.id, cm, cm)],
        lambda *a: None,
        lambda change, live, error: records.append((change.resource_id, error)),
        to_live_resource,
        hold={decode.id},
    )
    router.report(cm.id, None, None)
    router.report(decode.id, None, None)
    assert records == [(cm.id, None)] and router.unrecorded() == []
    failure = RuntimeError("not ready")
    router.fail([decode.id, cm.id], failure)
    assert records == [(cm.id, None), (decode.id, failure)]
    router.release(decode.id)
    assert len(records) == 2


def test_every_k8s_stack_file_is_covered_by_the_provider_tests():
    """The shared fixture skips files that fail to load; a broken stack must not slip through."""
    assert set((ROOT / "stacks" / "k8s").glob("*.yaml")) <= set(K8S_STACK_FILES)
    for path in (ROOT / "stacks" / "k8s").glob("*.yaml"):
        spec, launch, built = build(path)
        assert spec.target == "k8s" and launch.workload == "service" and built
