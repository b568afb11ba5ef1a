"""Faults during a real apply on the SLURM sandbox, over real SSH (issue 7, ``@pytest.mark.slurm``):
a dropped SSH connection, a stopped slurmctld, a SIGKILLed madinfra, two applies at once and a
damaged state file. After every fault the plan is right, state is readable and agrees with the
cluster, ``squeue`` never shows two jobs for one role, and a second apply converges. Without a
cluster: which failures are retried with backoff and which are not, with a stand-in for the Fabric
connection under the real ``SlurmConnection`` and ``SlurmProvider``.

The stack is disaggregated SGLang with ``sleep`` for every command (proxy, one prefill and one
decode replica: three jobs applied one after another, with the topology and endpoint files
between them) and a health check that always passes, so a whole apply takes a few seconds.

Faults are real: the sshd process serving madinfra's own connection is killed (found by the
connection's client port), slurmctld is stopped by its recorded PID, madinfra gets SIGKILL. Only
the timing is helped, so each drop lands where the test means it to: a pause after ``sbatch``
inside the same remote command (the connection dies while that command runs), sshd frozen with
SIGSTOP before it is killed (the request never reaches the shell), or a wait until the client has
noticed a drop.

slurmctld is brought back the way ``scripts/slurm-sandbox`` starts it (same command, PID recorded
in its pids/ directory), not with ``slurm-sandbox up``: a cold start through ``up`` cancels every
job it finds ("left over from a previous run"), which would cancel this test's jobs and those of
anyone else using the sandbox. The fixture's finalizer restarts it whatever the test did, and
falls back to ``slurm-sandbox up`` only if that fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import paramiko
import pytest

from tests_support import ROOT

P, D = "prefill-0", "decode-0"
"""The job roles of the pools' one replica each (one job per pool replica)."""
ROLES = (P, D, "proxy")
ALL = {
    "slurm/File/topology.env",
    f"slurm/Job/{P}",
    "slurm/File/endpoints/prefill",
    f"slurm/Job/{D}",
    "slurm/File/endpoints/decode",
    "slurm/Job/proxy",
}


def disagg() -> dict[str, Any]:
    """Three jobs of one node each (1 GPU per pool node, none for the proxy), all ``sleep``."""
    return {
        "slurm": {"partition": "debug", "nodes": 3, "gpus_per_node": 1, "time": "5", "exclusive": False, "ready_timeout": 60},
        "distributed": {"launcher": "sglang-disagg", "nnodes": 3, "nproc_per_node": 1, "sglang_disagg": {"prefill_nodes": 1, "decode_nodes": 1}},
        "env_vars": {"MODEL_PATH": "/models/none"},
        "service": {"port": 30555, "health_check": {"http_path": None, "command": "true"}},
        "roles": {role: {"command": "sleep 600"} for role in ("prefill", "decode", "proxy")},
    }


# -- reading the outcome ---------------------------------------------------------------------


def jobs_by_role(stack) -> dict[str, list[str]]:
    """Active job ids per role of the stack, straight from squeue."""
    found: dict[str, list[str]] = {}
    for job in stack.jobs():
        found.setdefault(job["name"].removeprefix(stack.prefix), []).append(job["id"])
    return found


