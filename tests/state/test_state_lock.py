import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from madinfra.errors import MadinfraError
from madinfra.state.lock import StateLock, force_unlock, pid_alive, read_lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from madinfra.state.lock import StateLock
    lock = StateLock(sys.argv[1], command="madinfra apply held.yaml")
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock until the test kills it (by pid)."""
    path = tmp_path / "demo.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_lock_file_names_pid_host_time_and_command_and_is_released(tmp_path):
    path = tmp_path / "demo.lock"
    with StateLock(path, command="madinfra apply s.yaml"):
        data = json.loads(path.read_text())
        assert data["pid"] == os.getpid() and data["host"] == socket.gethostname()
        assert data["command"] == "madinfra apply s.yaml" and data["time"]
    assert not path.exists()


def test_second_lock_in_the_same_process_fails_at_once(tmp_path):
    path = tmp_path / "demo.lock"
    with StateLock(path, command="first"):
        started = time.monotonic()
        with pytest.raises(MadinfraError) as err:
            StateLock(path, command="second", stack="demo", unlock_hint="madinfra force-unlock s.yaml").acquire()
        assert time.monotonic() - started < 1
    message = str(err.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "command: first" in message and "madinfra force-unlock s.yaml" in message and "--lock-timeout" in message


def test_concurrent_process_waits_up_to_the_timeout_then_names_the_holder(holder):
    proc, path = holder
    started = time.monotonic()
    with pytest.raises(MadinfraError) as err:
        StateLock(path, command="madinfra apply", stack="demo", timeout=1.0).acquire()
    waited = time.monotonic() - started
    assert 0.9 <= waited < 5
    assert f"pid {proc.pid} on host {socket.gethostname()}" in str(err.value)
    assert "after waiting 1s" in str(err.value)


def test_a_waiting_process_says_so_at_once_and_then_at_every_interval(holder, monkeypatch):
    from madinfra.state import lock as lock_module

    monkeypatch.setattr(lock_module, "WAIT_NOTICE_EVERY", 0.5)
    proc, path = holder
    messages: list[str] = []
    with pytest.raises(MadinfraError):
        StateLock(path, command="madinfra apply", stack="demo", timeout=1.6, notify=messages.append).acquire()
    assert 3 <= len(messages) <= 5, messages
    assert messages[0].startswith(f"Waiting for the lock of stack 'demo', held by pid {proc.pid} on host")
    assert "(0s of 1.6s)" in messages[0] and "command: madinfra apply held.yaml" in messages[0]


def test_no_wait_means_no_waiting_notice(holder):
    _, path = holder
    messages: list[str] = []
    with pytest.raises(MadinfraError):
        StateLock(path, command="madinfra apply", stack="demo", notify=messages.append).acquire()
    assert messages == []


def test_waiting_process_gets_the_lock_when_the_holder_releases(tmp_path):
    path = tmp_path / "demo.lock"
    script = "import sys,time\nfrom madinfra.state.lock import StateLock\nwith StateLock(sys.argv[1], command='x'):\n    print('locked', flush=True)\n    time.sleep(0.8)\n"
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with StateLock(path, command="waiter", timeout=20) as lock:
            assert read_lock(path).token == lock.info.token
    finally:
        proc.wait(timeout=10)


def test_stale_lock_of_a_dead_process_is_broken_with_a_message(holder):
    proc, path = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not pid_alive(proc.pid)
    messages = []
    with StateLock(path, command="next", stack="demo", notify=messages.append):
        assert read_lock(path).pid == os.getpid()
    assert len(messages) == 1 and f"pid {proc.pid}" in messages[0] and "stale" in messages[0]


def test_lock_held_on_another_host_is_never_broken(tmp_path):
    path = tmp_path / "demo.lock"
    path.write_text(json.dumps({"pid": 999999, "host": "elsewhere", "time": "t", "command": "apply", "token": "x"}))
    with pytest.raises(MadinfraError, match="pid 999999 on host elsewhere"):
        StateLock(path, command="me").acquire()
    assert path.exists()


def test_force_unlock_removes_any_lock_and_reports_the_holder(tmp_path):
    path = tmp_path / "demo.lock"
    assert force_unlock(path) is None
    path.write_text(json.dumps({"pid": 5, "host": "h", "time": "t", "command": "apply"}))
    info = force_unlock(path)
    assert (info.pid, info.host) == (5, "h") and not path.exists()


def test_release_does_not_remove_someone_elses_lock(tmp_path):
    path = tmp_path / "demo.lock"
    lock = StateLock(path, command="me")
    lock.acquire()
    path.write_text(json.dumps({"pid": 1, "host": "h", "time": "t", "command": "other", "token": "theirs"}))
    lock.release()
    assert read_lock(path).token == "theirs"
