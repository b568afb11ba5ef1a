"""The Kubernetes provider: desired objects, live read, rules, Pulumi apply, readiness.

This module imports neither Pulumi nor the kubernetes client at import time; each is imported
by the method that needs it, so ``madinfra render`` and ``plan`` never load Pulumi.

The provider remembers the stack it last computed ``desired`` for: ``read`` lists only that
stack's namespace (namespaced RBAC suffices), ``apply`` runs the whole desired set as the Pulumi
program while targeting only the planned changes (so ``apply`` does exactly what the plan showed,
and resources outside the plan are left alone even when Pulumi's state has drifted).
"""

from __future__ import annotations

from typing import Any

from madinfra.config.schema import StackSpec
from madinfra.errors import MadinfraError
from madinfra.launchers.model import LaunchPlan
from madinfra.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, STACK_LABEL, label_value
from madinfra.resources import Change, ProgressCallback, ProviderOptions, RecordCallback, Resource, UpdateRules
from providers.kubernetes import client as kube
from providers.kubernetes.live import belongs_to, to_live_resource
from providers.kubernetes.manifests import desired_resources
from providers.kubernetes.render import render_files
from providers.kubernetes.rules import KINDS, WORKLOAD_KINDS, kind_of, update_rules


class KubernetesProvider:
    """``Provider`` for ``target: k8s`` stacks (entry point ``k8s`` in pyproject.toml)."""

    name = "k8s"

    def __init__(self, options: ProviderOptions | None = None, *, api: Any = None):
        self.options = options or ProviderOptions()
        self._api = api
        self._spec: StackSpec | None = None
        self._desired: list[Resource] = []

    # -- pure -------------------------------------------------------------------------------
    def desired(self, spec: StackSpec, launch: LaunchPlan) -> list[Resource]:
        resources = desired_resources(spec, launch, self.options.stack_dir)
        self._spec = spec
        self._desired = resources
        return resources

    def update_rules(self, kind: str) -> UpdateRules:
        return update_rules(kind)

    def render_files(self, resources: list[Resource]) -> dict[str, str]:
        return render_files(resources)

    # -- cluster access -----------------------------------------------------------------------
    def kube_target(self) -> kube.KubeTarget:
        k8s = self._spec.k8s if self._spec is not None else None
        return kube.KubeTarget.choose(
            self.options.kubeconfig,
            self.options.kube_context,
            k8s.kubeconfig if k8s else None,
            k8s.context if k8s else None,
        )

    def api(self) -> Any:
        if self._api is None:
            self._api = kube.api_client(self.kube_target())
        return self._api

    def _namespaces(self) -> list[str] | None:
        return [self._spec.k8s.namespace] if self._spec is not None and self._spec.k8s is not None else None

    def read(self, stack: str) -> list[Resource]:
        """One label-selected list per kind (per namespace); objects of other stacks are dropped."""
        api = self.api()
        namespaces = self._namespaces()
        k8s = self._spec.k8s if self._spec is not None else None
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{STACK_LABEL}={label_value(stack)}"
        found: list[Resource] = []
        if k8s is not None and k8s.create_namespace:
            namespace = kube.read_namespace(api, k8s.namespace)
            if namespace and belongs_to(namespace, stack):
                found.append(to_live_resource(namespace, "Namespace"))
        for kind in KINDS:
            if kind == "Namespace":
                continue
            for obj in kube.list_objects(api, kind, namespaces, selector):
                if belongs_to(obj, stack):
                    found.append(to_live_resource(obj, kind))
        if not found and k8s is not None and not k8s.create_namespace:
            self._require_namespace(api, k8s.namespace)
        return found

    def _require_namespace(self, api: Any, namespace: str) -> None:
        from madinfra.errors import ProviderError

        if kube.read_namespace(api, namespace, forbidden_ok=True) is None:
            raise ProviderError(
                f"namespace '{namespace}' does not exist on {kube.server_url(api)}; create it (kubectl create namespace {namespace}) or set k8s.create_namespace: true"
            )

    def wait_ready(self, resource_ids: list[str], progress: ProgressCallback, timeout: float, interval: float = 2.0) -> list[str]:
        """Poll the workloads among ``resource_ids`` until they are ready (see readiness.py)."""
        from providers.kubernetes import readiness

        wanted = {rid for rid in resource_ids if rid.split("/")[1] in WORKLOAD_KINDS}
        if not wanted or self._spec is None:
            return []
        stack = self._spec.name
        api = self.api()
        namespaces = self._namespaces()
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{STACK_LABEL}={label_value(stack)}"

        def fetch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            workloads = []
            for kind in ("Job", "Deployment", "StatefulSet"):
                if not any(rid.split("/")[1] == kind for rid in wanted):
                    continue
                for obj in kube.list_objects(api, kind, namespaces, selector):
                    if belongs_to(obj, stack) and f"k8s/{kind}/{obj['metadata']['name']}" in wanted:
                        workloads.append(obj)
            pods = [p for p in kube.list_objects(api, "Pod", namespaces, selector) if belongs_to(p, stack)]
            return workloads, pods

        return readiness.wait(fetch, progress, timeout, interval=interval)

    # -- apply ----------------------------------------------------------------------------------
    def _program_resources(self, changes: list[Change]) -> list[Resource]:
        """The whole desired set, with the planned desired versions, minus deleted resources."""
        deleted = {c.resource_id for c in changes if c.action == "delete"}
        by_id = {r.id: r for r in self._desired}
        for change in changes:
            if change.action != "delete" and change.desired is not None:
                by_id[change.resource_id] = change.desired
        return [r for rid, r in by_id.items() if rid not in deleted]

    def _secret_values(self, resources: list[Resource]) -> dict[str, str]:
        from madinfra.secrets import resolve_secrets, secret_digest

        assert self._spec is not None
        values = resolve_secrets(dict(self._spec.secret_env))
        for resource in resources:
            if kind_of(resource.kind) != "Secret":
                continue
            for key, digest in (resource.spec.get("data") or {}).items():
                if key not in values or secret_digest(key, values[key]) != digest:
                    raise MadinfraError(f"secret_env.{key} has changed since the plan was made; run `madinfra plan` again")
        return values

    def apply(self, changes: list[Change], progress: ProgressCallback, record: RecordCallback) -> None:
        """Pulumi ``up`` of the desired set targeted at ``changes``, then wait for readiness."""
        if not changes:
            return
        from providers.kubernetes import automation
        from providers.kubernetes.program import KubeSettings, build_program, provider_urn, resource_urn

        automation.require_pulumi("apply")
        if self._spec is None:
            raise MadinfraError("the Kubernetes provider was asked to apply before computing the stack's desired resources; run `madinfra plan` again")
        stack_name = self._spec.name
        resources = self._program_resources(changes)
        secret_values = self._secret_values(resources)
        target = self.kube_target()
        program = build_program(resources, KubeSettings(kubeconfig=target.kubeconfig, context=target.context), secret_values)
        stack = automation.select_stack(stack_name, self.options.work_dir, program)
        targets = [provider_urn(stack_name)] + [resource_urn(stack_name, c.resource_id) for c in changes]
        router = automation.EventRouter(changes, progress, record, to_live_resource)
        try:
            automation.up(stack, targets, router)
        except MadinfraError as exc:
            for change in router.unrecorded():
                record(change, None, exc)
            raise
        leftovers = router.unrecorded()
        if leftovers:
            live = {r.id: r for r in self.read(stack_name)}
            for change in leftovers:
                router._once(change.resource_id, None if change.action == "delete" else live.get(change.resource_id), None)
        assert self._spec.k8s is not None
        self.wait_ready([c.resource_id for c in changes if c.action != "delete"], progress, self._spec.k8s.ready_timeout)

    def destroy(self, stack: str, progress: ProgressCallback) -> None:
        """Remove everything Pulumi manages for ``stack`` (the engine normally applies deletes)."""
        from providers.kubernetes import automation

        automation.require_pulumi("destroy")
        handle = automation.select_stack(stack, self.options.work_dir, lambda: None)
        router = automation.EventRouter([], progress, lambda *_: None, to_live_resource)
        automation.destroy(handle, router)

    def close(self) -> None:
        if self._api is not None and hasattr(self._api, "close"):
            self._api.close()
        self._api = None
