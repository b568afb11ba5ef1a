"""The local files a stack uploads next to its sbatch scripts, and their digest.

Launcher commands ``cd`` into ``$MADINFRA_WORKDIR`` (the stack's remote directory) and run
``model.script`` from there. The contents of ``model.scripts_dir`` land at the root of that
directory, exactly as the Kubernetes provider stages them at ``/workspace``, so one stack file
(``scripts_dir: ../../examples/scripts``, ``script: allreduce.py``) runs unchanged on both targets. A
file that would shadow madinfra's own bookkeeping (logs/, status/, ``*.sbatch``, ...) is refused
with the file named. Without scripts_dir, a ``model.script`` that exists locally is uploaded
alone (keeping its path relative to the stack file); one that does not is taken to exist on the
cluster already.

The digest goes into the sbatch script as a comment, so editing a file changes the script hash
and the plan proposes to resubmit the job that would run it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from madinfra.config.schema import StackSpec
from madinfra.errors import ConfigError

SKIPPED_PARTS = frozenset({"__pycache__", ".git", ".madinfra", ".pytest_cache", ".mypy_cache"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
RESERVED_DIRS = frozenset({"logs", "endpoints", "status"})
RESERVED_FILES = frozenset({"topology.env", ".remote_dir"})
RESERVED_SUFFIXES = (".sbatch", ".secrets.env")


def local_files(spec: StackSpec, stack_dir: Path) -> list[tuple[Path, str]]:
    """``(local path, remote path relative to the stack's remote directory)``, sorted."""
    model = spec.model
    if model.scripts_dir:
        root = _resolve(stack_dir, model.scripts_dir)
        if not root.is_dir():
            raise ConfigError(spec.name, [("model.scripts_dir", f"{root} is not a directory; give a path relative to the stack file")])
        found = []
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or _skipped(relative):
                continue
            if _reserved(relative):
                raise ConfigError(spec.name, [(
                    "model.scripts_dir",
                    f"'{relative.as_posix()}' in {root} would overwrite madinfra's own files in the stack's remote directory; rename or move it",
                )])
            found.append((path, PurePosixPath(relative.as_posix()).as_posix()))
        return found
    if model.script and not Path(model.script).is_absolute():
        path = _resolve(stack_dir, model.script)
        if path.is_file() and not model.script.startswith(".."):
            return [(path, PurePosixPath(Path(model.script).as_posix()).as_posix())]
    return []


def _resolve(stack_dir: Path, path: str) -> Path:
    try:
        candidate = Path(path).expanduser()
    except RuntimeError:  # ``~name`` of a user this machine does not know: a path on the cluster
        candidate = Path(path)
    return candidate if candidate.is_absolute() else (Path(stack_dir) / candidate).resolve()


def _reserved(relative: Path) -> bool:
    if len(relative.parts) > 1:
        return relative.parts[0] in RESERVED_DIRS
    return relative.name in RESERVED_FILES or relative.name.endswith(RESERVED_SUFFIXES)


def _skipped(relative: Path) -> bool:
    return any(part in SKIPPED_PARTS for part in relative.parts) or relative.name.endswith(SKIPPED_SUFFIXES)


def files_digest(files: list[tuple[Path, str]]) -> str | None:
    """``sha256:<hex>`` over every remote path and file content; ``None`` without files."""
    if not files:
        return None
    digest = hashlib.sha256()
    for local, remote in files:
        digest.update(remote.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(local.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()
