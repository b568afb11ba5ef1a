"""The desired Kubernetes objects of a stack, as plain manifest dicts (pure, no cluster access).

Topologies:
- training (torchrun, DeepSpeed, Megatron-LM, TorchTitan, no launcher): one Job with
  completions = parallelism = nnodes (Indexed when multi-node) plus, when multi-node, a headless
  Service whose name is every pod's ``subdomain``, so ``<job>-0.<svc>.<ns>.svc.cluster.local``
  resolves for every launcher (madengine sets the subdomain only for some: its bug 4).
- vLLM: independent replicas, a Deployment (replicas = nnodes) behind a ClusterIP Service.
- SGLang: a StatefulSet (Parallel pod management) behind its headless Service, so rank 0 has a
  stable DNS name, plus a ClusterIP Service on rank 0 for the endpoint.
- disaggregated SGLang: proxy Deployment + the endpoint Service, and one StatefulSet + headless
  Service per pool (prefill, decode): resizing one pool changes only that StatefulSet and the
  proxy (whose command lists the pool's pod URLs).
The endpoint Service of every inference stack is ``<stack>-api`` (see ``endpoint_service_name``).

A stack with ``topology_env`` (disaggregated SGLang) also gets the ConfigMap ``<stack>-topology``,
read by every pod with ``envFrom`` (see topology.py). Pools roll out one at a time, proxy last:
decode rolls after prefill and the proxy after both (``ROLLOUT_ORDER``), which becomes
``depends_on`` and so the order of Pulumi's program, of the engine's plan, and of the provider's
apply steps, which wait for each rollout before the next.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from madinfra.config.schema import StackSpec
from madinfra.errors import MadinfraError
from madinfra.launchers import kv_layout
from madinfra.launchers.model import LaunchPlan, RoleLaunch
from madinfra.naming import ROLE_LABEL, STACK_LABEL, configmap_name, dns_label, k8s_labels, label_value, service_name, workload_name
from madinfra.resources import Resource
from madinfra_kubernetes import pod as pods
from madinfra_kubernetes.canonical import canonical_manifest
from madinfra_kubernetes.credentials import CREDENTIAL_KEY, credential_secret, local_credential
from madinfra_kubernetes.identity import independent_replica, stateful_member
from madinfra_kubernetes.objects import API_VERSIONS, KV_LAYOUT_ANNOTATION, ROLLS_AFTER_ANNOTATION, resource_id, to_resource
from madinfra_kubernetes.scripts import ScriptBundle, collect
from madinfra_kubernetes.storage import data_volume, results_volume
from madinfra_kubernetes.topology import configmap_body, topology_configmap_name

SCRIPTS_DIGEST_ANNOTATION = "madinfra.io/scripts-digest"
SECRETS_DIGEST_ANNOTATION = "madinfra.io/secrets-digest"
STS_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
ROLLOUT_ORDER = ("prefill", "decode", "proxy")
"""Roles that roll out one after another in this order: the proxy last, once every pool it
routes to has rolled out."""


def endpoint_service_name(stack: str) -> str:
    """The ClusterIP Service clients use: ``<stack>-api`` for every inference stack."""
    return dns_label(f"{stack}-api")


def secret_name(stack: str) -> str:
    return dns_label(f"{stack}-secrets")


def manifest(kind: str, name: str, namespace: str | None, labels: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """Keys in the order ``kubectl`` users expect: apiVersion, kind, metadata, then the body."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(labels)
    return {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": metadata, **body}


def selector(stack: str, role: str) -> dict[str, str]:
    """Pods are selected by stack and role only: a model rename must not touch immutable selectors."""
    return {STACK_LABEL: label_value(stack), ROLE_LABEL: label_value(role)}


def controller_for(launch: LaunchPlan, role: RoleLaunch) -> str:
    if launch.workload == "training":
        return "Job"
    if launch.launcher == "vllm" or role.role == "proxy":
        return "Deployment"
    return "StatefulSet"


def secret_digests(spec: StackSpec, stack_dir: Path = Path(".")) -> dict[str, str]:
    """Digests only: the clear values are read again at apply time and never kept. The stack's
    Secret holds every ``secret_env`` value and, with ``k8s.secrets.strategy:
    from_local_credentials``, the ``credential.json`` beside the stack file."""
    from madinfra.secrets import resolve_secret, secret_digest

    digests = {name: secret_digest(name, resolve_secret(source, name)) for name, source in spec.secret_env.items()}
    credential = local_credential(spec, stack_dir)
    if credential is not None:
        digests[CREDENTIAL_KEY] = secret_digest(CREDENTIAL_KEY, credential)
    return digests


class _Builder:
    def __init__(self, spec: StackSpec, launch: LaunchPlan, stack_dir: Path):
        if spec.k8s is None:
            raise MadinfraError(f"Stack '{spec.name}' targets {spec.target}, not k8s; the Kubernetes provider cannot deploy it")
        self.spec = spec
        self.launch = launch
        self.k8s = spec.k8s
        self.stack = spec.name
        self.namespace = spec.k8s.namespace
        self.model = spec.model_name
        self.bundle: ScriptBundle = collect(spec.model.scripts_dir, stack_dir)
        self.digests = secret_digests(spec, stack_dir)
        self.credential_secret = credential_secret(spec, secret_name(self.stack), CREDENTIAL_KEY in self.digests)
        self.manifests: list[dict[str, Any]] = []

    def labels(self, role: str | None = None) -> dict[str, str]:
        return k8s_labels(self.stack, role, self.model)

    def add(self, kind: str, name: str, body: dict[str, Any], role: str | None = None, namespaced: bool = True) -> dict[str, Any]:
        obj = manifest(kind, name, self.namespace if namespaced else None, self.labels(role), body)
        self.manifests.append(obj)
        return obj

    @property
    def topology(self) -> str | None:
        return topology_configmap_name(self.stack) if self.launch.topology_env else None

    def build(self) -> list[dict[str, Any]]:
        if self.k8s.create_namespace:
            self.add("Namespace", self.namespace, {}, namespaced=False)
        if self.digests:
            self.add("Secret", secret_name(self.stack), {"data": dict(self.digests)})
        if self.bundle:
            body: dict[str, Any] = {}
            if self.bundle.data:
                body["data"] = dict(self.bundle.data)
            if self.bundle.binary_data:
                body["binaryData"] = dict(self.bundle.binary_data)
            self.add("ConfigMap", configmap_name(self.stack), body)
        if self.topology:
            self.add("ConfigMap", self.topology, configmap_body(self.launch.topology_env))
        for volume in (results_volume(self.spec), data_volume(self.spec)):
            if volume is not None:
                self.add("PersistentVolumeClaim", volume.name, volume.body())
        for role in self.launch.roles:
            self.role(role)
        return self.manifests

    def annotations(self) -> dict[str, str]:
        notes = {}
        if self.bundle:
            notes[SCRIPTS_DIGEST_ANNOTATION] = self.bundle.digest()
        if self.digests:
            joined = "\n".join(f"{k}={v}" for k, v in sorted(self.digests.items()))
            notes[SECRETS_DIGEST_ANNOTATION] = hashlib.sha256(joined.encode()).hexdigest()[:16]
        return notes

    def template(self, role: RoleLaunch, workload: str, restart: str, subdomain: str | None, probe: str | None) -> dict[str, Any]:
        return pods.pod_template(
            pods.PodInputs(
                spec=self.spec,
                launch=self.launch,
                role=role,
                workload=workload,
                restart_policy=restart,
                subdomain=subdomain,
                configmap=configmap_name(self.stack) if self.bundle else None,
                script_paths=dict(self.bundle.paths),
                secret=secret_name(self.stack) if self.digests else None,
                credential_secret=self.credential_secret,
                topology=self.topology,
                annotations=self.annotations(),
                probe=probe,
            )
        )

    def user_env(self, role: RoleLaunch) -> frozenset[str]:
        override = self.spec.roles.get(role.role)
        return frozenset(override.env) if override is not None else frozenset()

    def rolls_after(self, role: RoleLaunch) -> list[str]:
        """Ids of the workloads of the roles before this one in ROLLOUT_ORDER."""
        if role.role not in ROLLOUT_ORDER:
            return []
        earlier = ROLLOUT_ORDER[: ROLLOUT_ORDER.index(role.role)]
        return [
            resource_id(controller_for(self.launch, other), workload_name(self.stack, other.role))
            for name in earlier
            for other in self.launch.roles
            if other.role == name
        ]

    def role(self, role: RoleLaunch) -> None:
        controller = controller_for(self.launch, role)
        name = workload_name(self.stack, role.role)
        if controller == "Job":
            obj = self.job(role, name)
        elif controller == "Deployment":
            obj = self.deployment(independent_replica(role, self.stack, self.namespace, self.user_env(role), self.k8s.cluster_domain), name)
        else:
            obj = self.statefulset(stateful_member(role, self.stack, self.namespace, self.user_env(role), self.k8s.cluster_domain), name)
        notes = {}
        after = self.rolls_after(role)
        if after:
            notes[ROLLS_AFTER_ANNOTATION] = ",".join(after)
        layout = kv_layout.for_role(self.launch, role.role)
        if layout is not None:
            notes[KV_LAYOUT_ANNOTATION] = layout
        if notes:
            obj["metadata"]["annotations"] = notes

    def headless(self, role: RoleLaunch, ports: list[dict[str, Any]]) -> str:
        name = service_name(self.stack, role.role)
        body = {
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,  # peers must resolve before they are ready
                "selector": selector(self.stack, role.role),
                "ports": ports,
            }
        }
        self.add("Service", name, body, role.role)
        return name

    def role_ports(self, role: RoleLaunch) -> list[dict[str, Any]]:
        ports = [{"name": p["name"], "port": p["containerPort"]} for p in pods.container_ports(role)]
        return ports or [{"name": "master", "port": self.launch.master_port}]

    def endpoint(self, role: RoleLaunch, extra_selector: dict[str, str] | None = None) -> None:
        port = self.launch.service_port or role.ports.get("http")
        if port is None:
            return
        body = {
            "spec": {
                "selector": {**selector(self.stack, role.role), **(extra_selector or {})},
                "ports": [{"name": "http", "port": port}],
            }
        }
        self.add("Service", endpoint_service_name(self.stack), body, role.role)

    def job(self, role: RoleLaunch, name: str) -> dict[str, Any]:
        multi = role.nodes > 1
        subdomain = None
        if multi:
            subdomain = self.headless(role, [{"name": "master", "port": self.launch.master_port}])
        spec: dict[str, Any] = {
            "completions": role.nodes,
            "parallelism": role.nodes,
            "completionMode": "Indexed" if multi else "NonIndexed",
            "backoffLimit": self.k8s.backoff_limit,
        }
        if self.k8s.ttl_seconds_after_finished is not None:
            spec["ttlSecondsAfterFinished"] = self.k8s.ttl_seconds_after_finished
        spec["template"] = self.template(role, name, "Never", subdomain, None)
        return self.add("Job", name, {"spec": spec}, role.role)

    def deployment(self, role: RoleLaunch, name: str) -> dict[str, Any]:
        # No surge for GPU pods: a GPU pod rarely has a spare node to surge onto, so replace one
        # at a time. A pod without GPUs (the proxy) surges: the new one is ready before the old
        # one stops, so updating the proxy's endpoint list never takes the endpoint down.
        rolling = {"maxSurge": 0, "maxUnavailable": 1} if role.gpus_per_node > 0 else {"maxSurge": 1, "maxUnavailable": 0}
        spec = {
            "replicas": role.nodes,
            "selector": {"matchLabels": selector(self.stack, role.role)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
            "template": self.template(role, name, "Always", None, "each"),
        }
        obj = self.add("Deployment", name, {"spec": spec}, role.role)
        self.endpoint(role)
        return obj

    def statefulset(self, role: RoleLaunch, name: str) -> dict[str, Any]:
        headless = self.headless(role, self.role_ports(role))
        rank0_only = self.launch.launcher == "sglang"
        spec = {
            "replicas": role.nodes,
            "serviceName": headless,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(self.stack, role.role)},
            "template": self.template(role, name, "Always", None, "rank0" if rank0_only else "each"),
        }
        obj = self.add("StatefulSet", name, {"spec": spec}, role.role)
        if role.role == "server":
            self.endpoint(role, {STS_POD_NAME_LABEL: f"{name}-0"})
        return obj


def desired_manifests(spec: StackSpec, launch: LaunchPlan, stack_dir: Path = Path(".")) -> list[dict[str, Any]]:
    return _Builder(spec, launch, stack_dir).build()


def desired_resources(spec: StackSpec, launch: LaunchPlan, stack_dir: Path = Path(".")) -> list[Resource]:
    """The stack's resources with dependencies limited to objects of this stack."""
    manifests = [canonical_manifest(m) for m in desired_manifests(spec, launch, stack_dir)]
    ids = [resource_id(m["kind"], m["metadata"]["name"]) for m in manifests]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise MadinfraError(f"Stack '{spec.name}' would create {', '.join(duplicates)} twice; rename the stack or its roles")
    return [to_resource(m, known_ids=ids) for m in manifests]
