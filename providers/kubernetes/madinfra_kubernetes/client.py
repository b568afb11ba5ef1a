"""The Kubernetes API connection: kubeconfig/context selection and batched list calls.

kubeconfig is chosen the way kubectl chooses it: ``--kubeconfig`` (ProviderOptions), then a
kubeconfig the stack file names explicitly, then ``KUBECONFIG`` (which may list several files),
then ``~/.kube/config``, and in-cluster credentials when none exists. The context is ``--context``,
then ``k8s.context`` from the stack, then the kubeconfig's current context.

Every read is one label-selected list call per kind (cluster-wide, or per namespace), with the
raw JSON kept as-is: the objects stay in the API's own camelCase shape, exactly what the desired
manifests use. Every failure becomes one ProviderError sentence.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madinfra.errors import ProviderError, TransientProviderError
from madinfra_kubernetes.apiserver import ApiError, ApiServer

DEFAULT_KUBECONFIG = "~/.kube/config"

_PATHS = {
    # kind: (API group path, plural, namespaced)
    "Namespace": ("/api/v1", "namespaces", False),
    "Node": ("/api/v1", "nodes", False),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
}


@dataclass(frozen=True)
class KubeTarget:
    """Which kubeconfig file (None: KUBECONFIG or the default) and context to use."""

    kubeconfig: str | None = None
    context: str | None = None

    @classmethod
    def choose(cls, flag_kubeconfig: str | None, flag_context: str | None, stack_kubeconfig: str | None, stack_context: str | None) -> "KubeTarget":
        kubeconfig = flag_kubeconfig
        if kubeconfig is None and stack_kubeconfig and stack_kubeconfig != DEFAULT_KUBECONFIG:
            kubeconfig = stack_kubeconfig
        if kubeconfig is None and not os.environ.get("KUBECONFIG"):
            kubeconfig = DEFAULT_KUBECONFIG
        return cls(kubeconfig=str(Path(kubeconfig).expanduser()) if kubeconfig else None, context=flag_context or stack_context)

    def describe(self) -> str:
        where = self.kubeconfig or f"KUBECONFIG={os.environ.get('KUBECONFIG', '')}"
        return f"{where}" + (f", context {self.context}" if self.context else "")


def api_client(target: KubeTarget) -> ApiServer:
    """A client for the target's API server (reads the kubeconfig, runs exec plugins)."""
    from madinfra_kubernetes.kubeconfig import load

    return ApiServer(load(target.kubeconfig, target.context))


def server_url(api: Any) -> str:
    return str(getattr(api, "url", "?"))


def _error(exc: ApiError, what: str, api: Any) -> ProviderError:
    """One sentence for any failure of an API call."""
    if exc.status in (401, 403):
        return ProviderError(f"the Kubernetes API server at {server_url(api)} refused to {what} ({exc.status}: {exc.message}); check your credentials and RBAC permissions")
    if exc.status is not None and (exc.status >= 500 or exc.status == 429):
        return TransientProviderError(f"the Kubernetes API server at {server_url(api)} failed to {what} ({exc.status}: {exc.message}); try again")
    if exc.status is None:
        return ProviderError(
            f"cannot reach the Kubernetes API server at {server_url(api)} to {what} ({exc.message}); check that the cluster is up and that kubeconfig/--context point at it"
        )
    return ProviderError(f"the Kubernetes API server at {server_url(api)} could not {what} ({exc.status}: {exc.message})")


def collection_path(kind: str, namespace: str | None) -> str:
    group, plural, namespaced = _PATHS[kind]
    if namespaced and namespace:
        return f"{group}/namespaces/{namespace}/{plural}"
    return f"{group}/{plural}"


