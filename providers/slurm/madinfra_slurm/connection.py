"""One SSH connection to a SLURM login node, with clear errors and bounded retries.

A target is either a JSON file (``scripts/slurm-sandbox`` writes one: host, port, user,
key_filename, known_hosts, insecure_skip_host_key_check) or an ``~/.ssh/config`` host alias, which
Fabric resolves (HostName, Port, User, IdentityFile, ProxyJump ...). Host keys are checked by
default against ``~/.ssh/known_hosts`` plus the target's own known_hosts file (or the alias'
UserKnownHostsFile); only an explicit opt-out (``--insecure-skip-host-key-check``, the target
file's flag, or ``StrictHostKeyChecking no`` in the ssh config) accepts unknown keys.

Failures are sorted once, here: an unreachable host, failed authentication and an unknown host key
are permanent (one clear sentence, no retry). A reset or dropped connection (including one that
closes while a command runs: no exit status comes back), SLURM's "Socket timed out" and an
unreachable Slurm controller (slurmctld restarting) are transient: retried with exponential
backoff, a bounded number of times, then one sentence saying what failed and what to check.
Commands SLURM itself rejects ("Invalid partition name specified") come back as failed results for
the caller to explain; they are never retried. A command that must not run twice (``sbatch``) is
tried once: its caller checks what happened before trying again (``SlurmProvider._submit``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from madinfra.errors import ProviderError, TransientProviderError

ENV_TARGET = "MADINFRA_SSH_TARGET"
TARGET_FLAG = "--ssh-target"
BANNER_TIMEOUT = 10
"""Seconds a server has to send its SSH banner after accepting the connection."""
TRANSIENT_SSH = ("banner", "session not active", "no existing session", "reset", "eof", "timed out", "timeout", "connection dropped", "socket is closed")
TRANSIENT_SLURM = (
    "socket timed out on send/recv",
    "slurm temporarily unable",
    "resource temporarily unavailable",
    "zero bytes were transmitted or received",
    "communication connection failure",
)
"""SLURM's words for a controller that is busy: the request may or may not have been processed."""
CONTROLLER_DOWN = ("unable to contact slurm controller",)
"""SLURM's words for a controller it could not reach at all (slurmctld stopped or restarting)."""
NO_EXIT_STATUS = -1
"""What Fabric reports as the exit status when the channel closed before the command ended."""

