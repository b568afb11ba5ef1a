"""The Kubernetes provider: desired objects, live read, rules, Pulumi apply, readiness.

This module imports neither Pulumi nor the kubernetes client at import time; each is imported
by the method that needs it, so ``madinfra render`` and ``plan`` never load Pulumi.

The provider remembers the stack it was bound to (``bind``, which ``desired`` also does): ``read``
lists only that stack's namespace (namespaced RBAC suffices) with the stack's kube context, and
``apply`` runs the whole desired set as the Pulumi program while targeting only the planned
changes (so ``apply`` does exactly what the plan showed, and resources outside the plan are left
alone even when Pulumi's state has drifted). ``apply`` goes in steps (rollout.py): one targeted
``pulumi up`` per step, then it waits for that step's workloads to be ready, so the pools of a
serving stack roll one at a time and the proxy last.
"""

from __future__ import annotations

from typing import Any

from madinfra.config.schema import StackSpec
from madinfra.errors import MadinfraError
from madinfra.launchers.model import LaunchPlan
from madinfra.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, STACK_LABEL, label_value
from madinfra.resources import Change, ProgressCallback, ProviderOptions, RecordCallback, Resource, UpdateRules
from providers.kubernetes import client as kube
from providers.kubernetes import rollout
from providers.kubernetes.live import belongs_to, to_live_resource
from providers.kubernetes.manifests import desired_resources, endpoint_service_name
from providers.kubernetes.objects import resource_id
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
    def bind(self, spec: StackSpec) -> None:
        """Act for this stack: its namespace, kube context, Pulumi stack, secrets, timeouts.

        ``desired`` binds too. Commands that never call ``desired`` (destroy, applying a saved
        plan, show, output) must bind first, else ``read`` lists every namespace of the default
        context and ``apply`` refuses to run.
        """
        if spec.k8s is None:
            raise MadinfraError(f"Stack '{spec.name}' targets {spec.target}, not k8s; the Kubernetes provider cannot deploy it")
        if self._spec is not None and self._spec.name != spec.name:
            self._desired = []
        self._spec = spec

    def desired(self, spec: StackSpec, launch: LaunchPlan) -> list[Resource]:
        resources = desired_resources(spec, launch, self.options.stack_dir)
        self.bind(spec)
        self._desired = resources
        return resources

    def update_rules(self, kind: str) -> UpdateRules:
        return update_rules(kind)

    def restarts_on_update(self, change: Change) -> bool:
        """An in-place update of a Deployment/StatefulSet pod template rolls its pods."""
        return rollout.restarts_pods(change)

    def plan_warnings(self, changes: list[Change]) -> list[str]:
        """Changes that would leave a serving role with no ready replica (see rollout.py)."""
        return rollout.warnings(changes)

    def outputs(self, spec: StackSpec, live: list[Resource]) -> dict[str, str]:
        """``endpoint``: the OpenAI-compatible URL of an inference stack, inside the cluster.

        It is ``http://<stack>-api.<namespace>.svc.cluster.local:<port><api_path>``, with the
        port the live Service really has; ``(not deployed)`` while that Service does not exist.
        """
        from madinfra.launchers.registry import lookup

        if lookup(spec.distributed.launcher).workload != "service" or spec.k8s is None:
            return {}
        name = endpoint_service_name(spec.name)
        service = next((r for r in live if r.id == resource_id("Service", name)), None)
        ports = ((service.spec.get("spec") or {}).get("ports") or []) if service is not None else []
        if not ports:
            return {"endpoint": "(not deployed)"}
        port = next((p["port"] for p in ports if p.get("name") == "http"), ports[0]["port"])
        namespace = (service.spec.get("metadata") or {}).get("namespace") or spec.k8s.namespace
        api_path = spec.service.api_path if spec.service is not None else "/v1"
        if api_path and not api_path.startswith("/"):
            api_path = "/" + api_path
        return {"endpoint": f"http://{name}.{namespace}.svc.cluster.local:{port}{api_path}"}

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

    def _bound(self, action: str) -> StackSpec:
        if self._spec is None:
            raise MadinfraError(
                f"the Kubernetes provider was asked to {action} before it was given the stack's settings (namespace, kube context); "
                "run `madinfra plan` again, and report this if it keeps happening"
            )
        return self._spec

    def apply(self, changes: list[Change], progress: ProgressCallback, record: RecordCallback) -> None:
        """Pulumi ``up`` of the desired set, one targeted step at a time, waiting for each
        step's workloads to be ready before the next (see rollout.steps)."""
        if not changes:
            return
        from providers.kubernetes import automation
        from providers.kubernetes.program import KubeSettings, build_program

        automation.require_pulumi("apply")
        spec = self._bound("apply changes")
        resources = self._program_resources(changes)
        secret_values = self._secret_values(resources)
        target = self.kube_target()
        program = build_program(resources, KubeSettings(kubeconfig=target.kubeconfig, context=target.context), secret_values)
        stack = automation.select_stack(spec.name, self.options.work_dir, program)
        waited = {c.resource_id for c in changes if c.action != "delete" and c.resource_id.split("/")[1] in WORKLOAD_KINDS}
        router = automation.EventRouter(changes, progress, record, to_live_resource, hold=waited)
        for step in rollout.steps(changes):
            self._apply_step(stack, step, router, progress)

    def _apply_step(self, stack: Any, step: list[Change], router: Any, progress: ProgressCallback) -> None:
        """One targeted ``up``, then readiness of the step's workloads; raises on failure after
        recording it (the engine reports later steps as not done)."""
        from providers.kubernetes import automation
        from providers.kubernetes.program import provider_urn, resource_urn

        spec = self._bound("apply changes")
        assert spec.k8s is not None
        rids = [c.resource_id for c in step]
        targets = [provider_urn(spec.name)] + [resource_urn(spec.name, rid) for rid in rids]
        try:
            automation.up(stack, targets, router)
        except MadinfraError as exc:
            router.fail(rids, exc)
            raise
        leftovers = [c for c in step if c.resource_id not in router.recorded]
        if leftovers:
            live = {r.id: r for r in self.read(spec.name)}
            for change in leftovers:
                router.report(change.resource_id, None if change.action == "delete" else live.get(change.resource_id), None)
        waited = [rid for rid in rids if rid in router.hold]
        try:
            self.wait_ready(waited, progress, spec.k8s.ready_timeout)
        except MadinfraError as exc:
            router.fail(waited, exc)
            raise
        for rid in waited:
            router.release(rid)

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
