"""Pods no node could hold are named in the plan; one Nodes list serves that check and the pools'
surge room; a KV cache layout change makes the pools' rolls one step together (no cluster)."""

from __future__ import annotations

from madinfra.config import resolve
from madinfra.config.schema import Toleration
from madinfra.launchers import compile
from madinfra.planner import plan
from madinfra.resources import ProviderOptions
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.gpu_room import FreeGpus
from madinfra_kubernetes.node_fit import largest_node, starting_pods, warnings
from madinfra_kubernetes.pool_plan import plan_pools
from madinfra_kubernetes.rules import update_rules

GPU = "amd.com/gpu"


def node(name: str, gpus: int, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None) -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or []},
        "status": {"allocatable": {GPU: str(gpus)}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def stack(nnodes: int = 5, gpus: int = 8, args: list[str] | None = None, **k8s: object):
    return resolve({
        "name": "demo",
        "k8s": {"namespace": "ml", "gpu_count": gpus, **k8s},
        "model": {"image": "img:1", "model_path": "/m", **({"args": args} if args else {})},
        "distributed": {"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": gpus},
    })


def changes(before, after):
    provider = KubernetesProvider()
    return plan(provider.desired(after, compile(after)), provider.desired(before, compile(before)), None, update_rules).changes


def test_the_largest_node_counts_only_nodes_the_pods_may_use() -> None:
    nodes = [
        node("small", 4, {"pool": "gpu"}),
        node("big-tainted", 16, {"pool": "gpu"}, [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        node("big-elsewhere", 16, {"pool": "cpu"}),
    ]
    assert largest_node(nodes, GPU, {"pool": "gpu"}, []) == 4
    assert largest_node(nodes, GPU, {"pool": "gpu"}, [Toleration(key="dedicated", operator="Exists")]) == 16
    assert largest_node(nodes, GPU, {}, []) == 16


def test_a_pod_larger_than_every_node_is_a_warning_naming_the_workload_and_the_fix() -> None:
    created = changes(stack(nnodes=3), stack(nnodes=3, gpus=16))
    pods = starting_pods(created)
    assert pods == {"k8s/StatefulSet/demo-decode": 16, "k8s/StatefulSet/demo-prefill": 16}
    found = warnings(pods, 8, GPU, "in the cluster")
    assert found[0].startswith("k8s/StatefulSet/demo-decode asks for 16 amd.com/gpu per pod (k8s.gpu_count), but of the nodes in the cluster, the largest has 8")
    assert warnings(pods, 16, GPU, "in the cluster") == []
    assert "none has any amd.com/gpu" in warnings(pods, 0, GPU, "in the cluster")[0]


class CountingApi:
    """Answers cluster-wide Node and Pod lists, counting them."""

    def __init__(self, nodes: list[dict]):
        self.nodes, self.calls = nodes, []

    def request(self, method, path, query=None, body=None, content_type=None):
        self.calls.append(path)
        return {"items": self.nodes if path.endswith("/nodes") else []}


def test_one_nodes_list_serves_the_node_check_and_the_pools_surge_room() -> None:
    before, after = stack(), stack(gpus=16)
    api = CountingApi([node(f"n{i}", 8) for i in range(6)])
    provider = KubernetesProvider(ProviderOptions(), api=api)
    provider.desired(after, compile(after))
    planned = changes(before, after)
    notes = provider.plan_warnings(planned)
    provider.plan_rollouts(planned, 32, 64)
    assert any("asks for 16 amd.com/gpu per pod" in n for n in notes)
    assert [c for c in api.calls if c.endswith("/nodes")] == ["/api/v1/nodes"]


def test_a_kv_layout_change_rolls_both_pools_in_one_step_together() -> None:
    before, after = stack(args=["--page-size", "16"]), stack(args=["--page-size", "32"])
    rolled = plan_pools(after, changes(before, after), FreeGpus({"a": 8, "b": 8}).room_for, 16, 32, 32)
    reason = "prefill: --page-size 16 -> 32; decode: --page-size 16 -> 32"
    how = "old replicas stop first: a StatefulSet's new pods take the old pods' names"
    assert [line for pool in rolled.pools for line in pool.lines()] == [
        f"-/+ prefill[0] replaced together with the other pool ({reason}); {how}",
        f"-/+ decode[0..2] replaced together with the other pool ({reason}); {how}",
    ]
    assert all(p.surge == 0 and p.batches() == [tuple(p.rolled)] for p in rolled.pools)
    image_only = stack(args=["--page-size", "16"])
    image_only = image_only.model_copy(update={"model": image_only.model.model_copy(update={"image": "img:2"})})
    normal = plan_pools(image_only, changes(before, image_only), FreeGpus({"a": 8, "b": 8}).room_for, 16, 32, 32)
    assert all(p.together is None for p in normal.pools)
