"""SSH targets and the connection's error handling: which failures are retried, how often, and
what the user reads. Network failures here are real (a closed loopback port); the rest uses a
stand-in for the Fabric connection."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from madinfra.errors import ProviderError, TransientProviderError
from madinfra.resources import ProviderOptions
from madinfra_slurm import SlurmProvider
from madinfra_slurm.connection import ENV_TARGET, SlurmConnection, SshTarget, load_target_file, resolve_target, sftp_path


def write_target(tmp_path: Path, **data) -> Path:
    path = tmp_path / "target.json"
    path.write_text(json.dumps({"host": "127.0.0.1", "port": 2222, "user": "root", **data}))
    return path


def test_target_file_is_read(tmp_path: Path) -> None:
    path = write_target(tmp_path, key_filename="~/k", known_hosts="/kh", insecure_skip_host_key_check=True, partition="debug")
    target = resolve_target(str(path), environ={})
    assert (target.host, target.port, target.user, target.known_hosts, target.insecure) == ("127.0.0.1", 2222, "root", "/kh", True)
    assert target.key_filename == str(Path("~/k").expanduser())
    assert target.label == "root@127.0.0.1:2222" and str(path) in target.source


def test_host_key_checking_is_on_unless_asked_off(tmp_path: Path) -> None:
    path = write_target(tmp_path)
    assert resolve_target(str(path), environ={}).insecure is False
    assert resolve_target(str(path), insecure_flag=True, environ={}).insecure is True


def test_an_ssh_alias_and_the_environment_variable_are_accepted(tmp_path: Path) -> None:
    alias = resolve_target("login-node", environ={})
    assert alias.host == "login-node" and "alias" in alias.source
    path = write_target(tmp_path)
    assert resolve_target(None, environ={ENV_TARGET: str(path)}).port == 2222


def test_no_target_names_the_flag_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProviderError, match=r"--ssh-target.*MADINFRA_SSH_TARGET"):
        resolve_target(None, environ={})
    monkeypatch.delenv(ENV_TARGET, raising=False)
    provider = SlurmProvider(ProviderOptions())
    with pytest.raises(ProviderError, match="--ssh-target"):
        provider.read("demo")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot be read as JSON"),
        ("[]", "must be a JSON object with at least a 'host'"),
        ('{"host": "h", "port": "22"}', "'port' must be a int"),
        ('{"host": "h", "insecure_skip_host_key_check": "yes"}', "'insecure_skip_host_key_check' must be a bool"),
    ],
)
def test_bad_target_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(ProviderError, match=message):
        load_target_file(path)


def test_a_missing_target_file_is_not_taken_for_an_alias(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        resolve_target(str(tmp_path / "absent.json"), environ={})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_host_fails_at_once_with_a_clear_message() -> None:
    sleeps: list[float] = []
    conn = SlurmConnection(SshTarget("127.0.0.1", port=closed_port(), user="u", insecure=True, source="target file x"), sleep=sleeps.append)
    with pytest.raises(ProviderError, match=r"Cannot reach the SLURM login node u@127\.0\.0\.1:\d+: connection refused") as info:
        conn.run("true", what="Reading")
    assert not isinstance(info.value, TransientProviderError)
    assert sleeps == [], "a refused connection is not retried"


@pytest.fixture
def silent_server():
    """A loopback server that accepts TCP connections and never speaks (stopped by this fixture)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for sock in accepted:
        sock.close()
    server.close()


def test_a_port_that_is_not_ssh_is_one_sentence_without_tracebacks(silent_server, monkeypatch, capfd) -> None:
    import madinfra_slurm.connection as connection

    monkeypatch.setattr(connection, "BANNER_TIMEOUT", 1)
    sleeps: list[float] = []
    conn = SlurmConnection(SshTarget("127.0.0.1", port=silent_server, user="u", insecure=True, source="target file x"), attempts=2, sleep=sleeps.append)
    with pytest.raises(ProviderError) as info:
        conn.run("true", what="Reading")
    assert "accepted the connection but no SSH session started (no SSH banner within 1 s" in str(info.value)
    assert "Traceback" not in capfd.readouterr().err, "paramiko's handshake tracebacks must not reach the terminal"


def test_a_missing_key_file_is_reported_before_connecting(tmp_path: Path) -> None:
    conn = SlurmConnection(SshTarget("127.0.0.1", port=closed_port(), key_filename=str(tmp_path / "nokey"), source="target file t"))
    with pytest.raises(ProviderError, match="The SSH key .*nokey named in target file t does not exist"):
        conn.run("true", what="Reading")


class FakeFabric:
    """Stands in for fabric.Connection: scripted outcomes for open() and run()."""

    def __init__(self, script: list):
        self.script = script
        self.closed = 0
        self.commands: list[str] = []

    def open(self):
        if self.script and isinstance(self.script[0], tuple) and self.script[0][0] == "open":
            raise self.script.pop(0)[1]

    def run(self, command, **kwargs):
        self.commands.append(command)
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def close(self):
        self.closed += 1


