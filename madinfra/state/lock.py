"""The state lock: one writer per stack, and a clear name for whoever holds it.

``<state_dir>/<stack>.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on local file systems)
and holds the holder's pid, host, start time and command. A second ``apply`` waits up to its
``--lock-timeout`` and then fails naming that holder. A lock left by a process that died on this
same host (SIGKILL, power cut of a terminal) is broken automatically, with a message; anything
else needs ``madinfra force-unlock``, because madinfra cannot know whether a process on another
host is still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from madinfra.errors import MadinfraError

_HALF_WRITTEN_GRACE = 2.0
WAIT_NOTICE_EVERY = 10.0
"""Seconds between "still waiting" lines while a lock is held by someone else: a CI log or a
pipe shows no spinner, and a silent command looks hung."""
"""Seconds a lock file may be empty: its creator is between ``open`` and ``write``."""


@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    time: str
    command: str
    token: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.time} (command: {self.command})"


def read_lock(path: Path) -> LockInfo | None:
    """The holder named in a lock file; ``None`` if there is no lock or it is not readable yet."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockInfo(int(data["pid"]), str(data["host"]), str(data["time"]), str(data.get("command", "")), str(data.get("token", "")))
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        return None


def force_unlock(path: Path) -> LockInfo | None:
    """Remove a lock whatever its holder; returns who held it (``None`` if nothing was locked)."""
    info = read_lock(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    return info or LockInfo(0, "unknown", "unknown", "unknown")


def pid_alive(pid: int) -> bool:
    """Whether a process exists on this host (zombies count as dead: they will never unlock)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0:1] != ["Z"]


class StateLock:
    """Context manager holding ``path`` for the duration of a command."""

    def __init__(
        self,
        path: Path,
        command: str,
        *,
        timeout: float = 0.0,
        stack: str = "",
        unlock_hint: str = "madinfra force-unlock STACK_FILE",
        notify: Callable[[str], None] | None = None,
        poll: float = 0.2,
    ):
        self.path = Path(path)
        self.command = command
        self.timeout = max(0.0, timeout)
        self.stack = stack or self.path.stem
        self.unlock_hint = unlock_hint
        self.notify = notify or (lambda message: None)
        self.poll = poll
        self.info: LockInfo | None = None

    def __enter__(self) -> "StateLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> LockInfo:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        deadline = started + self.timeout
        next_notice = started
        while True:
            info = self._try_create()
            if info is not None:
                self.info = info
                return info
            holder = read_lock(self.path)
            if holder is not None and self._stale(holder):
                if self._break(holder):
                    self.notify(f"Removed a stale lock of stack '{self.stack}' left by {holder.describe()}, which is no longer running.")
                continue
            if holder is None and self._being_written():
                time.sleep(0.05)
                continue
            now = time.monotonic()
            if now >= deadline:
                raise self._held_error(holder)
            if now >= next_notice:
                who = holder.describe() if holder else "another process"
                self.notify(f"Waiting for the lock of stack '{self.stack}', held by {who} ({now - started:.0f}s of {self.timeout:g}s)...")
                next_notice = now + WAIT_NOTICE_EVERY
            time.sleep(max(0.01, min(self.poll, deadline - time.monotonic())))

    def release(self) -> None:
        if self.info is None:
            return
        holder = read_lock(self.path)
        if holder is not None and holder.token == self.info.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.info = None

    def _try_create(self) -> LockInfo | None:
        info = LockInfo(
            pid=os.getpid(),
            host=socket.gethostname(),
            time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=self.command,
            token=uuid.uuid4().hex,
        )
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(info), handle)
            handle.flush()
            os.fsync(handle.fileno())
        return info

    def _being_written(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age < _HALF_WRITTEN_GRACE

    def _stale(self, holder: LockInfo) -> bool:
        return holder.host == socket.gethostname() and not pid_alive(holder.pid)

    def _break(self, holder: LockInfo) -> bool:
        """Move the stale lock away atomically; if what moved is not the stale lock (another
        process broke it and locked in between), put that fresh lock back."""
        aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = read_lock(aside)
        if moved is not None and moved.token == holder.token and moved.pid == holder.pid:
            os.unlink(aside)
            return True
        with contextlib.suppress(FileExistsError):
            os.link(aside, self.path)
        os.unlink(aside)
        return False

    def _held_error(self, holder: LockInfo | None) -> MadinfraError:
        who = holder.describe() if holder else f"a process whose lock file {self.path} is unreadable"
        waited = f" after waiting {self.timeout:g}s" if self.timeout else ""
        return MadinfraError(
            f"The state of stack '{self.stack}' is locked by {who}{waited}; wait for it to finish, pass --lock-timeout SECONDS to wait longer, "
            f"or run `{self.unlock_hint}` if it is no longer running"
        )
