"""The Pulumi inline program: one typed ``pulumi_kubernetes`` object per desired resource.

Pulumi and pulumi_kubernetes are imported inside the functions only (they take about a second to
import), so ``render``, ``plan`` and ``validate`` never pay for them.

Each object gets the resource's manifest as dict arguments (camelCase inside, as the API wants),
``depends_on`` from the resource, ``replace_on_changes`` from rules.py (the planner's own
``force_replace``) and ``delete_before_replace`` (names are fixed, so the old object must go
first). ``pulumi.com/skipAwait`` turns off Pulumi's own waiting: a training Job would otherwise
hold ``up`` until training ends; madinfra checks readiness itself, with ``k8s.ready_timeout``.
The Pulumi resource name is the madinfra resource id, so engine events map back by URN.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from madinfra.resources import Resource
from madinfra_kubernetes.rules import kind_of, replace_on_changes

PROJECT = "madinfra"
PROVIDER_NAME = "madinfra-k8s"
SKIP_AWAIT = "pulumi.com/skipAwait"

_CLASSES = {
    "Namespace": ("core", "v1"),
    "Secret": ("core", "v1"),
    "ConfigMap": ("core", "v1"),
    "PersistentVolumeClaim": ("core", "v1"),
    "Service": ("core", "v1"),
    "Job": ("batch", "v1"),
    "Deployment": ("apps", "v1"),
    "StatefulSet": ("apps", "v1"),
}
_TOP_LEVEL_ARGS = {"binaryData": "binary_data", "stringData": "string_data"}


@dataclass(frozen=True)
class KubeSettings:
    """How the Pulumi Kubernetes provider reaches the cluster (None: its own defaults)."""

    kubeconfig: str | None = None
    context: str | None = None


def type_token(resource_kind: str) -> str:
    kind = kind_of(resource_kind)
    group, version = _CLASSES[kind]
    return f"kubernetes:{group}/{version}:{kind}"


def resource_urn(stack: str, resource: Resource | str, resource_kind: str | None = None) -> str:
    """The URN Pulumi gives a madinfra resource (no parent, so ``<type>::<name>``)."""
    rid = resource if isinstance(resource, str) else resource.id
    kind = resource_kind or (resource.kind if isinstance(resource, Resource) else "/".join(rid.split("/")[:2]))
    return f"urn:pulumi:{stack}::{PROJECT}::{type_token(kind)}::{rid}"


def provider_urn(stack: str) -> str:
    return f"urn:pulumi:{stack}::{PROJECT}::pulumi:providers:kubernetes::{PROVIDER_NAME}"


def resource_id_from_urn(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def program_manifest(resource: Resource, secret_values: dict[str, str]) -> dict[str, Any]:
    """The manifest Pulumi sends: skipAwait added, Secret digests swapped for the real values."""
    manifest = copy.deepcopy(resource.spec)
    metadata = manifest.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), SKIP_AWAIT: "true"}
    if kind_of(resource.kind) == "Secret":
        keys = list((manifest.get("data") or {}).keys())
        missing = [k for k in keys if k not in secret_values]
        if missing:
            raise KeyError(f"no value for secret keys {missing}")
        manifest["data"] = {k: base64.b64encode(secret_values[k].encode("utf-8")).decode("ascii") for k in keys}
    return manifest


def registration_order(resources: list[Resource]) -> list[Resource]:
    """Dependencies before dependents (they must be registered first to be referenced)."""
    by_id = {r.id: r for r in resources}
    done: set[str] = set()
    ordered: list[Resource] = []

    def visit(resource: Resource, path: tuple[str, ...]) -> None:
        if resource.id in done or resource.id in path:
            return
        for dep in resource.depends_on:
            if dep in by_id:
                visit(by_id[dep], path + (resource.id,))
        done.add(resource.id)
        ordered.append(resource)

    for resource in resources:
        visit(resource, ())
    return ordered


def register_resources(resources: list[Resource], kube: KubeSettings, secret_values: dict[str, str]) -> dict[str, Any]:
    """Create the Pulumi objects (inside a running program or Pulumi's mocks); id -> object."""
    import pulumi
    import pulumi_kubernetes as k8s

    # ConfigMaps and Secrets change in place, as the plan says (pulumi-kubernetes would otherwise
    # replace them on every data change, and the topology ConfigMap changes on every resize).
    provider_args: dict[str, Any] = {"enable_server_side_apply": True, "enable_config_map_mutable": True, "enable_secret_mutable": True}
    if kube.kubeconfig:
        provider_args["kubeconfig"] = kube.kubeconfig
    if kube.context:
        provider_args["context"] = kube.context
    provider = k8s.Provider(PROVIDER_NAME, **provider_args)
    created: dict[str, Any] = {}
    for resource in registration_order(resources):
        kind = kind_of(resource.kind)
        group, version = _CLASSES[kind]
        cls = getattr(getattr(getattr(k8s, group), version), kind)
        manifest = program_manifest(resource, secret_values)
        args: dict[str, Any] = {"metadata": manifest["metadata"]}
        for key, value in manifest.items():
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if kind == "Secret" and key == "data":
                value = pulumi.Output.secret(value)
            args[_TOP_LEVEL_ARGS.get(key, key)] = value
        opts = pulumi.ResourceOptions(
            provider=provider,
            depends_on=[created[d] for d in resource.depends_on if d in created],
            replace_on_changes=replace_on_changes(resource.kind),
            delete_before_replace=True,
        )
        created[resource.id] = cls(resource.id, opts=opts, **args)
    return created


class Program:
    """The inline program: registers ``resources`` (a list the apply may swap for one ``up``).

    ``overridden`` sends other manifests for some objects during one targeted ``up`` (a pool's
    transient replicas, the proxy's transient endpoint list), so Pulumi's state always holds
    what the cluster runs, then puts the planned resources back."""

    def __init__(self, resources: list[Resource], kube: KubeSettings, secret_values: dict[str, str]):
        self.resources = list(resources)
        self.kube = kube
        self.secret_values = secret_values

    def __call__(self) -> None:
        register_resources(self.resources, self.kube, self.secret_values)

    @contextmanager
    def overridden(self, specs: dict[str, dict[str, Any]]) -> Iterator[None]:
        planned = self.resources
        self.resources = [dataclasses.replace(r, spec=specs[r.id]) if r.id in specs else r for r in planned]
        try:
            yield
        finally:
            self.resources = planned


def build_program(resources: list[Resource], kube: KubeSettings, secret_values: dict[str, str]) -> Program:
    """The inline program for the Automation API."""
    return Program(resources, kube, secret_values)
