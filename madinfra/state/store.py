"""The local state file: what madinfra last applied, one JSON file per stack.

``<state_dir>/<stack>.json`` holds a serial (incremented on every write), a lineage (a uuid fixed
when the state is first created), outputs, and per resource: provider id, spec hash and the spec
itself (secrets only as digests, and passed through the redactor before every write).

Writes are atomic: a temp file in the same directory is written and fsynced, the previous version is
kept as ``<stack>.json.backup``, the temp file is renamed over the state file and the directory is
fsynced, so a crash (or SIGKILL) at any point leaves either the old or the new state, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from madinfra.errors import MadinfraError
from madinfra.secrets import Redactor

STATE_VERSION = 1


@dataclass
class ResourceRecord:
    """One applied resource. ``tainted``: its last apply failed, so live may differ from ``spec``."""

    kind: str
    name: str
    spec: dict[str, Any]
    spec_hash: str = ""
    provider_id: str | None = None
    depends_on: list[str] = field(default_factory=list)
    gpus: int = 0
    workload: bool = False
    role: str | None = None
    tainted: bool = False
    error: str | None = None
    finished: str | None = None
    """How and when a run-to-completion resource ended, once madinfra saw it (``Complete at ...``)."""

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResourceRecord":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["depends_on"] = list(known.get("depends_on") or [])
        return cls(**known)


@dataclass
class State:
    stack: str
    lineage: str = field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    resources: dict[str, ResourceRecord] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "stack": self.stack,
            "lineage": self.lineage,
            "serial": self.serial,
            "updated_at": self.updated_at,
            "outputs": dict(self.outputs),
            "resources": [asdict(r) for _, r in sorted(self.resources.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "State":
        records = [ResourceRecord.from_dict(r) for r in data["resources"]]
        return cls(
            stack=data["stack"],
            lineage=data["lineage"],
            serial=int(data["serial"]),
            resources={r.id: r for r in records},
            outputs=dict(data.get("outputs") or {}),
            updated_at=data.get("updated_at"),
        )


class StateStore:
    """Reads and atomically writes the state files under one directory."""

    def __init__(self, state_dir: Path | str, redactor: Redactor | None = None):
        self.dir = Path(state_dir)
        self.redactor = redactor or Redactor()

    def path(self, stack: str) -> Path:
        return self.dir / f"{stack}.json"

    def backup_path(self, stack: str) -> Path:
        return self.dir / f"{stack}.json.backup"

    def lock_path(self, stack: str) -> Path:
        return self.dir / f"{stack}.lock"

    def load(self, stack: str) -> State | None:
        """The stack's state, ``None`` when there is none yet; a damaged file is a clear error."""
        path = self.path(stack)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._corrupt(stack, f"it cannot be read: {exc.__class__.__name__}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._corrupt(stack, f"invalid JSON at line {exc.lineno}, column {exc.colno}") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise self._corrupt(stack, f"it is not a madinfra state file of version {STATE_VERSION} (found version {version!r})")
        try:
            state = State.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._corrupt(stack, f"a required entry is missing or malformed ({exc.__class__.__name__}: {exc})") from None
        if state.stack != stack:
            raise self._corrupt(stack, f"it belongs to the stack '{state.stack}', not '{stack}'")
        return state

    def load_or_new(self, stack: str) -> State:
        return self.load(stack) or State(stack=stack)

    def save(self, state: State) -> None:
        """Write the next serial of ``state`` atomically, keeping the previous file as ``.backup``."""
        state.serial += 1
        state.updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        data = self.redactor.data(state.to_dict())
        text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
        path = self.path(state.stack)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                previous = path.read_bytes()
            except FileNotFoundError:
                previous = None
            if previous is not None:
                _write_atomic(self.backup_path(state.stack), previous)
            _write_atomic(path, text.encode("utf-8"))
        except OSError as exc:
            # The previous state file is still whole (writes are atomic); what was just done on
            # the cluster is not in it, but the next plan reads the cluster and finds it.
            raise MadinfraError(
                f"Cannot write the state file {path} ({exc.strerror or exc.__class__.__name__}); "
                f"free space or fix the permissions of {self.dir}, then run `madinfra plan`: it reads the cluster, so nothing applied is lost"
            ) from None

    def _corrupt(self, stack: str, detail: str) -> MadinfraError:
        path = self.path(stack)
        backup = self.backup_path(stack)
        quoted, aside = shlex.quote(str(path)), shlex.quote(f"{path}.damaged")
        restore = f"restore the previous version with `cp {shlex.quote(str(backup))} {quoted}`, or " if backup.exists() else ""
        return MadinfraError(
            f"The state file {path} is damaged ({detail}); {restore}move it aside with `mv {quoted} {aside}` "
            "and madinfra rebuilds it from the cluster on the next apply"
        )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        return
    finally:
        os.close(fd)
