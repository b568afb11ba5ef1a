"""How a pod learns who it is depends on the controller that runs it; fit the launch to it.

Launchers describe a role's pods as ranks of one group: rank from the pod index
(``${HOSTNAME##*-}``), master at pod 0's stable DNS name, NNODES/WORLD_SIZE = the role's size.
That holds for Indexed Jobs and StatefulSets. It cannot hold for a Deployment: its pods are named
``<deployment>-<replicaset hash>-<random>`` (the "index" would be random letters) and no headless
Service gives them DNS names. madinfra runs a role with a Deployment only when its pods serve
independently (the disaggregated proxy, vLLM's data-parallel replicas on Kubernetes), so every
such pod is a world of its own: rank ``first_rank``, master ``localhost``, one node. That also
keeps the replica count out of the pod template, so scaling a Deployment restarts nothing.

StatefulSet pods always have a DNS name behind the pool's headless Service, so a one-pod pool's
``localhost`` master becomes pod 0's name: the template then stays the same when the pool grows
from one pod to two (the launcher's ``localhost`` exists for controllers without such names).
Values the user set for the role (``roles.<role>.env``) are never rewritten.
"""

from __future__ import annotations

import dataclasses

from madinfra.launchers.model import RoleLaunch
from madinfra.naming import DEFAULT_CLUSTER_DOMAIN, pod_dns
from madinfra_kubernetes.pod import POD_INDEX_EXPR

RANK_VARS = ("NODE_RANK", "RANK", "POD_INDEX")
WORLD_VARS = ("NNODES", "WORLD_SIZE")
LOCALHOST = "localhost"


def independent_replica(role: RoleLaunch, stack: str, namespace: str, user_env: frozenset[str] = frozenset(), cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> RoleLaunch:
    """The role as each pod of a Deployment must see it: a one-node world of its own."""
    index = "0"
    env = dict(role.env)
    runtime: list[tuple[str, str]] = []
    for name, expression in role.runtime_env:
        value = expression.replace(POD_INDEX_EXPR, index)
        if name in RANK_VARS and name not in user_env:
            env[name] = str(role.first_rank)
        elif "$" in value:
            runtime.append((name, value))
        else:
            env[name] = value
    if role.nodes > 1:
        for name in WORLD_VARS:
            if env.get(name) == str(role.nodes) and name not in user_env:
                env[name] = "1"
    master = pod_dns(stack, role.role, 0, namespace, cluster_domain)
    if env.get("MASTER_ADDR") == master and "MASTER_ADDR" not in user_env:
        env["MASTER_ADDR"] = LOCALHOST
    return dataclasses.replace(role, env=env, runtime_env=tuple(runtime), command=role.command.replace(POD_INDEX_EXPR, index))


def stateful_member(role: RoleLaunch, stack: str, namespace: str, user_env: frozenset[str] = frozenset(), cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> RoleLaunch:
    """The role as a StatefulSet pod sees it: pod 0 is named by its DNS, whatever the pool size."""
    if role.env.get("MASTER_ADDR") != LOCALHOST or "MASTER_ADDR" in user_env:
        return role
    return dataclasses.replace(role, env={**role.env, "MASTER_ADDR": pod_dns(stack, role.role, 0, namespace, cluster_domain)})