def _list(api: ApiServer, kind: str, namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
    where = f"namespace {namespace}" if namespace else "all namespaces"
    try:
        body = api.request("GET", collection_path(kind, namespace), {"labelSelector": label_selector})
    except ApiError as exc:
        raise _error(exc, f"list {kind} objects in {where}", api) from None
    items = list(body.get("items") or [])
    for item in items:
        item.setdefault("kind", kind)
        item.setdefault("apiVersion", body.get("apiVersion", "v1"))
    return items


def list_cluster_wide(api: ApiServer, kind: str, field_selector: str | None = None) -> list[dict[str, Any]] | None:
    """Every object of ``kind`` in the cluster (one call; e.g. Nodes, or all Pods with a field
    selector), or None when RBAC forbids it: callers treat that as "unknown", not as an error."""
    query = {"fieldSelector": field_selector} if field_selector else None
    try:
        body = api.request("GET", collection_path(kind, None), query)
    except ApiError as exc:
        if exc.status in (401, 403):
            return None
        raise _error(exc, f"list {kind} objects cluster-wide", api) from None
    return list(body.get("items") or [])


def apply_fields(api: ApiServer, kind: str, namespace: str | None, name: str, body: dict[str, Any], manager: str) -> dict[str, Any]:
    """Server-side apply of ``body`` (only the fields it names) as field manager ``manager``,
    with force: transient rollout fields (a StatefulSet's partition) that madinfra owns under a
    manager of their own, apart from Pulumi's, so Pulumi's fields and state stay untouched."""
    import json as _json

    path = object_path(kind, namespace, name)
    try:
        return api.request("PATCH", path, {"fieldManager": manager, "force": "true"}, body=body, content_type="application/apply-patch+yaml")
    except ApiError as exc:
        raise _error(exc, f"patch {kind} {name} ({_json.dumps(body)[:120]})", api) from None


def delete_pod(api: ApiServer, namespace: str, name: str) -> None:
    """Delete one pod now (its controller recreates it from the revision it should run)."""
    try:
        api.request("DELETE", object_path("Pod", namespace, name), body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    except ApiError as exc:
        if exc.status != 404:
            raise _error(exc, f"delete pod {namespace}/{name}", api) from None


def list_objects(api: ApiServer, kind: str, namespaces: list[str] | None, label_selector: str) -> list[dict[str, Any]]:
    """One list call per namespace (or one cluster-wide call when ``namespaces`` is None)."""
    items: list[dict[str, Any]] = []
    for namespace in namespaces or [None]:
        items.extend(_list(api, kind, namespace, label_selector))
    return items


def list_everywhere(api: ApiServer, kind: str, label_selector: str, fallback_namespaces: list[str]) -> list[dict[str, Any]]:
    """One cluster-wide list, so objects a stack left in another namespace are found too; a user
    whose RBAC stops at namespaces gets one list per namespace in ``fallback_namespaces``."""
    try:
        return list_objects(api, kind, None, label_selector)
    except ProviderError as exc:
        if "refused to" not in str(exc):
            raise
    return list_objects(api, kind, sorted(set(fallback_namespaces)), label_selector)


def list_namespaces(api: ApiServer, label_selector: str) -> list[dict[str, Any]]:
    """Namespaces carrying the stack's labels (needs cluster-wide read of Namespaces)."""
    return _list(api, "Namespace", None, label_selector)


def object_path(kind: str, namespace: str | None, name: str) -> str:
    return f"{collection_path(kind, namespace)}/{name}"


def read_object(api: ApiServer, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """One object, or None when it does not exist."""
    try:
        return api.request("GET", object_path(kind, namespace, name))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise _error(exc, f"read {kind} {name}", api) from None


def read_namespace(api: ApiServer, name: str, forbidden_ok: bool = False) -> dict[str, Any] | None:
    """The Namespace object, or None when it does not exist; other failures raise.

    ``forbidden_ok``: a user whose RBAC stops at their namespace cannot read Namespace objects;
    that proves nothing about existence, so an empty mapping ("exists, unknown") is returned.
    """
    try:
        return api.request("GET", object_path("Namespace", None, name))
    except ApiError as exc:
        if exc.status == 404:
            return None
        if forbidden_ok and exc.status == 403:
            return {}
        raise _error(exc, f"read namespace {name}", api) from None


def delete_object(api: ApiServer, kind: str, namespace: str | None, name: str, timeout: float, poll: float = 0.5) -> None:
    """Delete with foreground propagation and wait until the object is gone (404), so an object
    of the same name created next cannot race it and its pods are gone with it."""
    where = f"{kind} {namespace + '/' if namespace and _PATHS[kind][2] else ''}{name}"
    path = object_path(kind, namespace, name)
    try:
        api.request("DELETE", path, body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})
    except ApiError as exc:
        if exc.status == 404:
            return
        raise _error(exc, f"delete {where}", api) from None
    deadline = time.monotonic() + timeout
    while read_object(api, kind, namespace, name) is not None:
        if time.monotonic() >= deadline:
            raise ProviderError(f"{where} was still being deleted after {int(timeout)} s; check its finalizers and pods (kubectl describe)")
        time.sleep(poll)
