"""Fake GPU nodes of one test's own, so capacity-sensitive tests can run beside the others.

The K8s end-to-end tests run in two processes at once (``scripts/test``). A test whose plan
depends on exact free GPUs (a pool with no room for a surge replica) cannot share nodes with
stacks the other process applies at the same moment. ``reserved_nodes`` registers fresh KWOK
nodes labelled ``madinfra.io/reserved=<token>`` and tainted with the same key, so only a stack
that selects the label and tolerates the taint runs there, and removes them afterwards.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

RESERVED = "madinfra.io/reserved"
VENDOR_RESOURCES = {"amd": "amd.com/gpu", "nvidia": "nvidia.com/gpu"}
NODE_SIZE = {"cpu": "128", "memory": "1Ti", "pods": "110"}


@contextmanager
def reserved_nodes(sandbox: Any, count: int, vendor: str = "nvidia", gpus: int = 8) -> Iterator[dict[str, Any]]:
    """Yields the ``k8s`` stack settings that place a stack on ``count`` fresh nodes only."""
    token = uuid.uuid4().hex[:8]
    core = sandbox.client("CoreV1Api")
    names = [f"kwok-reserved-{token}-{i}" for i in range(count)]
    capacity = {**NODE_SIZE, VENDOR_RESOURCES[vendor]: str(gpus)}
    try:
        for name in names:
            core.create_node({
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"kubernetes.io/hostname": name, "type": "kwok", "madinfra.io/gpu-vendor": vendor, RESERVED: token},
                },
                "spec": {"taints": [{"key": RESERVED, "value": token, "effect": "NoSchedule"}]},
            })
            core.patch_node_status(name, {"status": {"capacity": capacity, "allocatable": capacity}})
        _wait_ready(core, names)
        yield {
            "gpu_resource_name": VENDOR_RESOURCES[vendor],
            "node_selector": {RESERVED: token},
            "tolerations": [{"key": RESERVED, "operator": "Equal", "value": token, "effect": "NoSchedule"}],
        }
    finally:
        for name in names:
            try:
                core.delete_node(name)
            except Exception:  # noqa: BLE001 - a node that was never created
                pass


def _wait_ready(core: Any, names: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = set()
        for node in core.list_node(label_selector=f"{RESERVED}").items:
            if node.metadata.name in names and any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                if (node.status.allocatable or {}).get("nvidia.com/gpu") or (node.status.allocatable or {}).get("amd.com/gpu"):
                    ready.add(node.metadata.name)
        if ready == set(names):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"reserved nodes {sorted(set(names) - ready)} did not get Ready with their GPUs within {timeout} s")
        time.sleep(0.3)
