"""How many more pool replicas fit on the cluster now, from the live read's ``sinfo`` (pure).

A surge replica (a rolling change's new replica started before the old one stops) needs one
node of the stack's partition with ``gpus_per_node`` free GPUs and an idle CPU, in a state that
takes jobs (``idle`` or ``mixed``); an exclusive job needs a node nobody uses (``idle``, every
GPU free). Nodes that are down, drained, draining, reserved, allocated or not responding
(``idle*``) count for nothing. The plan offers a surge only when this says it fits, so apply
never waits on a surge replica that would sit PENDING.
"""

from __future__ import annotations

from typing import Any

from madinfra_slurm.squeue import NodeUse, Partition

TAKES_JOBS = ("idle", "mixed")


def partition_of(spec: dict[str, Any], partitions: dict[str, Partition]) -> Partition | None:
    """The partition a job spec runs in (its own, else the cluster's default)."""
    name = spec.get("partition") or next((p.name for p in partitions.values() if p.default), None)
    return partitions.get(name or "")


def replicas_on(use: NodeUse, gpus: int, exclusive: bool) -> int:
    """How many one-node replicas of ``gpus`` GPUs one node takes now."""
    if use.state not in TAKES_JOBS or use.cpus_idle < 1:
        return 0
    if exclusive:
        return 1 if use.state == "idle" and use.gpus_free >= gpus else 0
    by_gpus = use.gpus_free // gpus if gpus > 0 else use.cpus_idle
    return min(by_gpus, use.cpus_idle)


def room(partition: Partition | None, gpus: int, exclusive: bool) -> int | None:
    """Replicas of ``gpus`` GPUs per node that fit now; ``None`` when sinfo did not say."""
    if partition is None or not partition.node_use:
        return None
    return sum(replicas_on(use, gpus, exclusive) for use in partition.node_use.values())


def gpus_free(partition: Partition | None) -> int | None:
    """Free GPUs on the partition's nodes that take jobs; ``None`` when sinfo did not say."""
    if partition is None or not partition.node_use:
        return None
    return sum(use.gpus_free for use in partition.node_use.values() if use.state in TAKES_JOBS)
