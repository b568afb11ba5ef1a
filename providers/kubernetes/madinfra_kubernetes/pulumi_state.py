"""What Pulumi's own state knows about a stack, read from its file backend without the CLI.

Pulumi decides its steps from its state, not from the cluster: an object it does not know is
created (with server-side apply that adopts the live object), one it knows but the cluster lost
is forgotten by the refresh that runs before every ``up``, and it can delete only what it knows.
madinfra's plan comes from the cluster, so the provider must know where the two disagree: to
predict Pulumi's step for every planned change (and check it afterwards), to delete through the
Kubernetes API what Pulumi cannot, and to say so in the plan.

The checkpoint is plain JSON (``<backend>/.pulumi/stacks/<project>/<stack>.json``, gzipped when
Pulumi was told to); resource ids of Kubernetes objects are ``<namespace>/<name>`` (or ``<name>``
for cluster-scoped kinds). Only URNs and ids are read: no secret is ever decrypted here.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from madinfra_kubernetes.program import PROJECT, resource_id_from_urn

K8S_TYPE_PREFIX = "kubernetes:"


@dataclass(frozen=True)
class KnownObject:
    """One Kubernetes object in Pulumi's state: madinfra id, URN and Pulumi's id (ns/name)."""

    resource_id: str
    urn: str
    pulumi_id: str

    @property
    def namespace(self) -> str | None:
        return self.pulumi_id.split("/", 1)[0] if "/" in self.pulumi_id else None

    @property
    def name(self) -> str:
        return self.pulumi_id.rsplit("/", 1)[-1]


def backend_dir(work_dir: Path) -> Path:
    """The file backend's directory (``file://`` URL target) under madinfra's work dir."""
    return (Path(work_dir) / "pulumi" / "state").resolve()


def checkpoint_path(work_dir: Path, stack: str) -> Path | None:
    base = backend_dir(work_dir) / ".pulumi" / "stacks" / PROJECT
    for name in (f"{stack}.json", f"{stack}.json.gz"):
        if (base / name).is_file():
            return base / name
    return None


def _latest(work_dir: Path, stack: str) -> dict:
    path = checkpoint_path(work_dir, stack)
    if path is None:
        return {}
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        document = json.loads(raw)
    except ValueError:
        return {}
    return (document.get("checkpoint") or {}).get("latest") or {}


def has_pending_operations(work_dir: Path, stack: str) -> bool:
    """An earlier ``pulumi up`` was interrupted mid-operation (a refresh clears that)."""
    return bool(_latest(work_dir, stack).get("pending_operations"))


def known_objects(work_dir: Path, stack: str) -> dict[str, KnownObject]:
    """madinfra resource id -> what Pulumi's state holds for it (empty without a state)."""
    resources = _latest(work_dir, stack).get("resources") or []
    found: dict[str, KnownObject] = {}
    for entry in resources:
        urn = entry.get("urn") or ""
        if not str(entry.get("type", "")).startswith(K8S_TYPE_PREFIX) or entry.get("delete"):
            continue
        if str(entry.get("type", "")).startswith("pulumi:providers:"):
            continue
        rid = resource_id_from_urn(urn)
        found[rid] = KnownObject(rid, urn, str(entry.get("id") or ""))
    return found


def namespaces(known: dict[str, KnownObject]) -> set[str]:
    return {obj.namespace for obj in known.values() if obj.namespace}


def recorded_inputs(work_dir: Path, stack: str, resource_id: str) -> dict | None:
    """The manifest Pulumi last applied for ``resource_id`` (its inputs, without the
    ``pulumi.com/skipAwait`` annotation the program adds), or None when it does not know it:
    what a rollback restores exactly, so Pulumi's state and the cluster agree afterwards."""
    for entry in _latest(work_dir, stack).get("resources") or []:
        if not str(entry.get("type", "")).startswith(K8S_TYPE_PREFIX) or entry.get("delete"):
            continue
        if resource_id_from_urn(entry.get("urn") or "") != resource_id or not isinstance(entry.get("inputs"), dict):
            continue
        manifest = {k: v for k, v in entry["inputs"].items() if not k.startswith("__")}
        metadata = dict(manifest.get("metadata") or {})
        annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != "pulumi.com/skipAwait"}
        if annotations:
            metadata["annotations"] = annotations
        else:
            metadata.pop("annotations", None)
        manifest["metadata"] = metadata
        return manifest
    return None
