"""The local files a stack uploads next to its sbatch scripts, and their digest.

Launcher commands ``cd`` into ``$MADINFRA_WORKDIR`` (the stack's remote directory) and run
``model.script`` by the path the stack gives, which is relative to the stack file. So files keep
that relative path on the cluster: ``model.scripts_dir: scripts`` beside the stack file lands in
``~/.madinfra/<stack>/scripts/``. A scripts_dir outside the stack file's directory (absolute or
``..``) lands in ``scripts/``. Without scripts_dir, a ``model.script`` that exists locally is
uploaded alone; one that does not is taken to exist on the cluster already.

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
DEFAULT_REMOTE = "scripts"


def local_files(spec: StackSpec, stack_dir: Path) -> list[tuple[Path, str]]:
    """``(local path, remote path relative to the stack's remote directory)``, sorted."""
    model = spec.model
    if model.scripts_dir:
        root = _resolve(stack_dir, model.scripts_dir)
        if not root.is_dir():
            raise ConfigError(spec.name, [("model.scripts_dir", f"{root} is not a directory; give a path relative to the stack file")])
        prefix = _remote_prefix(model.scripts_dir)
        found = []
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or _skipped(relative):
                continue
            found.append((path, str(prefix / PurePosixPath(relative.as_posix()))))
        return found
    if model.script and not Path(model.script).is_absolute():
        path = _resolve(stack_dir, model.script)
        if path.is_file() and not model.script.startswith(".."):
            return [(path, PurePosixPath(Path(model.script).as_posix()).as_posix())]
    return []


def _resolve(stack_dir: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (Path(stack_dir) / candidate).resolve()


def _remote_prefix(scripts_dir: str) -> PurePosixPath:
    posix = PurePosixPath(Path(scripts_dir).as_posix())
    if posix.is_absolute() or ".." in posix.parts:
        return PurePosixPath(DEFAULT_REMOTE)
    return posix


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
