"""Manifest dict <-> madinfra Resource, shared by the desired side and the live side.

Dependencies, GPU counts and roles are derived from the manifest itself, so a resource read back
from the cluster carries the same ``depends_on`` and ``gpus`` as the one madinfra computed: the
planner can order deletes and count GPUs from live objects without a state file.
"""

from __future__ import annotations

from typing import Any, Iterable

from madinfra.naming import ROLE_LABEL
from madinfra.resources import Resource
from madinfra_kubernetes.rules import WORKLOAD_KINDS, kind_of

API_VERSIONS = {
    "Namespace": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Service": "v1",
    "Job": "batch/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
}

ROLLS_AFTER_ANNOTATION = "madinfra.io/rolls-after"
KV_LAYOUT_ANNOTATION = "madinfra.io/kv-layout"
"""On a disaggregated pool's StatefulSet: the KV cache layout its pods run with
(``madinfra.launchers.kv_layout``), read back by the live read, so a plan knows whether a change
of the pools must replace both together. On the object, not the pod template: adding it to a
stack applied before it existed restarts nothing."""
"""Comma-separated ids of workloads this one rolls out after (disaggregated pools, then proxy).
An annotation, not a field of the pod template, so live objects carry the same order as desired
ones (deletes run in reverse) and changing it restarts nothing."""


def resource_id(kind: str, name: str) -> str:
    return f"k8s/{kind}/{name}"


def replicas(manifest: dict[str, Any]) -> int:
    spec = manifest.get("spec") or {}
    kind = manifest.get("kind")
    if kind == "Job":
        return int(spec.get("parallelism", 1) or 0)
    if kind in ("Deployment", "StatefulSet"):
        value = spec.get("replicas", 1)
        return int(value if value is not None else 1)
    return 0


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    if manifest.get("kind") not in WORKLOAD_KINDS:
        return {}
    return ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}


def gpus_per_pod(manifest: dict[str, Any]) -> int:
    """Sum of ``*/gpu`` limits over the pod's containers (amd.com/gpu, nvidia.com/gpu)."""
    total = 0
    for container in pod_spec(manifest).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        for key, value in limits.items():
            if key.endswith("/gpu"):
                try:
                    total += int(str(value))
                except ValueError:
                    continue
    return total


def dependencies(manifest: dict[str, Any]) -> list[str]:
    """Ids of the objects this one needs first: its namespace, scripts, topology, secrets,
    Services, and the workloads it rolls out after."""
    deps: list[str] = []
    namespace = (manifest.get("metadata") or {}).get("namespace")
    if namespace and manifest.get("kind") != "Namespace":
        deps.append(resource_id("Namespace", namespace))
    pod = pod_spec(manifest)
    for volume in pod.get("volumes") or []:
        if (volume.get("configMap") or {}).get("name"):
            deps.append(resource_id("ConfigMap", volume["configMap"]["name"]))
        if (volume.get("secret") or {}).get("secretName"):
            deps.append(resource_id("Secret", volume["secret"]["secretName"]))
        if (volume.get("persistentVolumeClaim") or {}).get("claimName"):
            deps.append(resource_id("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        for source in container.get("envFrom") or []:
            if (source.get("configMapRef") or {}).get("name"):
                deps.append(resource_id("ConfigMap", source["configMapRef"]["name"]))
            if (source.get("secretRef") or {}).get("name"):
                deps.append(resource_id("Secret", source["secretRef"]["name"]))
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name"):
                deps.append(resource_id("Secret", ref["name"]))
    service = pod.get("subdomain") or ((manifest.get("spec") or {}).get("serviceName") if manifest.get("kind") == "StatefulSet" else None)
    if service:
        deps.append(resource_id("Service", service))
    after = ((manifest.get("metadata") or {}).get("annotations") or {}).get(ROLLS_AFTER_ANNOTATION, "")
    deps.extend(rid.strip() for rid in after.split(",") if rid.strip())
    return list(dict.fromkeys(deps))


def to_resource(
    manifest: dict[str, Any],
    *,
    known_ids: Iterable[str] | None = None,
    provider_id: str | None = None,
    status: dict[str, Any] | None = None,
) -> Resource:
    """A Resource for a manifest; ``known_ids`` limits dependencies to objects madinfra manages."""
    kind = kind_of(manifest["kind"])
    metadata = manifest.get("metadata") or {}
    deps = dependencies(manifest)
    if known_ids is not None:
        known = set(known_ids)
        deps = [d for d in deps if d in known]
    workload = kind in WORKLOAD_KINDS
    return Resource(
        kind=f"k8s/{kind}",
        name=metadata["name"],
        spec=manifest,
        depends_on=tuple(deps),
        gpus=replicas(manifest) * gpus_per_pod(manifest) if workload else 0,
        workload=workload,
        role=(metadata.get("labels") or {}).get(ROLE_LABEL),
        kv_layout=(metadata.get("annotations") or {}).get(KV_LAYOUT_ANNOTATION),
        provider_id=provider_id,
        status=dict(status or {}),
    )
