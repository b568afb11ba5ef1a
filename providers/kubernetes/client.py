"""The Kubernetes API connection: kubeconfig/context selection and batched list calls.

kubeconfig is chosen the way kubectl chooses it: ``--kubeconfig`` (ProviderOptions), then a
kubeconfig the stack file names explicitly, then ``KUBECONFIG`` (which may list several files),
then ``~/.kube/config``, and in-cluster credentials when none exists. The context is ``--context``,
then ``k8s.context`` from the stack, then the kubeconfig's current context.

Every read is one label-selected list call per kind and namespace, with the raw JSON kept as-is
(``_preload_content=False``): the objects stay in the API's own camelCase shape, exactly what the
desired manifests use. Every failure becomes one ProviderError sentence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madinfra.errors import ProviderError, TransientProviderError

DEFAULT_KUBECONFIG = "~/.kube/config"
REQUEST_TIMEOUT = (10, 60)

_LIST_CALLS = {
    # kind: (api class, namespaced list method, all-namespaces list method)
    "Secret": ("CoreV1Api", "list_namespaced_secret", "list_secret_for_all_namespaces"),
    "ConfigMap": ("CoreV1Api", "list_namespaced_config_map", "list_config_map_for_all_namespaces"),
    "Service": ("CoreV1Api", "list_namespaced_service", "list_service_for_all_namespaces"),
    "Job": ("BatchV1Api", "list_namespaced_job", "list_job_for_all_namespaces"),
    "Deployment": ("AppsV1Api", "list_namespaced_deployment", "list_deployment_for_all_namespaces"),
    "StatefulSet": ("AppsV1Api", "list_namespaced_stateful_set", "list_stateful_set_for_all_namespaces"),
    "Pod": ("CoreV1Api", "list_namespaced_pod", "list_pod_for_all_namespaces"),
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


def api_client(target: KubeTarget) -> Any:
    """A configured ``kubernetes.client.ApiClient`` (imports the client only now)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if target.kubeconfig is not None and not Path(target.kubeconfig).exists():
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration)
            raise ProviderError(
                f"kubeconfig {target.kubeconfig} does not exist; pass --kubeconfig, set KUBECONFIG or k8s.kubeconfig to your cluster's kubeconfig"
            )
        return config.new_client_from_config(config_file=target.kubeconfig, context=target.context)
    except ConfigException as exc:
        raise ProviderError(f"cannot use kubeconfig ({target.describe()}): {exc}; check the file and the context name (kubectl config get-contexts)") from None


def server_url(api: Any) -> str:
    return str(getattr(api.configuration, "host", "?"))


def _error(exc: Exception, what: str, api: Any) -> ProviderError:
    """One sentence for any failure of an API call."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, ApiException):
        reason = exc.reason or ""
        try:
            reason = json.loads(exc.body or "{}").get("message") or reason
        except (ValueError, AttributeError):
            pass
        if exc.status in (401, 403):
            return ProviderError(f"the Kubernetes API server at {server_url(api)} refused to {what} ({exc.status}: {reason}); check your credentials and RBAC permissions")
        if exc.status is not None and (exc.status >= 500 or exc.status == 429):
            return TransientProviderError(f"the Kubernetes API server at {server_url(api)} failed to {what} ({exc.status}: {reason}); try again")
        return ProviderError(f"the Kubernetes API server at {server_url(api)} could not {what} ({exc.status}: {reason})")
    if isinstance(exc, (Urllib3Error, OSError)):
        return ProviderError(
            f"cannot reach the Kubernetes API server at {server_url(api)} to {what} ({exc.__class__.__name__}); check that the cluster is up and that kubeconfig/--context point at it"
        )
    return ProviderError(f"failed to {what} on {server_url(api)}: {exc}")


def _call(api: Any, kind: str, namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
    from kubernetes import client

    cls_name, namespaced, cluster_wide = _LIST_CALLS[kind]
    endpoint = getattr(client, cls_name)(api)
    where = f"namespace {namespace}" if namespace else "all namespaces"
    try:
        if namespace:
            response = getattr(endpoint, namespaced)(namespace, label_selector=label_selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        else:
            response = getattr(endpoint, cluster_wide)(label_selector=label_selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        body = json.loads(response.data or b"{}")
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
        raise _error(exc, f"list {kind} objects in {where}", api) from None
    return list(body.get("items") or [])


def list_objects(api: Any, kind: str, namespaces: list[str] | None, label_selector: str) -> list[dict[str, Any]]:
    """One list call per namespace (or one cluster-wide call when ``namespaces`` is None)."""
    items: list[dict[str, Any]] = []
    for namespace in namespaces or [None]:
        for item in _call(api, kind, namespace, label_selector):
            item.setdefault("kind", kind)
            items.append(item)
    return items


def read_namespace(api: Any, name: str, forbidden_ok: bool = False) -> dict[str, Any] | None:
    """The Namespace object, or None when it does not exist; other failures raise.

    ``forbidden_ok``: a user whose RBAC stops at their namespace cannot read Namespace objects;
    that proves nothing about existence, so an empty mapping ("exists, unknown") is returned.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        response = client.CoreV1Api(api).read_namespace(name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        return json.loads(response.data or b"{}")
    except ApiException as exc:
        if exc.status == 404:
            return None
        if forbidden_ok and exc.status == 403:
            return {}
        raise _error(exc, f"read namespace {name}", api) from None
    except Exception as exc:  # noqa: BLE001
        raise _error(exc, f"read namespace {name}", api) from None
