"""Whether any node could ever hold one of a stack's pods: the GPUs per pod against the nodes
of the stack's GPU type (pure).

A pod does not span nodes, so a pod asking for more GPUs than any node it may land on has
(``k8s.node_selector`` labels, taints tolerated by ``k8s.tolerations``) stays Pending forever
unless such a node joins. On SLURM the partition's nodes are fixed and the same case fails the
plan; a Kubernetes cluster may grow a node group on demand (cluster autoscaler, Karpenter), so
here it is a warning, said before anything is applied instead of after the readiness timeout.
"""

from __future__ import annotations

from typing import Any, Iterable

from madinfra.config.schema import Toleration
from madinfra.resources import Change
from madinfra_kubernetes.gpu_room import BLOCKING_EFFECTS, _quantity, tolerated
from madinfra_kubernetes.objects import gpus_per_pod
from madinfra_kubernetes.rules import WORKLOAD_KINDS, kind_of


def starting_pods(changes: Iterable[Change]) -> dict[str, int]:
    """Resource id -> GPUs per pod, for the workloads the plan creates or changes."""
    found = {}
    for change in changes:
        desired = change.desired
        if desired is None or change.action == "delete" or kind_of(desired.kind) not in WORKLOAD_KINDS:
            continue
        gpus = gpus_per_pod(desired.spec)
        if gpus > 0:
            found[change.resource_id] = gpus
    return found


def largest_node(nodes: list[dict[str, Any]], resource: str, node_selector: dict[str, str], tolerations: list[Toleration]) -> int:
    """The most ``resource`` GPUs any node the stack's pods may use can hold (Ready or not:
    a node that is down now may come back)."""
    largest = 0
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        if any(labels.get(key) != value for key, value in node_selector.items()):
            continue
        taints = (node.get("spec") or {}).get("taints") or []
        if not all(tolerated(t, tolerations) for t in taints if t.get("effect") in BLOCKING_EFFECTS):
            continue
        largest = max(largest, _quantity(((node.get("status") or {}).get("allocatable") or {}).get(resource, 0)))
    return largest


def warnings(pods: dict[str, int], largest: int, resource: str, where: str) -> list[str]:
    """One sentence per workload whose pods fit on no node of the cluster now."""
    out = []
    for rid, gpus in sorted(pods.items()):
        if gpus <= largest:
            continue
        have = f"the largest has {largest}" if largest else f"none has any {resource}"
        out.append(
            f"{rid} asks for {gpus} {resource} per pod (k8s.gpu_count), but of the nodes {where}, {have}: its pods stay Pending "
            "until a node that large joins (an autoscaler); lower k8s.gpu_count and distributed.nproc_per_node, or check "
            "k8s.gpu_resource_name and k8s.node_selector"
        )
    return out
