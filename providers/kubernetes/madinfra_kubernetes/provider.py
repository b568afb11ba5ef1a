"""The Kubernetes provider: desired objects, live read, rules, Pulumi apply, readiness.

Pulumi is imported only by ``apply``/``destroy``, so ``madinfra render`` and ``plan`` never load
it; reads use the small HTTPS client in apiserver.py (the official client takes seconds to import).

The provider remembers the stack it was bound to (``bind``, which ``desired`` also does): ``read``
lists that stack's objects cluster-wide (namespaced RBAC falls back to the stack's namespaces)
with the stack's kube context, and ``apply`` runs the whole desired set as the Pulumi program
while targeting only the planned changes, after checking with a preview that Pulumi would take
exactly the planned steps (routing.py says which, from Pulumi's own state). ``apply`` goes in
steps (rollout.py): one targeted ``pulumi up`` per step, then it waits for that step's workloads
to be ready, so the pools of a serving stack roll one at a time and the proxy last. A pool whose
replicas roll is carried out replica by replica, with surge and rollback (pool_apply.py,
pools.py), exactly as ``plan_rollouts`` (pool_plan.py, gpu_room.py) showed it in the plan.
"""

from __future__ import annotations

from typing import Any

from madinfra.config.schema import StackSpec
from madinfra.errors import MadinfraError, ProviderError
from madinfra.interrupt import stop_requested
from madinfra.launchers.model import LaunchPlan
from madinfra.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, STACK_LABEL, label_value
from madinfra.rollout import RolloutPlan
from madinfra.resources import Change, ProgressCallback, ProviderOptions, RecordCallback, Resource, UpdateRules
from madinfra_kubernetes import client as kube
from madinfra_kubernetes import rollout
from madinfra_kubernetes.live import belongs_to, disambiguate, to_live_resource
from madinfra_kubernetes.manifests import desired_resources, endpoint_service_name
from madinfra_kubernetes.objects import resource_id
from madinfra_kubernetes.render import render_files
from madinfra_kubernetes.rules import KINDS, WORKLOAD_KINDS, kind_of, update_rules


def _inconsistent(changes: list[Change], plan_routes: dict[str, Any], actions: dict[str, str], verb: str = "did") -> list[str]:
    """One phrase per change Pulumi did (or would do) differently from the plan."""
    wrong = []
    for change in changes:
        expected = plan_routes[change.resource_id].pulumi_action
        if expected is None:
            continue
        actual = actions.get(change.resource_id, "same")
        if actual != expected:
            step = f"{change.action} (a Pulumi {expected})" if expected != change.action else change.action
            wrong.append(f"{change.resource_id}: the plan says {step}, Pulumi {verb} '{actual}'")
    return wrong

_UNREAD = object()
"""``KubernetesProvider._nodes`` before the Nodes were listed for the current live read."""


