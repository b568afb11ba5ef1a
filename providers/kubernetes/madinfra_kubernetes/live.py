"""Live objects -> Resources the planner can compare with desired ones (pure conversion).

The API server returns far more than madinfra sent: defaults, allocated IPs, labels the Job
controller adds, annotations other tools (Pulumi, kubectl, the Deployment controller) write.
``clean`` removes what only the server could have put there — by key when the key has dots in it
(the planner's paths cannot name those) and by value where a field is noise only when it holds the
server's default — and swaps Secret values for their digests, so secrets never leave this module
in clear and a rotated value still shows up as a change.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from madinfra.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, STACK_LABEL, label_value
from madinfra.resources import Resource
from madinfra_kubernetes.objects import API_VERSIONS, to_resource

FOREIGN_ANNOTATION_PREFIXES = (
    "pulumi.com/",
    "kubectl.kubernetes.io/",
    "deployment.kubernetes.io/",
    "batch.kubernetes.io/",
    "pv.kubernetes.io/",
    "volume.kubernetes.io/",
    "volume.beta.kubernetes.io/",
)
JOB_TEMPLATE_LABELS = ("controller-uid", "job-name", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name")
NAMESPACE_LABELS = ("kubernetes.io/metadata.name",)
_METADATA_KEEP = ("name", "namespace", "labels", "annotations")


def belongs_to(obj: dict[str, Any], stack: str) -> bool:
    """Label check done here as well as in the selector: an emulator or proxy may ignore selectors."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(STACK_LABEL) == label_value(stack) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def _clean_metadata(metadata: dict[str, Any], drop_labels: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {k: copy.deepcopy(metadata[k]) for k in _METADATA_KEEP if k in metadata}
    labels = {k: v for k, v in (out.get("labels") or {}).items() if k not in drop_labels}
    annotations = {k: v for k, v in (out.get("annotations") or {}).items() if not k.startswith(FOREIGN_ANNOTATION_PREFIXES)}
    for key, value in (("labels", labels), ("annotations", annotations)):
        if value:
            out[key] = value
        else:
            out.pop(key, None)
    return out


def _clean_pod_template(template: dict[str, Any], job: bool) -> None:
    metadata = template.get("metadata") or {}
    template["metadata"] = _clean_metadata(metadata, JOB_TEMPLATE_LABELS if job else ())
    template["metadata"].pop("name", None)
    template["metadata"].pop("namespace", None)
    spec = template.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("resources") == {}:
            del container["resources"]


def _secret_digests(data: dict[str, Any]) -> dict[str, str]:
    from madinfra.secrets import secret_digest

    digests = {}
    for key, encoded in data.items():
        try:
            value = base64.b64decode(encoded or "").decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            value = str(encoded)
        digests[key] = secret_digest(key, value)
    return digests


def clean(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """A live object in the shape of a madinfra manifest (a new dict; ``obj`` is untouched)."""
    out: dict[str, Any] = {"apiVersion": obj.get("apiVersion") or API_VERSIONS[kind], "kind": kind}
    out["metadata"] = _clean_metadata(obj.get("metadata") or {}, NAMESPACE_LABELS if kind == "Namespace" else ())
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata", "status") or key.startswith("__"):
            continue
        out[key] = copy.deepcopy(value)
    spec = out.get("spec")
    if kind == "Secret":
        if out.get("type") == "Opaque":
            del out["type"]
        if out.get("data"):
            out["data"] = _secret_digests(out["data"])
        if "stringData" in out:
            del out["stringData"]
    if kind == "Service" and isinstance(spec, dict):
        if spec.get("type") == "ClusterIP":
            del spec["type"]
        if spec.get("clusterIP") not in (None, "None"):
            del spec["clusterIP"]
    if kind in ("Job", "Deployment", "StatefulSet") and isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        _clean_pod_template(spec["template"], kind == "Job")
    return out


def summarize_status(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The few status facts plan/status displays and readiness need."""
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if kind == "Job":
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
            phase = "Complete"
        elif "Failed" in conditions or "FailureTarget" in conditions:
            phase = "Failed"
        elif status.get("active"):
            phase = "Running"
        else:
            phase = "Pending"
        summary = {
            "phase": phase,
            "active": status.get("active", 0),
            "succeeded": status.get("succeeded", 0),
            "failed": status.get("failed", 0),
            "running": phase == "Running",
        }
        elapsed = _elapsed_seconds(status.get("startTime")) if phase == "Running" else None
        if elapsed is not None:
            summary["elapsed_seconds"] = elapsed
        failed = conditions.get("Failed") or conditions.get("FailureTarget")
        if failed:
            summary["reason"] = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
        if phase == "Complete":
            summary["finished"] = f"Complete at {status.get('completionTime') or (conditions.get('Complete') or {}).get('lastTransitionTime', '?')}"
        elif phase == "Failed" and failed:
            summary["finished"] = f"Failed at {failed.get('lastTransitionTime', '?')} ({summary['reason']})"
        return summary
    if kind in ("Deployment", "StatefulSet"):
        wanted = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0) or 0
        updated = status.get("updatedReplicas", 0) or 0
        current = (status.get("observedGeneration") or 0) >= ((obj.get("metadata") or {}).get("generation") or 0)
        rolled_out = current and ready >= wanted and updated >= wanted and (status.get("replicas", 0) or 0) <= wanted
        if kind == "StatefulSet" and status.get("updateRevision") and status.get("currentRevision"):
            # What `kubectl rollout status` checks too: pods of the old revision may still be
            # counted as updated while the controller is mid-rollout.
            rolled_out = rolled_out and status["updateRevision"] == status["currentRevision"]
        return {
            "replicas": wanted,
            "ready_replicas": ready,
            "updated_replicas": updated,
            "ready": bool(rolled_out),
            "running": ready > 0,
        }
    if kind == "Service":
        return {"cluster_ip": spec.get("clusterIP")}
    return {}


def _elapsed_seconds(start: Any) -> int | None:
    """Seconds since a Job's ``status.startTime`` (RFC 3339), for the plan's lost-progress cost."""
    from datetime import datetime, timezone

    if not isinstance(start, str):
        return None
    try:
        started = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0, int((datetime.now(timezone.utc) - started).total_seconds()))


def to_live_resource(obj: dict[str, Any], kind: str) -> Resource:
    """One API object (camelCase JSON, from a list call or Pulumi outputs) as a live Resource."""
    manifest = clean(obj, kind)
    uid = (obj.get("metadata") or {}).get("uid")
    return to_resource(manifest, provider_id=uid, status=summarize_status(obj, kind))



def disambiguate(found: list[Resource], namespace: str | None) -> list[Resource]:
    """Objects of one kind and name in several namespaces (a namespace change the stack has not
    finished): the one in the stack's namespace keeps the plain id, the others are named
    ``<namespace>/<name>``, so each is planned (and deleted) on its own."""
    by_id: dict[str, list[Resource]] = {}
    for resource in found:
        by_id.setdefault(resource.id, []).append(resource)
    out: list[Resource] = []
    for group in by_id.values():
        if len(group) == 1:
            out.extend(group)
            continue
        group.sort(key=lambda r: (r.spec.get("metadata") or {}).get("namespace") != namespace)
        out.append(group[0])
        for extra in group[1:]:
            extra.name = f"{(extra.spec.get('metadata') or {}).get('namespace')}/{extra.name}"
            out.append(extra)
    return out