def result(stdout="", stderr="", exited=0):
    return SimpleNamespace(stdout=stdout, stderr=stderr, exited=exited)


def connection(script: list, sleeps: list[float], attempts: int = 4) -> tuple[SlurmConnection, list[FakeFabric]]:
    made: list[FakeFabric] = []

    def factory(target):
        made.append(FakeFabric(script))
        return made[-1]

    conn = SlurmConnection(SshTarget("h", port=22, source="s"), attempts=attempts, backoff=0.5, max_backoff=2, sleep=sleeps.append, connection_factory=factory)
    return conn, made


def test_one_connection_serves_many_commands() -> None:
    conn, made = connection([result("a"), result("b"), result("c")], [])
    assert [conn.run("x", what="w").stdout for _ in range(3)] == ["a", "b", "c"]
    assert len(made) == 1 and conn.opened == 1


def test_transient_failures_reconnect_and_retry_with_bounded_backoff() -> None:
    sleeps: list[float] = []
    conn, made = connection([ConnectionResetError("reset"), result(stderr="squeue: error: Socket timed out on send/recv operation", exited=1), EOFError(), result("ok")], sleeps)
    assert conn.run("squeue", what="Reading").stdout == "ok"
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(made) == 4 and all(f.closed for f in made[:3])


def test_retries_are_bounded() -> None:
    sleeps: list[float] = []
    conn, _ = connection([ConnectionResetError("reset")] * 3, sleeps, attempts=3)
    with pytest.raises(TransientProviderError, match="Reading the jobs failed 3 times"):
        conn.run("squeue", what="Reading the jobs")
    assert sleeps == [0.5, 1.0]


def test_non_idempotent_commands_are_tried_once() -> None:
    sleeps: list[float] = []
    conn, _ = connection([ConnectionResetError("reset"), result("1")], sleeps)
    with pytest.raises(TransientProviderError):
        conn.run("sbatch x", what="Submitting", idempotent=False)
    assert sleeps == []


def test_a_down_controller_is_retried_then_one_clear_sentence() -> None:
    sleeps: list[float] = []
    down = result(stderr="squeue: error: Unable to contact slurm controller (connect failure)", exited=1)
    conn, _ = connection([down] * 3, sleeps, attempts=3)
    with pytest.raises(TransientProviderError) as info:
        conn.run("squeue", what="Reading the jobs of stack 'demo'")
    assert str(info.value) == (
        "Reading the jobs of stack 'demo' failed 3 times: the Slurm controller on h:22 is not responding "
        "(squeue: error: Unable to contact slurm controller (connect failure)); "
        "check that slurmctld is running (`scontrol ping` on the login node) and run the command again"
    )
    assert sleeps == [0.5, 1.0]


def test_command_failures_are_returned_for_the_caller_to_explain() -> None:
    conn, _ = connection([result(stderr="sbatch: error: Batch job submission failed: Invalid partition name specified\n", exited=1)], [])
    outcome = conn.run("sbatch", what="Submitting")
    assert not outcome.ok and outcome.error_text == "sbatch: error: Batch job submission failed: Invalid partition name specified"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (paramiko.AuthenticationException("Authentication failed."), "SSH authentication to h:22 failed"),
        (paramiko.SSHException("Server '[h]:22' not found in known_hosts"), r"not in known_hosts; after checking its fingerprint, add it \(`mkdir -p ~/.ssh && ssh-keyscan -p 22 h >> ~/.ssh/known_hosts`\) or.*insecure_skip_host_key_check"),
        (paramiko.BadHostKeyException("h", paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)), "does not match"),
        (socket.gaierror(-2, "Name or service not known"), "does not resolve"),
    ],
)
def test_connect_failures_are_permanent_and_explained(error: Exception, message: str) -> None:
    sleeps: list[float] = []
    conn, _ = connection([("open", error)], sleeps)
    with pytest.raises(ProviderError, match=message) as info:
        conn.run("true", what="Reading")
    assert not isinstance(info.value, TransientProviderError) and sleeps == []


def test_sftp_paths_are_relative_to_the_login_directory() -> None:
    assert sftp_path("~/.madinfra/s") == ".madinfra/s"
    assert sftp_path("~") == "."
    assert sftp_path("/scratch/s") == "/scratch/s"


@pytest.mark.parametrize("value", ["root@127.0.0.1:99999", "login:0", "[::1]:70000"])
def test_a_port_outside_the_tcp_range_is_named_not_reported_as_refused(value: str) -> None:
    with pytest.raises(ProviderError, match="is not a TCP port; use a port between 1 and 65535"):
        resolve_target(value, environ={})


def test_a_target_file_port_outside_the_range_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"port 70000 in .*target.json is not a TCP port"):
        resolve_target(str(write_target(tmp_path, port=70000)), environ={})
