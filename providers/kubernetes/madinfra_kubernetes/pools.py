"""Apply one pool's planned rollout replica by replica, with surge, and roll it back on failure.

A StatefulSet cannot surge and rolls every pod on a template change. In the style of
LeaderWorkerSet (surge groups at indices >= replicas), madinfra drives it:

1. ``partition`` = the kept replicas (server-side apply under the field manager
   ``madinfra-rollout``, apart from Pulumi's: Pulumi never sets that field, so its state and diff
   never see it), so the template change restarts no running pod;
2. scale-in: the proxy stops naming the removed replicas (its old pods gone) first;
3. the planned Pulumi update (new template, replicas = final + surge): added and surge pods start
   on the new template and must get ready;
4. per batch (``surge`` replicas, or ``unavailable`` without surge), highest ordinals first: the
   proxy names every ready pod but the batch (the surge pods included) and its old pods are gone,
   then the partition goes down to the batch and its pods are recreated from the new revision;
   so the proxy only ever names ready pods (except the only pod of a one-replica pool rolled
   without surge, which the plan warns about);
5. the proxy names the final replicas (exactly its recorded spec when the size is unchanged);
6. the surge pods go (replicas = final, through Pulumi);
7. the partition field is released (the API server defaults it to 0, as before).

Pulumi carries every transient ``replicas`` and proxy list (targeted ``up``s of the program with
that one object changed), so its state is always what the cluster runs; the planned update is the
first of them and is the one checked against the plan. On failure (a new pod not ready within the
timeout, or failing for good) the pool is rolled back unless ``--no-rollback``: the proxy names
only old replicas, the StatefulSet gets its previous spec back (as Pulumi recorded it), the
partition is released and the pods of the failed revision are deleted so the controller recreates
them from the old one (the StatefulSet "forced rollback"), then the proxy is restored exactly.

A Deployment pool (multi-node vLLM) rolls itself: the planned update carries the plan's
``maxSurge``/``maxUnavailable``; the stack's own strategy is restored after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from madinfra.errors import MadinfraError, ProviderError
from madinfra.resources import Change, ProgressCallback
from madinfra.rollout import PoolRollout, index_ranges
from madinfra_kubernetes import client as kube
from madinfra_kubernetes.proxy_routes import listing, with_listing
from madinfra_kubernetes.readiness import pod_problem

ROLLOUT_MANAGER = "madinfra-rollout"
REVISION_LABEL = "controller-revision-hash"

Up = Callable[[dict[str, dict[str, Any]], bool], None]
"""``up(overrides, planned)``: a targeted Pulumi up of the objects in ``overrides`` (resource id ->
manifest to send); ``planned``: it is the plan's own step (recorded and checked)."""


class RolledBack(ProviderError):
    """The pool failed and was restored as it was; the message says what runs now."""


def set_partition(api: Any, namespace: str, name: str, value: int | None) -> None:
    """Own ``spec.updateStrategy.rollingUpdate.partition`` as ``madinfra-rollout`` (None: release
    it, and the API server defaults it to 0 again; also what an apply does first to any
    StatefulSet it changes, in case an earlier apply was killed mid-rollout)."""
    body: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": namespace}}
    if value is not None:
        body["spec"] = {"updateStrategy": {"rollingUpdate": {"partition": value}}}
    kube.apply_fields(api, "StatefulSet", namespace, name, body, ROLLOUT_MANAGER)


@dataclass
class Proxy:
    """The proxy Deployment whose command names the pool's pods."""

    rid: str
    namespace: str
    name: str
    base: dict[str, Any]
    """Its spec as Pulumi recorded it when the pool's rollout started (restored on rollback)."""
    selector: str