T = TypeVar("T")


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect; ``source`` says where the settings came from, for messages."""

    host: str
    port: int | None = None
    user: str | None = None
    key_filename: str | None = None
    known_hosts: str | None = None
    insecure: bool = False
    source: str = ""

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


def resolve_target(ssh_target: str | None, insecure_flag: bool = False, environ: dict[str, str] | None = None) -> SshTarget:
    """The target from ``--ssh-target`` (a JSON file or an ssh host alias) or ``$MADINFRA_SSH_TARGET``."""
    environ = os.environ if environ is None else environ
    value = ssh_target or environ.get(ENV_TARGET)
    if not value:
        raise ProviderError(
            f"The SLURM provider needs an SSH target: pass {TARGET_FLAG} with a target JSON file "
            f"(e.g. /tmp/madinfra-slurm-sandbox/target.json from scripts/slurm-sandbox) or an ~/.ssh/config host alias, or set {ENV_TARGET}"
        )
    path = Path(value).expanduser()
    if path.is_file():
        target = load_target_file(path)
    elif value.endswith(".json") or os.sep in value:
        raise ProviderError(f"The SSH target file {value} does not exist; run `scripts/slurm-sandbox up` or pass an existing target file or ssh host alias to {TARGET_FLAG}")
    else:
        target = SshTarget(host=value, source=f"ssh host alias '{value}'")
    if target.port is None:
        port = _alias_port(value)
        if port is not None and not 1 <= port <= 65535:
            raise ProviderError(f"{port} in {TARGET_FLAG} {value} is not a TCP port; use a port between 1 and 65535 (22 unless your login node says otherwise)")
    elif not 1 <= target.port <= 65535:
        raise ProviderError(f"port {target.port} in {target.source} is not a TCP port; use a port between 1 and 65535")
    if insecure_flag and not target.insecure:
        target = SshTarget(**{**target.__dict__, "insecure": True})
    return target


def _alias_port(value: str) -> int | None:
    """The port of ``[user@]host:port`` (Fabric's shorthand), if the value has one."""
    match = re.fullmatch(r"(?:[^@]+@)?(?:\[[^\]]+\]|[^:@\[\]]+):([0-9]+)", value)
    return int(match.group(1)) if match else None


def load_target_file(path: Path) -> SshTarget:
    """Read a target JSON; every problem names the file and the key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProviderError(f"The SSH target file {path} cannot be read as JSON ({exc}); fix or regenerate it") from None
    if not isinstance(data, dict) or not isinstance(data.get("host"), str) or not data["host"]:
        raise ProviderError(f"The SSH target file {path} must be a JSON object with at least a 'host' string")
    expected: dict[str, tuple[type, ...]] = {
        "port": (int,),
        "user": (str,),
        "key_filename": (str,),
        "known_hosts": (str,),
        "insecure_skip_host_key_check": (bool,),
    }
    for key, types in expected.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, types) or (key == "port" and isinstance(value, bool))):
            raise ProviderError(f"The SSH target file {path}: '{key}' must be a {types[0].__name__}, got {value!r}")
    return SshTarget(
        host=data["host"],
        port=data.get("port"),
        user=data.get("user"),
        key_filename=_expand(data.get("key_filename")),
        known_hosts=_expand(data.get("known_hosts")),
        insecure=bool(data.get("insecure_skip_host_key_check", False)),
        source=f"target file {path}",
    )


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path else None


@dataclass(frozen=True)
class CommandResult:
    command: str
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def error_text(self) -> str:
        """SLURM's own message, one line: stderr, else stdout, without trailing noise."""
        text = (self.stderr.strip() or self.stdout.strip()).replace("\n", "; ")
        return text or f"exit status {self.exited}"


class SlurmConnection:
    """A lazily opened Fabric connection reused for every command of one plan or apply."""

    def __init__(
        self,
        target: SshTarget,
        *,
        attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        connect_timeout: float = 15.0,
        command_timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        connection_factory: Callable[..., Any] | None = None,
    ):
        self.target = target
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._sleep = sleep
        self._factory = connection_factory
        self._conn: Any = None
        self.opened = 0
        """How many times a connection was opened (1 for a whole apply unless one was reset)."""

    # -- connection -------------------------------------------------------------------------

    def _fabric(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self._factory is not None:
            conn = self._factory(self.target)
        else:
            conn = self._new_fabric_connection()
        try:
            conn.open()
        except Exception as exc:
            _close_quietly(conn)
            raise self._connect_error(exc) from None
        self._conn = conn
        self.opened += 1
        return conn

    def _new_fabric_connection(self) -> Any:
        import logging

        import fabric
        import paramiko

        # paramiko's transport thread logs every handshake failure with a traceback; without a
        # handler Python prints them to stderr. The failure reaches the user once, as a sentence.
        logging.getLogger("paramiko").addHandler(logging.NullHandler())
        logging.getLogger("paramiko").propagate = False
        target = self.target
        connect_kwargs: dict[str, Any] = {"banner_timeout": BANNER_TIMEOUT}
        if target.key_filename:
            if not Path(target.key_filename).is_file():
                raise ProviderError(f"The SSH key {target.key_filename} named in {target.source} does not exist; fix key_filename")
            connect_kwargs.update(key_filename=[target.key_filename], look_for_keys=False)
        conn = fabric.Connection(
            target.host,
            user=target.user,
            port=target.port,
            connect_timeout=int(self.connect_timeout),
            connect_kwargs=connect_kwargs,
        )
        client = conn.client
        ssh_config = conn.ssh_config or {}
        insecure = target.insecure or str(ssh_config.get("stricthostkeychecking", "")).lower() == "no"
        if insecure:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.load_system_host_keys()
            for path in self._known_hosts_files(ssh_config):
                try:
                    client.get_host_keys().load(path)
                except OSError as exc:
                    raise ProviderError(f"The known_hosts file {path} from {target.source} cannot be read ({exc.strerror}); fix the path") from None
        return conn

    def _known_hosts_files(self, ssh_config: dict[str, Any]) -> list[str]:
        files = []
        if self.target.known_hosts:
            files.append(self.target.known_hosts)
        configured = ssh_config.get("userknownhostsfile")
        if configured:
            for item in (configured if isinstance(configured, list) else str(configured).split()):
                path = os.path.expanduser(item)
                if Path(path).is_file():
                    files.append(path)
        return files

    def _keyscan_command(self) -> str:
        """The shell line that trusts the host, written to the file madinfra reads first: the
        target's own known_hosts when it names one, else ``~/.ssh/known_hosts`` (made if missing).
        ``-p`` with the real port, so the line is stored as ``[host]:port`` as paramiko looks it up."""
        port = self.target.port or 22
        scan = f"ssh-keyscan -p {port} {shlex.quote(self.target.host)}"
        if self.target.known_hosts:
            return f"{scan} >> {shlex.quote(self.target.known_hosts)}"
        return f"mkdir -p ~/.ssh && {scan} >> ~/.ssh/known_hosts"

    def _connect_error(self, exc: Exception) -> ProviderError:
        import paramiko

        label, source = self.target.label, self.target.source
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, paramiko.AuthenticationException):
            return ProviderError(f"SSH authentication to {label} failed ({exc}); check the user and key in {source}")
        if isinstance(exc, paramiko.BadHostKeyException):
            return ProviderError(
                f"The host key of {label} does not match the one in known_hosts; if the host was really reinstalled, remove its old line from known_hosts"
            )
        if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
            return ProviderError(
                f"The host key of {label} is not in known_hosts; after checking its fingerprint, add it (`{self._keyscan_command()}`) "
                "or, for a throw-away sandbox only, set insecure_skip_host_key_check"
            )
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return ProviderError(f"Cannot reach the SLURM login node {label}: connection refused; check the host and port in {source} and that sshd is running")
        if isinstance(exc, socket.gaierror):
            return ProviderError(f"Cannot reach the SLURM login node {label}: the host name does not resolve; check the host in {source}")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return TransientProviderError(f"Connecting to the SLURM login node {label} timed out")
        if isinstance(exc, (ConnectionResetError, EOFError)):
            return TransientProviderError(f"The SSH connection to {label} failed ({exc.__class__.__name__}: {exc})")
        if isinstance(exc, paramiko.SSHException):
            text = str(exc)
            lowered = text.lower()
            if "banner" in lowered or "no existing session" in lowered:
                return TransientProviderError(
                    f"{label} accepted the connection but no SSH session started (no SSH banner within {BANNER_TIMEOUT} s, or the server closed it); "
                    f"check that the host and port in {source} are an SSH server's"
                )
            if any(marker in lowered for marker in TRANSIENT_SSH):
                return TransientProviderError(f"The SSH connection to {label} failed ({text})")
            if "key" in lowered:
                # paramiko reports a key it could not use (wrong type, bad format) this way
                # instead of as an AuthenticationException.
                return ProviderError(f"SSH authentication to {label} failed ({text}); check the user and key in {source}")
            return ProviderError(f"The SSH connection to {label} failed ({text}); check the settings in {source}")
        if isinstance(exc, OSError):
            return ProviderError(f"Cannot reach the SLURM login node {label} ({exc.strerror or exc}); check the host and port in {source}")
        return ProviderError(f"Connecting to {label} failed ({exc.__class__.__name__}: {exc})")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)

    # -- retries ----------------------------------------------------------------------------

    def retrying(self, what: str, operation: Callable[[Any], T], *, attempts: int | None = None) -> T:
        """Run ``operation(fabric_connection)``; transient failures reconnect and retry with
        exponential backoff, at most ``attempts`` times in all. When they are used up the last
        failure is raised as TransientProviderError (one sentence: ``what``, how often, why and
        what to check), so a caller of a non-idempotent command (sbatch) can check what happened
        before trying again."""
        last: Exception | None = None
        attempts = self.attempts if attempts is None else max(1, attempts)
        for attempt in range(attempts):
            if attempt:
                self._sleep(self.delay(attempt))
            try:
                return operation(self._fabric())
            except TransientProviderError as exc:
                last = exc
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted into transient / permanent below
                error = self._session_error(exc)
                if not isinstance(error, TransientProviderError) and self._transport_lost():
                    # Whatever paramiko called it (an SFTP "Socket is closed", "Server connection
                    # dropped"), the SSH transport is gone: the connection dropped.
                    error = TransientProviderError(f"The SSH connection to {self.target.label} dropped ({exc.__class__.__name__}: {exc})")
                if not isinstance(error, TransientProviderError):
                    raise error from None
                last = error
            self.close()
        tries = f" {attempts} times" if attempts > 1 else ""
        hint = getattr(last, "hint", None) or f"check the connection to {self.target.label} and run the command again"
        reason = _reason(last)
        raise Transient(reason, hint, f"{what} failed{tries}: {reason}; {hint}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt + 1`` (exponential, capped)."""
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1))

    def _transport_lost(self) -> bool:
        """Whether the open connection's SSH transport has died (a dropped connection)."""
        client = getattr(self._conn, "client", None)
        get_transport = getattr(client, "get_transport", None)
        if not callable(get_transport):
            return False
        transport = get_transport()
        return transport is None or not transport.is_active()

    def _session_error(self, exc: Exception) -> ProviderError:
        from invoke.exceptions import CommandTimedOut

        if isinstance(exc, CommandTimedOut):
            return TransientProviderError(f"a command on {self.target.label} timed out after {exc.timeout} s")
        if isinstance(exc, OSError) and "socket is closed" in str(exc).lower():
            return TransientProviderError(f"The SSH connection to {self.target.label} dropped ({exc})")
        if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)):
            return ProviderError(f"SFTP on {self.target.label} failed ({exc.strerror or exc})")
        return self._connect_error(exc)

    # -- commands and files -----------------------------------------------------------------

    def run(self, command: str, *, what: str, timeout: float | None = None, idempotent: bool = True, encoding: str | None = None) -> CommandResult:
        """Run one shell command; non-zero exits are returned, not raised, except the transient
        ones (a connection that closed mid-command, a busy or unreachable Slurm controller),
        which are retried. A command that must not run twice (``idempotent=False``) is tried once.

        ``encoding`` decodes the output (default: the local one, UTF-8). Invoke decodes each
        read chunk on its own, replacing what it cannot decode, so a multi-byte character split
        between chunks is lost; ``latin-1`` maps every byte to one character, which lets a
        caller that needs the exact bytes (job output, ``logs.py``) have them back."""
        extra = {"encoding": encoding} if encoding else {}

        def operation(conn: Any) -> CommandResult:
            raw = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout or self.command_timeout, **extra)
            result = CommandResult(command, raw.stdout or "", raw.stderr or "", raw.exited)
            if result.exited == NO_EXIT_STATUS:
                raise Transient(
                    f"the SSH connection to {self.target.label} closed before the command finished",
                    f"check the connection to {self.target.label} and run the command again",
                )
            if not result.ok:
                lowered = (result.stderr + result.stdout).lower()
                if any(marker in lowered for marker in TRANSIENT_SLURM):
                    raise Transient(
                        f"the Slurm controller on {self.target.label} timed out ({result.error_text})",
                        "the controller is overloaded or restarting; run the command again in a minute",
                    )
                if any(marker in lowered for marker in CONTROLLER_DOWN):
                    raise Transient(
                        f"the Slurm controller on {self.target.label} is not responding ({result.error_text})",
                        "check that slurmctld is running (`scontrol ping` on the login node) and run the command again",
                    )
            return result

        return self.retrying(what, operation, attempts=None if idempotent else 1)

    def write_text(self, path: str, text: str, *, mode: int = 0o644, what: str) -> None:
        """Write a remote file atomically (temporary file, chmod before content, rename)."""
        data = text.encode("utf-8")

        def operation(conn: Any) -> None:
            sftp = conn.sftp()
            temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            handle = sftp.open(temp, "w")
            try:
                sftp.chmod(temp, mode)
                handle.write(data)
            finally:
                handle.close()
            sftp.posix_rename(temp, path)

        self.retrying(what, operation)

    def put_file(self, local: Path, remote: str, *, what: str) -> None:
        self.retrying(what, lambda conn: conn.sftp().put(str(local), remote))


class Transient(TransientProviderError):
    """A transient failure: ``reason`` (what happened) and ``hint`` (what to check once the
    retries are used up); ``message``, when given, is the whole sentence for the user."""

    def __init__(self, reason: str, hint: str, message: str | None = None):
        super().__init__(message or reason)
        self.reason = reason
        self.hint = hint


def _reason(error: Exception | None) -> str:
    if error is None:
        return "no attempt was made"
    reason = getattr(error, "reason", None)
    return str(reason) if reason else str(error)


def sftp_path(path: str) -> str:
    """A remote path as SFTP wants it: SFTP starts in the home directory and never expands ``~``."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection must not mask the real error
        return
