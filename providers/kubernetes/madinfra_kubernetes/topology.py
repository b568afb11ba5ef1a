"""The stack's shape (``LaunchPlan.topology_env``) as a ConfigMap every pod reads with ``envFrom``.

Pool sizes, node totals and first ranks describe the whole stack, so writing them into each
pool's pod template would make resizing one pool restart every other pool. They live in one
ConfigMap instead, updated in place: it is deliberately left out of every pod-template digest
annotation, so a resize rolls nothing but the pool whose replicas change (and the proxy, whose
command lists the endpoints). Running pods keep the values they started with; pods started
later (new replicas, restarts) read the new ones. Variables in a container's own ``env`` take
precedence over ``envFrom``, so a value the user set for a role still wins.
"""

from __future__ import annotations

from typing import Any

from madinfra.naming import dns_label


def topology_configmap_name(stack: str) -> str:
    """``<stack>-topology``: scoped by stack like every other object name."""
    return dns_label(f"{stack}-topology")


def configmap_body(topology_env: dict[str, str]) -> dict[str, Any]:
    return {"data": {name: str(value) for name, value in topology_env.items()}}


def env_from(name: str) -> list[dict[str, Any]]:
    """The container's ``envFrom`` entry for the topology ConfigMap."""
    return [{"configMapRef": {"name": name}}]
