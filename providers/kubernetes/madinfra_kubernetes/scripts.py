"""The model's scripts as ConfigMap data, with madengine's size limit.

Pods get the scripts through a ConfigMap (no registry image or shared volume is needed for them);
an init container copies them into the pod's ``/workspace``. ConfigMap keys cannot hold ``/``, so
each file's key is its relative path with ``/`` turned into ``-`` (madengine's rule) and the
volume's ``items`` map every key back to its path, which restores the directory layout.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from madinfra.errors import MadinfraError

CONFIGMAP_LIMIT = 1024 * 1024 - 25_600
"""madengine's budget: the API server's 1 MiB object limit minus room for metadata."""

_SKIPPED_DIRS = frozenset({".git", "__pycache__", ".madinfra", ".pytest_cache", ".venv", "node_modules"})
_KEY_RE = re.compile(r"[^-._a-zA-Z0-9]")


@dataclass(frozen=True)
class ScriptBundle:
    """ConfigMap ``data`` (UTF-8 files) and ``binaryData`` (base64), plus key -> relative path."""

    data: dict[str, str] = field(default_factory=dict)
    binary_data: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.paths)

    @property
    def size(self) -> int:
        return sum(len(k) + len(v.encode()) for k, v in self.data.items()) + sum(
            len(k) + len(v) for k, v in self.binary_data.items()
        )

    def digest(self) -> str:
        """Changes whenever any file changes, so pod templates can roll on a script edit."""
        h = hashlib.sha256()
        for key in sorted(self.paths):
            h.update(key.encode() + b"\0" + self.data.get(key, self.binary_data.get(key, "")).encode() + b"\0")
        return h.hexdigest()[:16]


def config_key(relative: str) -> str:
    return _KEY_RE.sub("_", relative.replace("/", "-"))


def collect(scripts_dir: str | None, stack_dir: Path) -> ScriptBundle:
    """Read every file under ``scripts_dir`` (relative to the stack file's directory)."""
    if not scripts_dir:
        return ScriptBundle()
    root = Path(scripts_dir).expanduser()
    if not root.is_absolute():
        root = stack_dir / root
    if not root.is_dir():
        raise MadinfraError(
            f"model.scripts_dir: '{scripts_dir}' is not a directory (looked in {root}); fix the path, which is relative to the stack file"
        )
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    paths: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part in _SKIPPED_DIRS for part in rel.parts[:-1]) or path.suffix == ".pyc":
            continue
        key = config_key(rel.as_posix())
        if key in paths:
            raise MadinfraError(
                f"model.scripts_dir: '{paths[key]}' and '{rel.as_posix()}' map to the same ConfigMap key '{key}'; rename one of them"
            )
        paths[key] = rel.as_posix()
        raw = path.read_bytes()
        try:
            data[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(raw).decode("ascii")
    bundle = ScriptBundle(data=data, binary_data=binary, paths=paths)
    if bundle.size > CONFIGMAP_LIMIT:
        raise MadinfraError(
            f"ConfigMap payload would be ~{bundle.size} bytes; Kubernetes limit is ~1 MiB "
            f"({CONFIGMAP_LIMIT} bytes usable); shrink model.scripts_dir '{scripts_dir}' or put large files in the image or a data volume"
        )
    return bundle