@dataclass
class PoolDriver:
    api: Any
    progress: ProgressCallback
    up: Up
    timeout: float
    timeout_field: str
    rollback: bool
    poll: float = 0.5

    # -- small cluster helpers ------------------------------------------------------------------
    def _partition(self, namespace: str, name: str, value: int | None) -> None:
        set_partition(self.api, namespace, name, value)

    def _statefulset(self, namespace: str, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            sts = kube.read_object(self.api, "StatefulSet", namespace, name)
            if sts is None:
                raise ProviderError(f"StatefulSet {namespace}/{name} disappeared during its rollout; run `madinfra plan` to see the stack as it is")
            status = sts.get("status") or {}
            if (status.get("observedGeneration") or 0) >= (sts["metadata"].get("generation") or 0) and status.get("updateRevision"):
                return sts
            if time.monotonic() >= deadline:
                raise ProviderError(f"the StatefulSet controller did not pick up {namespace}/{name} within 30 s; check kube-controller-manager")
            time.sleep(self.poll)

    def _pods(self, sts: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """Ordinal -> pod of this StatefulSet (by owner UID)."""
        namespace, name, uid = sts["metadata"]["namespace"], sts["metadata"]["name"], sts["metadata"]["uid"]
        labels = ",".join(f"{k}={v}" for k, v in sts["spec"]["selector"]["matchLabels"].items())
        found = {}
        for pod in kube.list_objects(self.api, "Pod", [namespace], labels):
            owners = {ref.get("uid") for ref in pod["metadata"].get("ownerReferences") or []}
            suffix = pod["metadata"]["name"][len(name) + 1:]
            if uid in owners and suffix.isdigit():
                found[int(suffix)] = pod
        return found

    def _wait_pods(self, rid: str, sts: dict[str, Any], ordinals: list[int], revision: str, what: str) -> None:
        """Until the pods ``ordinals`` run ``revision`` and are Ready; raises on timeout or a
        failure that will not fix itself, naming the pod and Kubernetes' reason."""
        if not ordinals:
            return
        deadline = time.monotonic() + self.timeout
        last = ""
        while True:
            pods = self._pods(sts)
            missing = []
            for n in ordinals:
                pod = pods.get(n)
                if pod is None or pod["metadata"].get("deletionTimestamp") or pod["metadata"].get("labels", {}).get(REVISION_LABEL) != revision:
                    missing.append(f"pod {sts['metadata']['name']}-{n} is not created from the new revision yet")
                    continue
                problem = pod_problem(pod)
                if problem is not None and problem[1]:
                    raise ProviderError(f"{rid} failed: {problem[0]}")
                ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])
                if not ready:
                    missing.append(problem[0] if problem else f"pod {sts['metadata']['name']}-{n} is not ready")
            if not missing:
                self.progress(rid, f"{what} ready")
                return
            if missing[0] != last:
                self.progress(rid, f"waiting for {what}: {missing[0]}")
                last = missing[0]
            if time.monotonic() >= deadline:
                raise ProviderError(f"{rid} was not ready after {int(self.timeout)} s ({self.timeout_field}): {missing[0]}")
            time.sleep(self.poll)

    def _route(self, proxy: Proxy, sts: str, ordinals: list[int], note: str | None) -> None:
        """Point the proxy at ``ordinals`` of ``sts`` and wait until every proxy pod (terminating
        ones too: they still route) names exactly them."""
        spec = with_listing(proxy.base, sts, ordinals, note)
        self.progress(proxy.rid, f"routing {sts.rsplit('-', 1)[-1]} to replicas {index_ranges(ordinals)}")
        self.up({proxy.rid: spec}, False)
        self.wait_proxy(proxy, sts, ordinals)

    def wait_proxy(self, proxy: Proxy, sts: str, ordinals: list[int]) -> None:
        deadline = time.monotonic() + self.timeout
        replicas = int((proxy.base.get("spec") or {}).get("replicas", 1) or 1)
        while True:
            pods = kube.list_objects(self.api, "Pod", [proxy.namespace], proxy.selector)
            lists = [listing(pod, sts) for pod in pods]
            ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(c.get("type") == "Ready" and c.get("status") == "True" for c in (p.get("status") or {}).get("conditions") or [])]
            if all(found == ordinals for found in lists) and len(ready) >= replicas:
                return
            if time.monotonic() >= deadline:
                raise ProviderError(f"{proxy.rid} did not switch to the new endpoint list within {int(self.timeout)} s ({self.timeout_field}); see `kubectl describe deployment {proxy.name}`")
            time.sleep(self.poll)

    # -- StatefulSet pools ------------------------------------------------------------------------
    def roll_statefulset(self, change: Change, plan: PoolRollout, recorded: dict[str, Any], proxy: Proxy | None) -> dict[str, Any]:
        """Steps 1-7 of the module docstring; returns the live StatefulSet after the rollout."""
        assert change.desired is not None
        rid = change.resource_id
        desired = change.desired.spec
        namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        before, after, surge = plan.before, plan.after, plan.surge
        kept = min(before, after)
        if proxy is not None and listing(proxy.base, name) != list(range(before)):
            proxy = None  # the proxy does not name this pool's pods one by one (custom command)
        routed: list[int] | None = None
        self._partition(namespace, name, kept)
        try:
            if after < before and proxy is not None:
                routed = list(range(after))
                self._route(proxy, name, routed, f"{name}: draining replicas {index_ranges(range(after, before))}")
            grown = {**desired, "spec": {**desired["spec"], "replicas": after + surge}}
            self.progress(rid, f"new template on replicas {index_ranges(range(kept, after + surge))}" if after + surge > kept else "new template, no pod restarted yet")
            self.up({rid: grown}, True)
            sts = self._statefulset(namespace, name)
            revision = sts["status"]["updateRevision"]
            fresh = list(range(kept, after + surge))
            self._wait_pods(rid, sts, fresh, revision, f"replicas {index_ranges(fresh)}" + (f" (surge {surge})" if surge else ""))
            serving = list(range(after + surge))
            for batch in reversed(plan.batches()):
                lowest = min(batch)
                away = [n for n in serving if n not in batch]
                if proxy is not None and away and away != (routed if routed is not None else list(range(before))):
                    # The proxy stops naming the batch before it restarts (and names the surge
                    # and the batch replaced before): it only ever names ready pods.
                    routed = away
                    self._route(proxy, name, routed, f"{name}: replacing replica{'s' if len(batch) > 1 else ''} {index_ranges(batch)}")
                self.progress(rid, f"rolling replica{'s' if len(batch) > 1 else ''} {index_ranges(batch)}")
                self._partition(namespace, name, lowest)
                pods = self._pods(sts)
                for n in batch:
                    pod = pods.get(n)
                    if pod is not None and pod["metadata"].get("labels", {}).get(REVISION_LABEL) != revision:
                        kube.delete_pod(self.api, namespace, pod["metadata"]["name"])
                self._wait_pods(rid, sts, list(batch), revision, f"replica{'s' if len(batch) > 1 else ''} {index_ranges(batch)}")
            final = list(range(after))
            if proxy is not None and routed is not None and routed != final:
                # Same size: the proxy gets exactly its recorded spec back (no annotation).
                routed = final
                self._route(proxy, name, routed, None if after == before else f"{name}: rolled")
            if surge:
                self.progress(rid, f"removing surge replica{'s' if surge > 1 else ''} {index_ranges(range(after, after + surge))}")
                self.up({rid: desired}, False)
            self._partition(namespace, name, None)
        except MadinfraError as exc:
            if not self.rollback:
                self._partition(namespace, name, None)
                raise ProviderError(f"{exc}; stopped there (--no-rollback): the pool is left as it is, run `madinfra plan` to see it") from None
            self._roll_back_statefulset(rid, namespace, name, recorded, before, proxy, routed)
            which = f"replica{'s' if before > 1 else ''} {index_ranges(range(before))}"
            raise RolledBack(f"{exc}; rolled back: {rid} runs its previous template on {which}, the change is not applied") from None
        return self._statefulset(namespace, name)

    def _roll_back_statefulset(self, rid: str, namespace: str, name: str, recorded: dict[str, Any], before: int, proxy: Proxy | None, routed: list[int] | None) -> None:
        """The proxy names only old replicas that still serve, the StatefulSet gets its recorded
        spec back, the pods of the failed revision are recreated from the old one, then the
        proxy gets its recorded spec back (``routed``: what it names now, None if untouched)."""
        self.progress(rid, "rolling back to the previous template")
        if proxy is not None and routed is not None:
            sts = self._statefulset(namespace, name)
            old = sts["status"].get("currentRevision")
            pods = self._pods(sts)
            serving = [n for n in range(before) if n in pods and pods[n]["metadata"].get("labels", {}).get(REVISION_LABEL) == old]
            if serving and serving != routed:
                self._route(proxy, name, serving, f"{name}: rolling back")
        self.up({rid: recorded}, False)
        self._statefulset(namespace, name)
        self._partition(namespace, name, None)
        sts = self._statefulset(namespace, name)
        revision = sts["status"]["updateRevision"]
        for pod in self._pods(sts).values():
            if pod["metadata"].get("labels", {}).get(REVISION_LABEL) != revision:
                kube.delete_pod(self.api, namespace, pod["metadata"]["name"])
        try:
            self._wait_pods(rid, sts, list(range(before)), revision, f"previous template on replicas {index_ranges(range(before))}")
        except MadinfraError as exc:
            raise ProviderError(f"rolling back {rid} did not finish: {exc}") from None
        if proxy is not None and routed is not None:
            self.progress(proxy.rid, "restoring the endpoint list as it was")
            self.up({proxy.rid: proxy.base}, False)
            self.wait_proxy(proxy, name, list(range(before)))

    # -- Deployment pools -----------------------------------------------------------------------
    def roll_deployment(self, change: Change, plan: PoolRollout, recorded: dict[str, Any], wait: Callable[[], None]) -> None:
        """The planned update with the plan's maxSurge/maxUnavailable; the stack's own strategy
        back after (a strategy change restarts nothing)."""
        assert change.desired is not None
        rid = change.resource_id
        desired = change.desired.spec
        rolling = {"maxSurge": plan.surge, "maxUnavailable": 0 if plan.surge else plan.unavailable}
        spec = desired["spec"]
        carried = {**desired, "spec": {**spec, "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling}}}
        self.progress(rid, f"rolling with maxSurge {rolling['maxSurge']}, maxUnavailable {rolling['maxUnavailable']}")
        self.up({rid: carried}, True)
        try:
            wait()
        except MadinfraError as exc:
            if not self.rollback:
                raise ProviderError(f"{exc}; stopped there (--no-rollback): the pool is left as it is, run `madinfra plan` to see it") from None
            self.progress(rid, "rolling back to the previous template")
            self.up({rid: recorded}, False)
            try:
                wait()
            except MadinfraError as again:
                raise ProviderError(f"rolling back {rid} did not finish: {again}") from None
            raise RolledBack(f"{exc}; rolled back: {rid} runs its previous template, the change is not applied") from None
        if carried != desired:
            self.up({rid: desired}, False)


def _containers(obj: dict[str, Any]) -> list[tuple[Any, ...]]:
    spec = obj.get("spec") or {}
    if "template" in spec:
        spec = (spec.get("template") or {}).get("spec") or {}
    return [(c.get("name"), c.get("image"), c.get("command"), c.get("args")) for c in spec.get("containers") or []]


def wait_old_pods_gone(api: Any, namespace: str, name: str, timeout: float, progress: ProgressCallback, rid: str, poll: float = 0.5) -> None:
    """Until every pod of Deployment ``name`` (terminating ones too) runs its current template's
    containers: a terminating proxy pod still routes to the endpoints it was started with."""
    deadline = time.monotonic() + timeout
    reported = False
    while True:
        deployment = kube.read_object(api, "Deployment", namespace, name)
        if deployment is None:
            return
        labels = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        wanted = _containers(deployment)
        old = [p["metadata"]["name"] for p in kube.list_objects(api, "Pod", [namespace], labels) if _containers(p) != wanted]
        if not old:
            return
        if not reported:
            progress(rid, f"waiting for the old pod(s) {', '.join(old)} to be gone")
            reported = True
        if time.monotonic() >= deadline:
            raise ProviderError(f"{rid}: old pod(s) {', '.join(old)} were still running after {int(timeout)} s; check their finalizers (kubectl describe pod)")
        time.sleep(poll)
