"""madengine's runtime credentials (``k8s.secrets``): a ``credential.json`` inside every pod.

madengine mounts registry and data-provider credentials at ``/workspace/credential.json``:
``strategy: from_local_credentials`` (the default) copies a local ``credential.json`` into a
Secret, ``existing`` mounts the Secret ``runtime_secret_name`` the cluster already has, ``omit``
mounts nothing. madinfra does the same; the local file is looked up beside the stack file, and
its content travels like every ``secret_env`` value: in the stack's Secret, as a digest in
plans and state, read again at apply time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from madinfra.config.schema import StackSpec

CREDENTIAL_KEY = "credential.json"
MOUNT_PATH = "/workspace/credential.json"


def local_credential_file(spec: StackSpec, stack_dir: Path) -> Path | None:
    """The ``credential.json`` to copy into the stack's Secret, if the strategy asks for it."""
    if spec.k8s is None or spec.k8s.secrets.strategy != "from_local_credentials":
        return None
    path = Path(stack_dir) / CREDENTIAL_KEY
    return path if path.is_file() else None


def local_credential(spec: StackSpec, stack_dir: Path) -> str | None:
    path = local_credential_file(spec, stack_dir)
    return path.read_text(encoding="utf-8") if path is not None else None


def credential_secret(spec: StackSpec, own_secret: str | None, has_local: bool) -> str | None:
    """Which Secret holds the pods' ``credential.json``: the stack's own, an existing one, none."""
    if spec.k8s is None:
        return None
    strategy = spec.k8s.secrets
    if strategy.strategy == "existing":
        return strategy.runtime_secret_name
    if strategy.strategy == "from_local_credentials" and has_local:
        return own_secret
    return None


def credential_volume(secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume and the mount that put one key of ``secret`` at /workspace/credential.json."""
    volume = {"name": "credential", "secret": {"secretName": secret, "items": [{"key": CREDENTIAL_KEY, "path": CREDENTIAL_KEY}]}}
    mount = {"name": "credential", "mountPath": MOUNT_PATH, "subPath": CREDENTIAL_KEY, "readOnly": True}
    return volume, mount