def one_job_per_role(stack, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
    """Exactly one active job for each of ``roles`` and none for any other; role -> job id."""
    found = jobs_by_role(stack)
    assert sorted(found) == sorted(roles), f"jobs of {stack.name}: {found}, expected one per role of {roles}"
    duplicated = {role: ids for role, ids in found.items() if len(ids) != 1}
    assert not duplicated, f"a role has more than one job: {duplicated}"
    return {role: ids[0] for role, ids in found.items()}


def plan_actions(stack) -> dict[str, str]:
    proc = stack.cli("plan", str(stack.path), "--json")
    return {change["address"]: change["action"] for change in json.loads(proc.stdout)["changes"]}


def state_path(stack) -> Path:
    return stack.workdir / ".madinfra" / "state" / f"{stack.name}.json"


def lock_path(stack) -> Path:
    return stack.workdir / ".madinfra" / "state" / f"{stack.name}.lock"


def lock_holder(stack) -> int | None:
    """The pid in the stack's lock file (``None``: no lock, or it is being written)."""
    try:
        return int(json.loads(lock_path(stack).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def recorded(stack) -> dict[str, str | None]:
    """resource id -> provider id, as the state file records them (it must parse)."""
    data = json.loads(state_path(stack).read_text())
    return {f"{r['kind']}/{r['name']}": r["provider_id"] for r in data["resources"]}


def assert_converged(stack, before: dict[str, str] | None = None) -> dict[str, str]:
    """Plan empty, one job per role (the same ones as ``before``), state naming exactly them."""
    assert plan_actions(stack) == {}, "the stack must have converged"
    ids = one_job_per_role(stack)
    if before is not None:
        assert {role: ids[role] for role in before} == before, "jobs that were already running must be kept"
    state = recorded(stack)
    assert set(state) == ALL
    assert {role: state[f"slurm/Job/{role}"] for role in ROLES} == ids, "state names the live jobs"
    return ids


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from madinfra.cli import main; main()", *args]


def cli_env(stack) -> dict[str, str]:
    return {**os.environ, "MADINFRA_SSH_TARGET": str(stack.sandbox.target_file), "NO_COLOR": "1", "COLUMNS": "200"}


def wait_for(condition, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- in-process madinfra ---------------------------------------------------------------------


def run_in_process(stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``madinfra ARGS`` in this process (so a test can reach into its connection); exit code,
    stdout, stderr."""
    from madinfra.cli import main

    monkeypatch.chdir(stack.workdir)
    monkeypatch.setenv("MADINFRA_SSH_TARGET", str(stack.sandbox.target_file))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the sandbox's daemons -------------------------------------------------------------------


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sshd_session_for(sandbox, client_port: int) -> int:
    """The sandbox sshd's child process that serves the TCP connection from ``client_port``.

    Found from the kernel's socket table: the socket whose peer is ``client_port`` on the sandbox
    sshd's port, and the process under the sandbox's sshd listener that holds it. Only such a
    process is ever signalled.
    """
    listener = int((sandbox.dir / "pids" / "sshd.pid").read_text().strip())
    ssh_port = int(sandbox.target["port"])
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.rsplit(":", 1)[1], 16) == ssh_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
            inodes.add(f"socket:[{inode}]")
    assert inodes, f"no connection from port {client_port} to the sandbox sshd"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if listener not in (_ppid(pid), _ppid(_ppid(pid))):
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no sshd session process of the sandbox holds the connection from port {client_port}")


class Controller:
    """Stops and restarts the sandbox's slurmctld by the PID ``slurm-sandbox`` recorded."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.pidfile = sandbox.dir / "pids" / "slurmctld.pid"
        self.stopped = False

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        except OSError:
            return None
        return pid if _alive(pid) and os.path.basename(exe).startswith("slurmctld") else None

    def stop(self) -> None:
        pid = self.pid()
        assert pid is not None, "slurmctld of the sandbox is not running"
        self.stopped = True
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), 10, f"slurmctld {pid} to exit")

    def start(self) -> None:
        """Start it as ``slurm-sandbox up`` does (state recovered, jobs kept), record the PID,
        and wait until it answers and every node has registered again."""
        if self.pid() is None:
            env = {**os.environ, "SLURM_CONF": str(self.sandbox.dir / "etc" / "slurm.conf")}
            binary = shutil.which("slurmctld", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin") or "/usr/sbin/slurmctld"
            log = shlex.quote(str(self.sandbox.dir / "log" / "slurmctld.out"))
            started = subprocess.run(
                ["bash", "-c", f"setsid {shlex.quote(binary)} -D </dev/null >>{log} 2>&1 & echo $!"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            self.pidfile.write_text(started.stdout.strip() + "\n")
        wait_for(lambda: "is UP" in self.sandbox.ssh("scontrol ping", timeout=30).stdout, 60, "slurmctld to answer")
        wait_for(self._nodes_registered, 60, "the sandbox nodes to register with slurmctld", interval=0.5)
        self.stopped = False

    def _nodes_registered(self) -> bool:
        states = self.sandbox.ssh("sinfo -h -N -p debug -o '%N %t'", timeout=30).stdout.split()[1::2]
        return bool(states) and all(state in ("idle", "mix", "alloc") for state in states)

    def ensure_up(self) -> None:
        try:
            self.start()
        except Exception:  # noqa: BLE001 - fall back to the sandbox script, whatever went wrong
            subprocess.run(["bash", str(ROOT / "scripts" / "slurm-sandbox"), "up"], capture_output=True, timeout=300)


@pytest.fixture
def controller(sandbox) -> Iterator[Controller]:
    """slurmctld of the sandbox; running again after the test, whatever the test did."""
    ctl = Controller(sandbox)
    if ctl.pid() is None:
        pytest.skip("the sandbox's slurmctld was not started by scripts/slurm-sandbox (no live PID in pids/slurmctld.pid)")
    try:
        yield ctl
    finally:
        if ctl.stopped or ctl.pid() is None:
            ctl.ensure_up()


# -- 1. the SSH connection drops -------------------------------------------------------------


@pytest.mark.slurm
def test_a_dropped_ssh_connection_mid_apply_loses_nothing_and_submits_nothing_twice(
    sandbox_stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three real drops in one apply: while prefill's sbatch runs (the job is queued, its answer
    is lost), right before decode's sbatch (nothing queued yet), and before proxy's script is
    uploaded (the SFTP session of the dead connection fails)."""
    import fabric

    stack = sandbox_stack
    stack.write(disagg())
    real_run = fabric.Connection.run
    killed: list[tuple[str, int]] = []

    def session(conn) -> int:
        return sshd_session_for(stack.sandbox, conn.client.get_transport().sock.getsockname()[1])

    def run(self, command, **kwargs):
        if "sbatch --parsable" in command and "prefill" in command and not killed:
            # The job gets queued, then the connection dies while the command still runs.
            pid = session(self)

            def drop_once_queued() -> None:
                wait_for(lambda: P in jobs_by_role(stack), 20, "prefill to be queued")
                os.kill(pid, signal.SIGKILL)
                killed.append(("during prefill's sbatch", pid))

            dropper = threading.Thread(target=drop_once_queued)
            dropper.start()
            try:
                return real_run(self, f"{command}; rc=$?; sleep 5; exit $rc", **kwargs)
            finally:
                dropper.join()
        if "sbatch --parsable" in command and "decode" in command and len(killed) == 1:
            # sshd is frozen before the request arrives and killed while the client waits:
            # the connection dies and sbatch never runs.
            pid = session(self)
            os.kill(pid, signal.SIGSTOP)
            killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
            killer.start()
            killed.append(("before decode's sbatch", pid))
            try:
                return real_run(self, command, **kwargs)
            finally:
                killer.join()
        result = real_run(self, command, **kwargs)
        if "status/proxy." in command and len(killed) == 2:
            # Proxy's directory is ready; its script upload goes next, over the SFTP session
            # opened earlier on this connection, which now dies.
            pid = session(self)
            os.kill(pid, signal.SIGKILL)
            killed.append(("before proxy's upload", pid))
            wait_for(lambda: not self.client.get_transport().is_active(), 10, "the client to notice the drop", interval=0.05)
        return result

    monkeypatch.setattr(fabric.Connection, "run", run)
    code, out, err = run_in_process(stack, capsys, monkeypatch, "apply", str(stack.path), "--yes")
    monkeypatch.undo()

    assert [when for when, _ in killed] == ["during prefill's sbatch", "before decode's sbatch", "before proxy's upload"]
    assert code == 0, f"the apply must ride out every drop:\n{out}\n{err}"
    assert "Apply complete! Resources: 6 added" in out
    assert f"slurm/Job/{P}: sbatch's answer was lost" in out, "prefill's job was adopted, not submitted again"
    assert f"slurm/Job/{D}: sbatch failed" in out and "no job was queued; submitting it again" in out, out
    assert_converged(stack)
    again = stack.cli("apply", str(stack.path), "--yes")
    assert "No changes" in again.stdout and "0 added" in again.stdout
    one_job_per_role(stack)


# -- 2. slurmctld stops ----------------------------------------------------------------------


@pytest.mark.slurm
def test_a_stopped_controller_mid_apply_fails_clearly_and_apply_converges_once_it_is_back(
    sandbox_stack, controller: Controller, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """slurmctld stops between two changes (after prefill and its endpoint file, right before
    decode's sbatch): decode fails in one sentence naming it and the controller, and sbatch is
    not tried again while squeue cannot say whether the job was queued."""
    import functools

    from madinfra_slurm import provider as slurm_provider
    from madinfra_slurm.connection import SlurmConnection

    stack = sandbox_stack
    stack.write(disagg())
    # Two tries per command instead of four: each try against a stopped slurmctld takes SLURM's
    # own ~9 s to fail.
    monkeypatch.setattr(slurm_provider, "SlurmConnection", functools.partial(SlurmConnection, attempts=2, backoff=0.2))
    real_submit = slurm_provider.SlurmProvider._submit

    def submit(self, resource):
        if resource.name == D:
            controller.stop()
        return real_submit(self, resource)

    monkeypatch.setattr(slurm_provider.SlurmProvider, "_submit", submit)
    real_run = SlurmConnection.run
    submits: list[str] = []

    def run(self, command, **kwargs):
        if "sbatch --parsable" in command:
            submits.append(command.rsplit(" ", 1)[-1])
        return real_run(self, command, **kwargs)

    monkeypatch.setattr(SlurmConnection, "run", run)
    code, out, err = run_in_process(stack, capsys, monkeypatch, "apply", str(stack.path), "--yes")
    monkeypatch.undo()
    assert controller.stopped, "the controller was stopped between two changes"
    controller.start()

    assert code == 1, out + err
    message = err.strip().splitlines()[-1]
    assert message.startswith("Error: Apply incomplete: 1 change(s) failed and 2 were skipped")
    assert re.search(rf"slurm/Job/{D}: Submitting slurm/Job/{D} failed \(the Slurm controller on \S+ is not responding", message), message
    assert "squeue cannot tell whether the job was queued for the same reason" in message and "scontrol ping" in message
    assert "Traceback" not in out + err
    assert submits == [f"{P}.sbatch", f"{D}.sbatch"], "sbatch is not tried again while squeue cannot tell whether it queued the job"

    state = recorded(stack)
    prefill = one_job_per_role(stack, (P,))[P]
    assert set(state) == {"slurm/File/topology.env", f"slurm/Job/{P}", "slurm/File/endpoints/prefill"}, "state records what was done"
    assert state[f"slurm/Job/{P}"] == prefill
    assert plan_actions(stack) == {f"slurm/Job/{D}": "create", "slurm/File/endpoints/decode": "create", "slurm/Job/proxy": "create"}

    stack.cli("apply", str(stack.path), "--yes")
    assert_converged(stack, {P: prefill})


# -- 3. madinfra is killed -------------------------------------------------------------------


@pytest.mark.slurm
def test_madinfra_killed_after_a_submit_leaves_a_plan_that_finds_the_job_and_a_lock_that_is_broken(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(disagg())
    proc = subprocess.Popen(
        cli_command("apply", str(stack.path), "--yes"),
        cwd=stack.workdir,
        env=cli_env(stack),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: P in jobs_by_role(stack), 60, "the first job to be queued", interval=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    prefill = one_job_per_role(stack, (P,))[P]

    assert lock_holder(stack) == proc.pid, "the killed apply left its lock behind"
    state = recorded(stack)  # readable: the kill never leaves half a state file
    assert state.get(f"slurm/Job/{P}") in (None, prefill), "state may lag behind the cluster, never disagree with it"

    actions = plan_actions(stack)
    assert f"slurm/Job/{P}" not in actions, f"the queued prefill job is found by name, not submitted again: {actions}"
    assert {actions.get(f"slurm/Job/{D}"), actions.get("slurm/Job/proxy")} == {"create"}
    assert set(actions.values()) == {"create"}

    applied = stack.cli("apply", str(stack.path), "--yes")
    assert f"Removed a stale lock of stack '{stack.name}' left by pid {proc.pid} on host {socket.gethostname()}" in applied.stderr
    assert not lock_path(stack).exists()
    assert_converged(stack, {P: prefill})


# -- 4. two applies at once ------------------------------------------------------------------


@pytest.mark.slurm
def test_of_two_concurrent_applies_one_proceeds_and_the_other_waits_or_names_the_holder(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(disagg())
    env = cli_env(stack)
    first = subprocess.Popen(
        cli_command("apply", str(stack.path), "--yes"), cwd=stack.workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    waiter = None
    try:
        wait_for(lambda: lock_holder(stack) == first.pid, 30, "the first apply to lock")

        refused = stack.cli("apply", str(stack.path), "--yes", check=False)
        assert refused.returncode == 1
        no_traceback(refused)
        assert f"locked by pid {first.pid} on host {socket.gethostname()}" in refused.stderr
        assert "--lock-timeout" in refused.stderr and f"madinfra force-unlock {stack.path}" in refused.stderr

        waiter = subprocess.Popen(
            cli_command("apply", str(stack.path), "--yes", "--lock-timeout", "120"),
            cwd=stack.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        assert waiter.poll() is None and lock_holder(stack) == first.pid, "the second apply is waiting for the lock"
        one = first.communicate(timeout=120)
        assert first.returncode == 0, one
        assert "Apply complete! Resources: 6 added" in one[0]
        two = waiter.communicate(timeout=120)
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert waiter.returncode == 0, two
    assert "No changes" in two[0] and "Resources: 0 added" in two[0], "the waiting apply found nothing left to do"
    assert_converged(stack)


# -- 6. a damaged state file -----------------------------------------------------------------


def recovery(message: str, verb: str) -> list[str]:
    """The command of the error message's recovery path that starts with ``verb``."""
    match = re.search(rf"`({verb} [^`]+)`", message)
    assert match, f"the message offers no `{verb} ...` recovery: {message}"
    return shlex.split(match.group(1))


@pytest.mark.slurm
def test_a_damaged_state_file_is_named_with_its_recovery_and_following_it_converges(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(disagg())
    stack.cli("apply", str(stack.path), "--yes")
    ids = one_job_per_role(stack)
    path = state_path(stack)
    good = path.read_bytes()

    # Truncated: both recovery paths are offered, and nothing is touched until one is taken.
    path.write_bytes(good[: len(good) // 2])
    for command in (("plan", str(stack.path)), ("apply", str(stack.path), "--yes")):
        failed = stack.cli(*command, check=False)
        assert failed.returncode == 1
        no_traceback(failed)
        message = failed.stderr.strip()
        assert message.startswith(f"Error: The state file {path.relative_to(stack.workdir)} is damaged (invalid JSON at line"), message
        assert len(message.splitlines()) == 1
    assert path.read_bytes() == good[: len(good) // 2], "a damaged state file is never overwritten"
    assert not lock_path(stack).exists(), "a failed apply releases its lock"
    assert one_job_per_role(stack) == ids

    restore = recovery(message, "cp")
    subprocess.run(restore, cwd=stack.workdir, check=True)
    assert plan_actions(stack) == {}, "the restored backup describes the running stack"

    # Garbage, no usable backup: moving it aside rebuilds state from the cluster.
    path.write_text('{"version": 1, "stack": "someone else"}')
    stack.workdir.joinpath(".madinfra", "state", f"{stack.name}.json.backup").write_text("\x00\x01")
    failed = stack.cli("plan", str(stack.path), check=False)
    assert failed.returncode == 1 and "is damaged (a required entry is missing or malformed" in failed.stderr
    subprocess.run(recovery(failed.stderr, "mv"), cwd=stack.workdir, check=True)
    assert plan_actions(stack) == {}, "with no state, the live read finds every job and file of the stack"
    stack.cli("apply", str(stack.path), "--yes")
    assert assert_converged(stack, ids) == ids


# -- 5. transient failures are retried, permanent ones are not (no cluster) -----------------


class ScriptedFabric:
    """Stands in for ``fabric.Connection``: ``answer(command)`` returns a result or raises."""

    def __init__(self, answer, log: list[str]):
        self.answer = answer
        self.log = log

    def open(self) -> None:
        self.log.append("<open>")

    def run(self, command: str, **kwargs: Any) -> Any:
        self.log.append(command)
        return self.answer(command)

    def close(self) -> None:
        self.log.append("<close>")

    def sftp(self) -> "ScriptedSftp":
        return ScriptedSftp(self.log)


class ScriptedSftp:
    """Accepts every file write (uploads are not what these tests are about) and logs it."""

    def __init__(self, log: list[str]):
        self.log = log

    def open(self, path: str, mode: str) -> Any:
        import io

        self.log.append(f"<write {path}>")
        return io.BytesIO()

    def chmod(self, path: str, mode: int) -> None:
        return None

    def posix_rename(self, old: str, new: str) -> None:
        return None

    def put(self, local: str, remote: str) -> None:
        self.log.append(f"<put {remote}>")


def answer(stdout: str = "", stderr: str = "", exited: int = 0) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(stdout=stdout, stderr=stderr, exited=exited)


def scripted(answer_fn, *, attempts: int = 3, backoff: float = 0.5, max_backoff: float = 8.0):
    from madinfra_slurm.connection import SlurmConnection, SshTarget

    log: list[str] = []
    sleeps: list[float] = []
    conn = SlurmConnection(
        SshTarget("login", port=22, user="u", source="target file t.json"),
        attempts=attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        sleep=sleeps.append,
        connection_factory=lambda target: ScriptedFabric(answer_fn, log),
    )
    return conn, log, sleeps


def raising(error: BaseException):
    def fail(command: str) -> Any:
        raise error

    return fail


TRANSIENT = {
    "connection reset": (raising(ConnectionResetError(104, "Connection reset by peer")), "The SSH connection to u@login:22 failed (ConnectionResetError"),
    "closed mid-command": (lambda c: answer(exited=-1), "the SSH connection to u@login:22 closed before the command finished"),
    "sftp on a dropped connection": (raising(OSError("Socket is closed")), "The SSH connection to u@login:22 dropped (Socket is closed)"),
    "server connection dropped": (
        raising(paramiko.SSHException("Server connection dropped: ")),
        "The SSH connection to u@login:22 failed (Server connection dropped: )",
    ),
    "sbatch socket timed out": (
        lambda c: answer(stderr="sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n", exited=1),
        "the Slurm controller on u@login:22 timed out (sbatch: error: Batch job submission failed: Socket timed out on send/recv operation)",
    ),
    "controller unreachable": (
        lambda c: answer(stderr="squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", exited=1),
        "the Slurm controller on u@login:22 is not responding (squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure))",
    ),
}


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_transient_failures_are_retried_with_backoff_then_reported_in_one_sentence(kind: str) -> None:
    from madinfra.errors import TransientProviderError

    answer_fn, reason = TRANSIENT[kind]
    conn, log, sleeps = scripted(answer_fn, attempts=3)
    with pytest.raises(TransientProviderError) as info:
        conn.run("squeue --me", what="Reading the jobs of stack 'demo'")
    message = str(info.value)
    assert message.startswith(f"Reading the jobs of stack 'demo' failed 3 times: {reason}"), message
    assert message.endswith("run the command again") or message.endswith("in a minute"), message
    assert "\n" not in message
    assert log.count("squeue --me") == 3, "tried exactly `attempts` times"
    assert log.count("<open>") == 3, "each retry starts on a fresh connection"
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_a_transient_failure_that_clears_up_is_invisible(kind: str) -> None:
    answer_fn, _ = TRANSIENT[kind]
    outcomes = iter([answer_fn, answer_fn, lambda c: answer("ok\n")])
    conn, log, sleeps = scripted(lambda command: next(outcomes)(command), attempts=4)
    assert conn.run("squeue --me", what="Reading").stdout == "ok\n"
    assert sleeps == [0.5, 1.0]


def test_backoff_grows_exponentially_up_to_its_cap() -> None:
    conn, log, sleeps = scripted(raising(EOFError()), attempts=7, backoff=0.5, max_backoff=3.0)
    with pytest.raises(Exception, match="failed 7 times"):
        conn.run("squeue", what="Reading")
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_a_command_that_must_not_run_twice_is_tried_once(kind: str) -> None:
    from madinfra.errors import TransientProviderError

    answer_fn, reason = TRANSIENT[kind]
    conn, log, sleeps = scripted(answer_fn)
    with pytest.raises(TransientProviderError) as info:
        conn.run("sbatch --parsable worker.sbatch", what="Submitting slurm/Job/worker", idempotent=False)
    assert str(info.value).startswith(f"Submitting slurm/Job/worker failed: {reason}")
    assert log.count("sbatch --parsable worker.sbatch") == 1 and sleeps == []


def test_a_permanent_slurm_error_is_not_retried() -> None:
    rejected = "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    conn, log, sleeps = scripted(lambda command: answer(stderr=rejected, exited=1))
    result = conn.run("sbatch --parsable worker.sbatch", what="Submitting")
    assert not result.ok and result.error_text == rejected.strip()
    assert log.count("sbatch --parsable worker.sbatch") == 1 and sleeps == []


def provider_over(answer_fn, slurm_stack, *, attempts: int = 3):
    """The real SlurmProvider over the real SlurmConnection over a scripted Fabric, and the
    worker job of a one-node training stack."""
    from madinfra.launchers import compile as compile_launch
    from madinfra.resources import ProviderOptions
    from madinfra_slurm import SlurmProvider

    conn, log, sleeps = scripted(answer_fn, attempts=attempts)
    ticks = iter(range(100_000))
    provider = SlurmProvider(ProviderOptions(), connection=conn, sleep=sleeps.append, clock=lambda: float(next(ticks)))
    spec = slurm_stack()
    (worker,) = provider.desired(spec, compile_launch(spec))
    return provider, worker, log, sleeps


def create(provider, worker) -> tuple[str | None, Exception | None]:
    from madinfra.resources import Change
    from slurm_fakes import apply_changes

    ((_, job_id, error),) = apply_changes(provider, [Change("create", worker.id, worker, None)])
    return job_id, error


def sbatch_count(log: list[str]) -> int:
    return sum("sbatch --parsable" in command for command in log)


def test_sbatch_rejected_for_good_is_reported_once_and_not_retried(slurm_stack) -> None:
    rejected = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    provider, worker, log, sleeps = provider_over(lambda c: answer(stderr=rejected, exited=1) if "sbatch" in c else answer(), slurm_stack)
    job_id, error = create(provider, worker)
    assert job_id is None and str(error) == f"sbatch rejected slurm/Job/worker: {rejected}"
    assert sbatch_count(log) == 1 and sleeps == []


def test_sbatch_that_timed_out_but_queued_the_job_is_adopted_after_a_pause(slurm_stack) -> None:
    from slurm_fakes import row_text

    queued: list[str] = []

    def cluster(command: str) -> Any:
        if "sbatch" in command:
            queued.append("4242")  # the controller queued it; its answer did not arrive
            return answer(stderr="sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", exited=1)
        if command.startswith("squeue"):
            log.append(f"<squeue after {len(sleeps)} sleep(s)>")
            return answer(row_text(worker, queued[0]) if queued else "")
        return answer()

    provider, worker, log, sleeps = provider_over(cluster, slurm_stack)
    assert create(provider, worker) == ("4242", None)
    assert sbatch_count(log) == 1, "sbatch is never tried again once squeue shows the job"
    assert "<squeue after 1 sleep(s)>" in log and sleeps[0] == 0.5, "the lookup waits for a busy controller first"


def test_sbatch_that_queued_nothing_is_tried_again_a_bounded_number_of_times(slurm_stack) -> None:
    provider, worker, log, sleeps = provider_over(lambda c: answer(exited=-1) if "sbatch" in c else answer(), slurm_stack, attempts=3)
    job_id, error = create(provider, worker)
    assert job_id is None and sbatch_count(log) == 3
    assert str(error) == (
        "Submitting slurm/Job/worker failed 3 times and no job was queued: the SSH connection to u@login:22 closed before the command finished; "
        "check the connection to u@login:22 and run the command again"
    )


def test_sbatch_is_not_tried_again_when_squeue_cannot_tell_whether_it_queued_the_job(slurm_stack) -> None:
    down = "error: Unable to contact slurm controller (connect failure)"
    provider, worker, log, sleeps = provider_over(
        lambda c: answer(stderr=("sbatch: " if "sbatch" in c else "squeue: ") + down, exited=1) if "sbatch" in c or c.startswith("squeue") else answer(),
        slurm_stack,
    )
    job_id, error = create(provider, worker)
    assert job_id is None and sbatch_count(log) == 1, "no second sbatch while the first one's outcome is unknown"
    assert sum(command.startswith("squeue") for command in log) == 3, "the lookup itself is retried"
    message = str(error)
    assert message.startswith(
        "Submitting slurm/Job/worker failed (the Slurm controller on u@login:22 is not responding (sbatch: error: Unable to contact slurm controller (connect failure))) "
        "and squeue cannot tell whether the job was queued for the same reason; so as not to run it twice, nothing more was submitted"
    ), message
    assert "`madinfra plan` shows whether slurm/Job/worker exists" in message and "scontrol ping" in message
