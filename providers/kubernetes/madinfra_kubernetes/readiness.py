"""Is a stack's workload up? Deployments/StatefulSets rolled out, Jobs running or complete.

``assess`` is pure (live objects and pods in, verdict out) so every rule is testable; ``wait`` polls
it with one list call per kind until everything is ready, a pod fails in a way that will not fix
itself (image pull, crash loop, bad config, Job failed), or ``timeout`` runs out. Both failures
name the workload, the pod and Kubernetes' own reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from madinfra.errors import ProviderError
from madinfra_kubernetes.live import summarize_status
from madinfra_kubernetes.objects import resource_id

FATAL_WAITING = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


@dataclass
class Verdict:
    ready: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.waiting and not self.failed


def pod_problem(pod: dict[str, Any]) -> tuple[str, bool] | None:
    """``(reason, fatal)`` for a pod that is not running fine, else None."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for container in statuses:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_WAITING:
            message = waiting.get("message") or ""
            return f"pod {name} container {container.get('name')}: {reason}" + (f" ({message})" if message else ""), True
        terminated = state.get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            return f"pod {name} container {container.get('name')} exited with code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')})", status.get("phase") == "Failed"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"pod {name} is not scheduled: {condition.get('reason', '')}: {condition.get('message', '')}".rstrip(": "), False
    if status.get("phase") == "Pending":
        return f"pod {name} is Pending", False
    return None


def _owners(obj: dict[str, Any]) -> set[str]:
    return {ref.get("uid", "") for ref in (obj.get("metadata") or {}).get("ownerReferences") or []}


def pods_of(obj: dict[str, Any], pods: list[dict[str, Any]], replicasets: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The pods this workload object owns, by owner UID (a Deployment's through its ReplicaSets).

    Labels are not enough: while a replaced Job of the same name is still going away, its pods
    carry the same labels, and their failures are not the new Job's.
    """
    uid = (obj.get("metadata") or {}).get("uid")
    if not uid:
        return []
    owners = {uid}
    if obj.get("kind") == "Deployment":
        owners |= {(rs.get("metadata") or {}).get("uid", "") for rs in replicasets if uid in _owners(rs)}
    return [pod for pod in pods if _owners(pod) & owners]


def assess(workloads: list[dict[str, Any]], pods: list[dict[str, Any]], replicasets: list[dict[str, Any]] = ()) -> Verdict:
    verdict = Verdict()
    for obj in workloads:
        kind = obj.get("kind", "")
        rid = resource_id(kind, (obj.get("metadata") or {}).get("name", "?"))
        summary = summarize_status(obj, kind)
        problems = [p for p in (pod_problem(pod) for pod in pods_of(obj, pods, replicasets)) if p]
        fatal = [reason for reason, is_fatal in problems if is_fatal]
        if kind == "Job":
            parallelism = (obj.get("spec") or {}).get("parallelism", 1)
            if summary["phase"] == "Complete":
                verdict.ready.append(rid)
            elif summary["phase"] == "Failed":
                verdict.failed[rid] = summary.get("reason") or (fatal[0] if fatal else "Job failed")
            elif fatal:
                verdict.failed[rid] = fatal[0]
            elif summary["active"] >= parallelism and not problems:
                verdict.ready.append(rid)
            else:
                verdict.waiting[rid] = problems[0][0] if problems else f"{summary['active']}/{parallelism} pods active"
            continue
        if summary.get("ready"):
            verdict.ready.append(rid)
        elif fatal:
            verdict.failed[rid] = fatal[0]
        else:
            detail = problems[0][0] if problems else "waiting for readiness probes"
            verdict.waiting[rid] = f"{summary['ready_replicas']}/{summary['replicas']} ready; {detail}"
    return verdict


def wait(
    fetch: Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]],
    progress: Callable[[str, str], None],
    timeout: float,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    timeout_field: str = "k8s.ready_timeout",
) -> list[str]:
    """Poll until ready; returns the ready ids or raises ProviderError naming the first failure."""
    deadline = clock() + timeout
    reported: dict[str, str] = {}
    while True:
        workloads, pods, replicasets = fetch()
        verdict = assess(workloads, pods, replicasets)
        for rid in verdict.ready:
            if reported.get(rid) != "ready":
                progress(rid, "ready")
                reported[rid] = "ready"
        for rid, why in verdict.waiting.items():
            if reported.get(rid) != why:
                progress(rid, why)
                reported[rid] = why
        if verdict.failed:
            rid, why = next(iter(verdict.failed.items()))
            raise ProviderError(f"{rid} failed: {why}; see `kubectl describe` / `kubectl logs` of that pod, fix the stack and apply again")
        if verdict.done:
            return verdict.ready
        if clock() >= deadline:
            rid, why = next(iter(verdict.waiting.items()))
            raise ProviderError(f"{rid} was not ready after {int(timeout)} s ({timeout_field}): {why}")
        sleep(interval)
