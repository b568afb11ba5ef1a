import json
import os

import pytest

from madinfra.errors import MadinfraError
from madinfra.secrets import Redactor
from madinfra.state.store import ResourceRecord, State, StateStore


def record(name="v", **kw):
    return ResourceRecord(kind="vol", name=name, spec={"spec": {"size": 1}}, spec_hash="sha256:x", provider_id="id-1", **kw)


def test_missing_state_is_none_and_new_state_gets_a_lineage(tmp_path):
    store = StateStore(tmp_path / "state")
    assert store.load("demo") is None
    state = store.load_or_new("demo")
    assert state.serial == 0 and len(state.lineage) == 36


def test_save_roundtrips_increments_serial_and_keeps_a_backup(tmp_path):
    store = StateStore(tmp_path)
    state = State(stack="demo")
    state.resources["vol/v"] = record()
    store.save(state)
    assert not store.backup_path("demo").exists()
    first = store.path("demo").read_text()
    state.resources["vol/w"] = record("w", depends_on=["vol/v"], gpus=8, workload=True, tainted=True, error="boom")
    store.save(state)
    assert store.backup_path("demo").read_text() == first
    loaded = store.load("demo")
    assert loaded.serial == 2 and loaded.lineage == state.lineage
    assert loaded.resources["vol/w"] == state.resources["vol/w"]
    assert set(loaded.resources) == {"vol/v", "vol/w"}
    assert json.loads(store.backup_path("demo").read_text())["serial"] == 1


def test_save_leaves_no_temp_files(tmp_path):
    store = StateStore(tmp_path)
    for _ in range(3):
        store.save(State(stack="demo"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.json.backup"]


def test_state_is_redacted_before_it_is_written(tmp_path):
    store = StateStore(tmp_path, Redactor(["hunter2-secret"]))
    state = State(stack="demo")
    state.resources["vol/v"] = ResourceRecord("vol", "v", {"spec": {"token": "hunter2-secret"}}, error="failed with hunter2-secret")
    store.save(state)
    text = store.path("demo").read_text()
    assert "hunter2-secret" not in text and "(sensitive value)" in text


@pytest.mark.parametrize(
    "content, detail",
    [
        ('{"version": 1, "stack": "demo", "lin', "invalid JSON"),
        ("", "invalid JSON"),
        ('{"version": 7}', "version 1"),
        ('{"version": 1, "stack": "demo"}', "missing or malformed"),
        ('{"version": 1, "stack": "other", "lineage": "x", "serial": 1, "resources": []}', "belongs to the stack 'other'"),
    ],
)
def test_corrupt_state_names_the_file_and_the_recovery(tmp_path, content, detail):
    store = StateStore(tmp_path)
    store.path("demo").write_text(content)
    with pytest.raises(MadinfraError) as err:
        store.load("demo")
    message = str(err.value)
    assert str(store.path("demo")) in message and detail in message
    assert f"mv {store.path('demo')} {store.path('demo')}.damaged" in message
    assert ".backup" not in message


def test_corrupt_state_offers_the_backup_when_there_is_one(tmp_path):
    store = StateStore(tmp_path)
    store.save(State(stack="demo"))
    store.save(State(stack="demo"))
    store.path("demo").write_text("{trunc")
    with pytest.raises(MadinfraError) as err:
        store.load("demo")
    assert f"cp {store.backup_path('demo')} {store.path('demo')}" in str(err.value)
    os.replace(store.backup_path("demo"), store.path("demo"))
    assert store.load("demo").serial == 1