class KubernetesProvider:
    """``Provider`` for ``target: k8s`` stacks (entry point ``k8s`` of the madinfra-kubernetes distribution, providers/kubernetes/pyproject.toml)."""

    name = "k8s"

    def __init__(self, options: ProviderOptions | None = None, *, api: Any = None):
        self.options = options or ProviderOptions()
        self._api = api
        self._spec: StackSpec | None = None
        self._desired: list[Resource] = []
        self._live: list[Resource] | None = None
        self._nodes: object = _UNREAD
        self._rollouts: tuple[frozenset[tuple[str, str]], RolloutPlan] | None = None

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

    def finished_and_gone(self, desired: Resource, applied: Any) -> str | None:
        """A training Job that madinfra saw finish, or whose ``ttlSecondsAfterFinished`` has
        Kubernetes remove it once it finished, is not run again when it is gone (SLURM keeps
        end markers for the same reason): rerunning days of training silently is the worse error.
        A Job deleted by hand before madinfra saw it finish and without a TTL is created again."""
        if kind_of(desired.kind) != "Job":
            return None
        ttl = (desired.spec.get("spec") or {}).get("ttlSecondsAfterFinished")
        ended = getattr(applied, "finished", None)
        if ttl is None and not ended:
            return None
        how = f" ({ended})" if ended else ""
        why = f"Kubernetes removes it {ttl} s after it finishes (ttlSecondsAfterFinished)" if ttl is not None else "it was deleted after it finished"
        return f"{desired.id} finished{how} and is gone: {why}; it is not run again (`madinfra apply --replace {desired.role or desired.name}` runs it again)"

    def time_limit_hours(self, resource: Resource) -> float | None:
        """Hours a training Job holds its GPUs at most (``spec.activeDeadlineSeconds``), for the
        plan's cost; ``None``: no limit (Kubernetes runs a Job until it ends)."""
        if kind_of(resource.kind) != "Job":
            return None
        deadline = (resource.spec.get("spec") or {}).get("activeDeadlineSeconds")
        return deadline / 3600 if isinstance(deadline, (int, float)) and deadline > 0 else None

    def restarts_on_update(self, change: Change) -> bool:
        """An in-place update of a Deployment/StatefulSet pod template rolls its pods."""
        return rollout.restarts_pods(change)

    def plan_rollouts(self, changes: list[Change], gpus_before: int, gpus_after: int) -> RolloutPlan:
        """What each replica of each pool goes through (pool_plan.py), with the surge room the
        cluster has now (gpu_room.py: one list of Nodes and one of Pods, only when a pool
        changes). Kept for ``apply``, which carries out exactly this plan."""
        from madinfra_kubernetes.pool_apply import change_key, rollout_plan

        result = rollout_plan(self._spec, self.api, changes, gpus_before, gpus_after, self._cluster_nodes)
        self._rollouts = (change_key(changes), result)
        return result

    def plan_warnings(self, changes: list[Change]) -> list[str]:
        """Changes that would leave a serving role with no ready replica (see rollout.py; pools
        rolled replica by replica are covered by ``RolloutPlan.warnings``), and where Pulumi's
        state and the cluster disagree (see routing.py)."""
        from madinfra.config import pool_roles
        from madinfra_kubernetes.pulumi_state import known_objects
        from madinfra_kubernetes.routing import disagreements

        notes = rollout.warnings(changes, pool_roles(self._spec) if self._spec is not None else ())
        if self._spec is not None and self._live is not None:
            notes += disagreements(changes, known_objects(self.options.work_dir, self._spec.name), self._live)
        return notes + self._node_fit(changes)

    def _node_fit(self, changes: list[Change]) -> list[str]:
        """Pods no node of the cluster could hold now (node_fit.py); asks for the Nodes only when
        the plan starts pods with GPUs, and says nothing when RBAC forbids listing them."""
        from madinfra_kubernetes import node_fit

        spec = self._spec
        pods = node_fit.starting_pods(changes)
        if spec is None or spec.k8s is None or not pods:
            return []
        nodes = self._cluster_nodes()
        if nodes is None:
            return []
        k8s = spec.k8s
        largest = node_fit.largest_node(nodes, k8s.gpu_resource_name, k8s.node_selector, list(k8s.tolerations))
        where = "that match k8s.node_selector and tolerate their taints" if k8s.node_selector or k8s.tolerations else "in the cluster"
        return node_fit.warnings(pods, largest, k8s.gpu_resource_name, where)

    def _cluster_nodes(self) -> list[dict[str, Any]] | None:
        """The cluster's Nodes, listed once per live read (``None``: RBAC forbids it)."""
        if self._nodes is _UNREAD:
            self._nodes = kube.list_cluster_wide(self.api(), "Node")
        return self._nodes  # type: ignore[return-value]

    def outputs(self, spec: StackSpec, live: list[Resource]) -> dict[str, str]:
        """``endpoint``: the OpenAI-compatible URL of an inference stack, inside the cluster.

        It is ``http://<stack>-api.<namespace>.svc.<cluster domain>:<port><api_path>``, with the
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
        return {"endpoint": f"http://{name}.{namespace}.svc.{spec.k8s.cluster_domain}:{port}{api_path}"}

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
        """One label-selected list per kind, cluster-wide, so objects the stack left in another
        namespace (after a namespace change) are found and deleted too; a user whose RBAC stops
        at namespaces gets the stack's namespace and those Pulumi's state knows instead."""
        api = self.api()
        k8s = self._spec.k8s if self._spec is not None else None
        selector = self._selector(stack)
        fallback = self._fallback_namespaces(stack)
        found: list[Resource] = []
        for kind in KINDS:
            if kind == "Namespace":
                found.extend(self._read_namespaces(api, stack))
                continue
            for obj in kube.list_everywhere(api, kind, selector, fallback):
                if belongs_to(obj, stack):
                    found.append(to_live_resource(obj, kind))
        if not found and k8s is not None and not k8s.create_namespace:
            self._require_namespace(api, k8s.namespace)
        self._live = disambiguate(found, k8s.namespace if k8s is not None else None)
        self._nodes = _UNREAD
        return self._live

    def _selector(self, stack: str) -> str:
        return f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{STACK_LABEL}={label_value(stack)}"

    def _fallback_namespaces(self, stack: str) -> list[str]:
        from madinfra_kubernetes.pulumi_state import known_objects, namespaces

        names = set(namespaces(known_objects(self.options.work_dir, stack)))
        if self._spec is not None and self._spec.k8s is not None:
            names.add(self._spec.k8s.namespace)
        return sorted(names) or ["default"]

    def _read_namespaces(self, api: Any, stack: str) -> list[Resource]:
        """Namespaces labelled with the stack: the one it creates, and old ones it created."""
        wanted = {self._spec.k8s.namespace} if self._spec is not None and self._spec.k8s is not None and self._spec.k8s.create_namespace else set()
        try:
            objects = kube.list_namespaces(api, self._selector(stack))
        except MadinfraError:
            objects = [ns for ns in (kube.read_namespace(api, name) for name in wanted) if ns]
        return [to_live_resource(obj, "Namespace") for obj in objects if belongs_to(obj, stack)]

    def _require_namespace(self, api: Any, namespace: str) -> None:
        from madinfra.errors import ProviderError

        if kube.read_namespace(api, namespace, forbidden_ok=True) is None:
            raise ProviderError(
                f"namespace '{namespace}' does not exist on {kube.server_url(api)}; create it (kubectl create namespace {namespace}) or set k8s.create_namespace: true"
            )

    def wait_ready(self, resource_ids: list[str], progress: ProgressCallback, timeout: float, interval: float = 1.0, timeout_field: str = "k8s.ready_timeout") -> list[str]:
        """Poll the workloads among ``resource_ids`` until they are ready (see readiness.py)."""
        from madinfra_kubernetes import readiness

        wanted = {rid for rid in resource_ids if rid.split("/")[1] in WORKLOAD_KINDS}
        if not wanted or self._spec is None:
            return []
        stack = self._spec.name
        api = self.api()
        namespaces = self._namespaces()
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{STACK_LABEL}={label_value(stack)}"

        def fetch() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
            workloads = []
            for kind in ("Job", "Deployment", "StatefulSet"):
                if not any(rid.split("/")[1] == kind for rid in wanted):
                    continue
                for obj in kube.list_objects(api, kind, namespaces, selector):
                    if belongs_to(obj, stack) and f"k8s/{kind}/{obj['metadata']['name']}" in wanted:
                        workloads.append(obj)
            pods = [p for p in kube.list_objects(api, "Pod", namespaces, selector) if belongs_to(p, stack)]
            replicasets: list[dict[str, Any]] = []
            if any(obj.get("kind") == "Deployment" for obj in workloads):
                replicasets = kube.list_objects(api, "ReplicaSet", namespaces, selector)
            return workloads, pods, replicasets

        return readiness.wait(fetch, progress, timeout, interval=interval, timeout_field=timeout_field)

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

        from madinfra_kubernetes.credentials import CREDENTIAL_KEY, local_credential

        assert self._spec is not None
        values = resolve_secrets(dict(self._spec.secret_env))
        credential = local_credential(self._spec, self.options.stack_dir)
        if credential is not None:
            values[CREDENTIAL_KEY] = credential
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
        """Carry out the plan one step at a time (rollout.steps), each a targeted Pulumi ``up``
        (plus Kubernetes API deletes of objects Pulumi does not know, see routing.py), waiting
        for each step's workloads to be ready before the next.

        Where Pulumi's step depends on its own diff (routing.pulumi_must_diff), its state is
        refreshed and a preview checks, before anything changes, that it would take exactly the
        planned action on every resource; after every ``up`` the steps it really took are checked
        again. A difference stops the apply with both actions named (Terraform's "inconsistent
        plan").
        """
        if not changes:
            return
        from madinfra_kubernetes import automation, pool_apply, routing
        from madinfra_kubernetes.program import KubeSettings, build_program
        from madinfra_kubernetes.pulumi_state import has_pending_operations, known_objects

        automation.require_pulumi("apply")
        spec = self._bound("apply changes")
        resources = self._program_resources(changes)
        secret_values = self._secret_values(resources)
        target = self.kube_target()
        program = build_program(resources, KubeSettings(kubeconfig=target.kubeconfig, context=target.context), secret_values)
        stack = automation.select_stack(spec.name, self.options.work_dir, program)
        known = known_objects(self.options.work_dir, spec.name)
        must_diff = routing.pulumi_must_diff(changes, known)
        if must_diff or has_pending_operations(self.options.work_dir, spec.name):
            automation.refresh(stack)
            known = known_objects(self.options.work_dir, spec.name)
        plan_routes = routing.routes(changes, known)
        waited = {c.resource_id for c in changes if c.action != "delete" and c.resource_id.split("/")[1] in WORKLOAD_KINDS}
        router = automation.EventRouter(changes, progress, record, to_live_resource, hold=waited)
        if must_diff:
            self._check_preview(stack, changes, plan_routes)
        if self._rollouts is None or self._rollouts[0] != pool_apply.change_key(changes):
            self.plan_rollouts(changes, *pool_apply.gpus_of(changes))  # apply without a plan (destroy)
        pools = pool_apply.rolled_pools(changes, self._rollouts[1])  # type: ignore[index]
        together = pool_apply.together_changes(changes, self._rollouts[1])  # type: ignore[index]
        together_ids = {c.resource_id for c in together}
        seen: set[str] = set()
        rolled_together = False
        for step in rollout.steps(changes):
            if stop_requested():
                return  # Ctrl-C: the engine reports the remaining changes as not started
            rest = [c for c in step if c.resource_id not in pools and c.resource_id not in together_ids]
            if rest:
                self._apply_step(stack, rest, router, progress, plan_routes)
            seen |= {c.resource_id for c in step} & together_ids
            if together and seen == together_ids and not rolled_together:
                # Both pools in one step, once everything before either of them is applied.
                rolled_together = True
                pool_apply.roll_together(self, stack, program, together, router, progress, lambda: self._planned_up(stack, together, router, plan_routes))
            for change in (c for c in step if c.resource_id in pools):
                pool_apply.roll(self, stack, program, change, pools[change.resource_id], router, progress, lambda c=change: self._planned_up(stack, [c], router, plan_routes))

    def _pulumi_targets(self, step: list[Change], plan_routes: dict[str, Any]) -> tuple[list[str], list[str]]:
        """URNs to target (the provider first) and URNs Pulumi must replace, for one step."""
        from madinfra_kubernetes.program import provider_urn, resource_urn

        spec = self._bound("apply changes")
        rids = [c.resource_id for c in step if plan_routes[c.resource_id].uses_pulumi]
        replace = [resource_urn(spec.name, c.resource_id) for c in step if plan_routes[c.resource_id].pulumi_action == "replace"]
        targets = [provider_urn(spec.name)] + [resource_urn(spec.name, rid) for rid in rids] if rids else []
        return targets, replace

    def _check_preview(self, stack: Any, changes: list[Change], plan_routes: dict[str, Any]) -> None:
        """Stop before changing anything when Pulumi would not do what the plan says."""
        from madinfra_kubernetes import automation

        targets, replace = self._pulumi_targets(changes, plan_routes)
        if not targets:
            return
        predicted = automation.preview(stack, targets, replace)
        wrong = _inconsistent(changes, plan_routes, predicted, "plans")
        if wrong:
            raise ProviderError(f"Nothing was changed: Pulumi would not carry out the plan as shown ({'; '.join(wrong)}); run `madinfra plan` again, and report this if it persists")

    def _apply_step(self, stack: Any, step: list[Change], router: Any, progress: ProgressCallback, plan_routes: dict[str, Any]) -> None:
        """API deletes, then one targeted ``up``, then readiness of the step's workloads; raises
        on failure after recording it (the engine reports later steps as not done)."""
        spec = self._bound("apply changes")
        assert spec.k8s is not None
        rids = [c.resource_id for c in step]
        for change in step:
            # A replacement's old object goes first, through the API, waiting until it and its
            # pods are gone: pulumi-kubernetes' own delete-before-replace can return while a
            # foreground deletion is still under way, and the new object of the same name then
            # hits the old one ("field is immutable"). Pulumi's delete then finds nothing to do.
            if plan_routes[change.resource_id].api_delete or change.action == "replace":
                self._api_delete(change, router, progress, spec.k8s.ready_timeout)
            elif change.action == "update" and change.current is not None and kind_of(change.current.kind) == "StatefulSet":
                from madinfra_kubernetes.pools import set_partition

                set_partition(self.api(), (change.current.spec.get("metadata") or {}).get("namespace") or spec.k8s.namespace, change.current.name, None)
        self._planned_up(stack, step, router, plan_routes)
        leftovers = [c for c in step if c.resource_id not in router.recorded]
        if leftovers:
            live = {r.id: r for r in self.read(spec.name)}
            for change in leftovers:
                router.report(change.resource_id, None if change.action == "delete" else live.get(change.resource_id), None)
        waited = [rid for rid in rids if rid in router.hold]
        try:
            timeout_field = "service.health_check.timeout" if spec.is_service else "k8s.ready_timeout"
            self.wait_ready(waited, progress, self._ready_timeout(spec), timeout_field=timeout_field)
        except MadinfraError as exc:
            router.fail(waited, exc)
            raise
        for rid in waited:
            router.release(rid)
        from madinfra_kubernetes.pool_apply import settle_proxy

        settle_proxy(self, waited, progress)

    def _planned_up(self, stack: Any, step: list[Change], router: Any, plan_routes: dict[str, Any]) -> None:
        """One targeted ``up`` of the step's planned changes, then the check that Pulumi took
        exactly the planned steps (records the failure and raises otherwise)."""
        from madinfra_kubernetes import automation

        rids = [c.resource_id for c in step]
        targets, replace = self._pulumi_targets(step, plan_routes)
        if not targets:
            return
        try:
            automation.up(stack, targets, router, replace)
        except MadinfraError as exc:
            router.fail(rids, exc)
            raise
        done = {rid: automation.pulumi_action(router.steps.get(rid, [])) for rid in rids}
        wrong = _inconsistent(step, plan_routes, done)
        if wrong:
            error = ProviderError(f"Pulumi did not carry out the plan as shown ({'; '.join(wrong)}); the cluster now differs from the plan, run `madinfra plan` to see how")
            router.overrule(rids, error)
            raise error

    @staticmethod
    def _ready_timeout(spec: StackSpec) -> int:
        """How long apply waits for a step's workloads: a serving stack's servers get
        ``service.health_check.timeout`` to pass their health check (model loading takes a
        while), training Jobs ``k8s.ready_timeout`` to start."""
        from madinfra.config.schema import HealthCheck

        assert spec.k8s is not None
        if spec.is_service:
            return (spec.service.health_check if spec.service is not None else HealthCheck()).timeout
        return spec.k8s.ready_timeout

    def _api_delete(self, change: Change, router: Any, progress: ProgressCallback, timeout: float) -> None:
        """Delete a change's live object through the Kubernetes API and wait until it is gone."""
        assert change.current is not None
        metadata = change.current.spec.get("metadata") or {}
        kind = kind_of(change.current.kind)
        why = "the old object goes first" if change.action == "replace" else "not in Pulumi's state"
        progress(change.resource_id, f"deleting through the Kubernetes API ({why}), waiting until it is gone")
        try:
            kube.delete_object(self.api(), kind, metadata.get("namespace"), metadata["name"], timeout)
        except MadinfraError as exc:
            router.fail([change.resource_id], exc)
            raise
        if change.action == "delete":
            progress(change.resource_id, "deleted")
            router.report(change.resource_id, None, None)

    def destroy(self, stack: str, progress: ProgressCallback) -> None:
        """Remove every object labelled with ``stack``: Pulumi deletes what it knows, the
        Kubernetes API the rest (the engine normally plans these deletes and calls ``apply``)."""
        from madinfra.planner.order import order_changes
        from madinfra_kubernetes import automation

        automation.require_pulumi("destroy")
        live = self.read(stack)
        changes = order_changes([Change("delete", r.id, None, r) for r in live])
        failures: list[str] = []

        def record(change: Change, _live: Resource | None, error: Exception | None) -> None:
            if error is not None:
                failures.append(f"{change.resource_id}: {error}")

        self.apply(changes, progress, record)
        if failures:
            raise ProviderError(f"destroy of stack '{stack}' incomplete: {'; '.join(failures)}")

    def logs(self, spec: StackSpec, desired: list[Resource], query: Any) -> Any:
        """``madinfra logs``: ``query`` a madinfra.logs.LogQuery, an iterator of LogLine back: the
        roles' pod output through the pod log API, by role and rank (a Job's completion index, a
        StatefulSet's ordinal, a Deployment's replicas by creation order), in time order; see
        logs.py and log_follow.py (madinfra.logs is imported there, not by every command)."""
        from madinfra_kubernetes.logs import read_logs

        self.bind(spec)
        return read_logs(self.api(), spec, desired, query)

    def close(self) -> None:
        if self._api is not None and hasattr(self._api, "close"):
            self._api.close()
        self._api = None
