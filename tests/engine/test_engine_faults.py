"""Faults of the machine madinfra runs on, during an apply: the state file cannot be written (disk
full, read-only directory) or a write is cut short, and a damaged state file sits in a directory
whose name needs quoting. The cluster is the in-memory provider; the state files are real.

What must hold: apply stops at the first change it cannot record (it never goes on changing a
cluster it cannot account for), says so in one sentence naming the state file, leaves the previous
state file whole, and the next plan, which reads the cluster, shows exactly what is left.
"""

from __future__ import annotations

import errno
import shlex
import subprocess
from pathlib import Path

import pytest
from memory_provider import MemoryProvider, res

import madinfra.state.store as store_module
from madinfra.engine.pipeline import rules_for
from madinfra.engine.run import apply_plan
from madinfra.errors import MadinfraError
from madinfra.planner import plan as make_plan
from madinfra.state.store import StateStore

STACK = "demo"


def configs(*names: str):
    return [res("mem_config", name, value=name) for name in names]


def plan_for(provider: MemoryProvider, states: StateStore, desired):
    state = states.load(STACK)
    return make_plan(desired, provider.read(STACK), state.resources if state else None, rules_for(provider), stack=STACK)


def apply(provider: MemoryProvider, states: StateStore, desired):
    return apply_plan(plan_for(provider, states, desired), provider, states, states.load_or_new(STACK), rules_for(provider), lambda *a: None)


def fail_writes_after(monkeypatch: pytest.MonkeyPatch, good: int, error: OSError) -> None:
    """Let ``good`` atomic writes through, then fail every one with ``error``."""
    real = store_module._write_atomic
    count = {"writes": 0}

    def write(path: Path, data: bytes) -> None:
        count["writes"] += 1
        if count["writes"] > good:
            raise error
        real(path, data)

    monkeypatch.setattr(store_module, "_write_atomic", write)


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), PermissionError(errno.EACCES, "Permission denied")],
    ids=["disk-full", "read-only"],
)
def test_apply_stops_at_the_first_change_it_cannot_record(tmp_path: Path, provider: MemoryProvider, monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
    states = StateStore(tmp_path / "state")
    desired = configs("a", "b", "c")
    # The first save (after a) writes the state file; the second (after b) must also write the backup.
    fail_writes_after(monkeypatch, 1, error)
    result = apply(provider, states, desired)

    path = states.path(STACK)
    sentence = (
        f"Cannot write the state file {path} ({error.strerror}); free space or fix the permissions of {states.dir}, "
        "then run `madinfra plan`: it reads the cluster, so nothing applied is lost"
    )
    assert [c.resource_id for c in result.done] == ["mem_config/a"]
    assert result.failed == {"mem_config/b": sentence, "mem_config/c": f"not done: {sentence}"}, "b is on the cluster but not in state"
    assert sorted(r.name for r in provider.read(STACK)) == ["a", "b"], "nothing more is changed once state cannot be written"

    monkeypatch.undo()
    kept = states.load(STACK)
    assert kept is not None and set(kept.resources) == {"mem_config/a"}, "the previous state file is whole"
    assert [(c.action, c.resource_id) for c in plan_for(provider, states, desired).changes] == [("create", "mem_config/c")]
    assert apply(provider, states, desired).ok
    assert set(states.load(STACK).resources) == {"mem_config/a", "mem_config/b", "mem_config/c"}


def test_a_write_cut_short_leaves_the_previous_state_and_no_temporary_file(tmp_path: Path, provider: MemoryProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    states = StateStore(tmp_path / "state")
    assert apply(provider, states, configs("a")).ok
    before = states.path(STACK).read_bytes()

    def rename_fails(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module.os, "replace", rename_fails)
    result = apply(provider, states, configs("a", "b"))
    monkeypatch.undo()

    assert not result.ok and result.failed["mem_config/b"].startswith(f"Cannot write the state file {states.path(STACK)} (Input/output error)")
    assert states.path(STACK).read_bytes() == before, "the state file is the old one, byte for byte"
    assert sorted(p.name for p in states.dir.iterdir()) == [f"{STACK}.json"], "no temporary file is left behind"
    assert [(c.action, c.resource_id) for c in plan_for(provider, states, configs("a", "b")).changes] == [], "b exists: plan adopts it"


def test_the_recovery_commands_of_a_damaged_state_file_work_in_a_directory_with_spaces(tmp_path: Path, provider: MemoryProvider) -> None:
    states = StateStore(tmp_path / "my state dir")
    assert apply(provider, states, configs("a")).ok
    assert apply(provider, states, configs("a", "b")).ok  # a second save leaves a backup
    path = states.path(STACK)
    path.write_text(path.read_text()[:40])

    commands = recovery_commands(states)
    assert set(commands) == {"cp", "mv"}
    subprocess.run(commands["cp"], check=True)
    assert set(states.load(STACK).resources) == {"mem_config/a"}, "the backup is the state before the last save"

    path.write_text("{")
    subprocess.run(recovery_commands(states)["mv"], check=True)
    assert states.load(STACK) is None and Path(f"{path}.damaged").read_text() == "{", "moved aside, not deleted"
    assert plan_for(provider, states, configs("a", "b")).changes == [], "without state, the cluster is the truth"


def recovery_commands(states: StateStore) -> dict[str, list[str]]:
    """The shell commands the damaged-state error offers, by their first word."""
    with pytest.raises(MadinfraError) as info:
        states.load(STACK)
    commands = [shlex.split(text) for text in str(info.value).split("`")[1::2]]
    return {command[0]: command for command in commands}
