"""Free GPUs where a stack's pods may run, per node, from one list of Nodes and one of Pods.

A surge replica needs ``gpus_per_replica`` free GPUs on one node (a pod does not span nodes), so
room is counted per node: ``sum(free // per_replica)``. A node counts only when the stack's pods
could land there: Ready, schedulable, carrying every label of the stack's ``node_selector`` and
with every NoSchedule/NoExecute taint tolerated. Free = the node's allocatable GPUs (of the stack's
``gpu_resource_name``) minus the GPU requests of the non-terminated pods bound to it.

``free_per_node`` is pure (tested on plain node and pod objects); ``read_free`` makes the two
cluster-wide calls and returns None when RBAC forbids listing Nodes or Pods, so the plan can say
the free GPUs are unknown instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from madinfra.config.schema import Toleration

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def _quantity(value: Any) -> int:
    """An extended resource quantity (GPUs are whole numbers: ``"8"``, ``8``)."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def tolerated(taint: dict[str, Any], tolerations: list[Toleration]) -> bool:
    """Kubernetes' toleration match for one taint (empty key with Exists tolerates everything)."""
    for toleration in tolerations:
        if toleration.effect is not None and toleration.effect != taint.get("effect"):
            continue
        if toleration.operator == "Exists" and (toleration.key is None or toleration.key == taint.get("key")):
            return True
        if toleration.operator == "Equal" and toleration.key == taint.get("key") and (toleration.value or "") == (taint.get("value") or ""):
            return True
    return False


def eligible(node: dict[str, Any], node_selector: dict[str, str], tolerations: list[Toleration]) -> bool:
    """The stack's pods could be scheduled on this node now."""
    if not _ready(node) or (node.get("spec") or {}).get("unschedulable"):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in node_selector.items()):
        return False
    taints = (node.get("spec") or {}).get("taints") or []
    return all(tolerated(t, tolerations) for t in taints if t.get("effect") in BLOCKING_EFFECTS)


def pod_gpus(pod: dict[str, Any], resource: str) -> int:
    """GPUs a pod holds: the larger of its containers' sum and any one init container (as the
    scheduler counts), from requests, else limits (extended resources need requests = limits)."""

    def of(container: dict[str, Any]) -> int:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(resource, (resources.get("limits") or {}).get(resource, 0))
        return _quantity(value)

    spec = pod.get("spec") or {}
    regular = sum(of(c) for c in spec.get("containers") or [])
    init = max((of(c) for c in spec.get("initContainers") or []), default=0)
    return max(regular, init)


def free_per_node(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], resource: str, node_selector: dict[str, str], tolerations: list[Toleration]) -> dict[str, int]:
    """Node name -> free GPUs of ``resource``, for the nodes the stack's pods may use."""
    used: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES:
            used[node] = used.get(node, 0) + pod_gpus(pod, resource)
    free = {}
    for node in nodes:
        if not eligible(node, node_selector, tolerations):
            continue
        name = (node.get("metadata") or {}).get("name", "")
        allocatable = _quantity(((node.get("status") or {}).get("allocatable") or {}).get(resource, 0))
        free[name] = max(0, allocatable - used.get(name, 0))
    return free


@dataclass(frozen=True)
class FreeGpus:
    """Free GPUs per eligible node; ``room_for`` is what ``madinfra.rollout`` asks."""

    per_node: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.per_node.values())

    def room_for(self, per_replica: int) -> int:
        """How many more replicas of ``per_replica`` GPUs fit, each on one node."""
        if per_replica <= 0:
            return 1 << 30
        return sum(free // per_replica for free in self.per_node.values())


def read_free(api: Any, resource: str, node_selector: dict[str, str], tolerations: list[Toleration], list_nodes: Callable[[], list[dict[str, Any]] | None] | None = None) -> FreeGpus | None:
    """Two cluster-wide lists (Nodes, non-terminated Pods); None when either is forbidden.
    ``list_nodes``: the plan's own Nodes list, when the plan already read it (``node_fit``)."""
    from madinfra_kubernetes import client as kube

    nodes = list_nodes() if list_nodes is not None else kube.list_cluster_wide(api, "Node")
    if nodes is None:
        return None
    pods = kube.list_cluster_wide(api, "Pod", "status.phase!=Succeeded,status.phase!=Failed")
    if pods is None:
        return None
    return FreeGpus(free_per_node(nodes, pods, resource, node_selector, tolerations))
