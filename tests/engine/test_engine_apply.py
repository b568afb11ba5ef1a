"""The engine against the in-memory provider: every action, state after each change, failures."""

import json

import pytest
from memory_provider import MemoryProvider, MemoryStore, res

from madinfra.engine.pipeline import rules_for
from madinfra.engine.run import apply_plan
from madinfra.planner import plan as make_plan
from madinfra.state.store import StateStore

STACK = "demo"


def stack(size="1Gi", nodes=1, partition="a", port=80, extra=()):
    volume = res("mem_volume", "data", size=size)
    job = res("mem_job", "train", depends_on=(volume.id,), gpus=8 * nodes, workload=True, nodes=nodes, partition=partition)
    service = res("mem_service", "svc", depends_on=(job.id,), port=port)
    return [volume, job, service, *(res("mem_config", n, value=n) for n in extra)]


class Harness:
    def __init__(self, tmp_path, provider: MemoryProvider):
        self.provider = provider
        self.states = StateStore(tmp_path / "state")
        self.outcomes = []

    def plan(self, desired, only=()):
        state = self.states.load(STACK)
        return make_plan(
            desired,
            self.provider.read(STACK),
            state.resources if state else None,
            rules_for(self.provider),
            stack=STACK,
            only=only,
        )

    def apply(self, desired, only=()):
        p = self.plan(desired, only)
        state = self.states.load_or_new(STACK)
        return apply_plan(p, self.provider, self.states, state, rules_for(self.provider), lambda *a: None, lambda c, e: self.outcomes.append((c.resource_id, e)))

    def actions(self, desired, only=()):
        return [(c.action, c.resource_id) for c in self.plan(desired, only).changes]

    def state(self):
        return self.states.load(STACK)


@pytest.fixture
def h(tmp_path, provider):
    return Harness(tmp_path, provider)


def test_apply_creates_everything_records_state_and_the_next_plan_is_empty(h):
    result = h.apply(stack())
    assert result.ok and result.counts == {"add": 3, "change": 0, "replace": 0, "destroy": 0}
    state = h.state()
    assert set(state.resources) == {"mem_volume/data", "mem_job/train", "mem_service/svc"}
    assert state.resources["mem_job/train"].provider_id.startswith("mem-")
    assert state.resources["mem_job/train"].spec_hash.startswith("sha256:")
    assert h.actions(stack()) == []
    assert h.apply(stack()).done == []


def test_update_replace_and_delete_each_apply(h, store):
    h.apply(stack(extra=("x",)))
    old_job_id = h.state().resources["mem_job/train"].provider_id
    desired = stack(size="2Gi", partition="b")
    assert h.actions(desired) == [("delete", "mem_config/x"), ("update", "mem_volume/data"), ("replace", "mem_job/train")]
    result = h.apply(desired)
    assert result.ok and result.counts == {"add": 0, "change": 1, "replace": 1, "destroy": 1}
    state = h.state()
    assert "mem_config/x" not in state.resources
    assert state.resources["mem_job/train"].provider_id != old_job_id
    assert store.resources["mem_job/train"]["spec"]["spec"]["partition"] == "b"
    assert h.actions(desired) == []


def test_running_job_is_replaced_for_a_node_change_but_updated_when_pending(h, store):
    h.apply(stack())
    assert h.actions(stack(nodes=2)) == [("update", "mem_job/train")]
    store.set_status("mem_job/train", {"state": "RUNNING"})
    p = h.plan(stack(nodes=2))
    assert [(c.action, c.resource_id) for c in p.changes] == [("replace", "mem_job/train")]
    assert [r.resource_id for r in p.restarts] == ["mem_job/train"]
    assert (p.gpus_before, p.gpus_after) == (8, 16)


def test_state_is_written_after_every_single_change(h, monkeypatch):
    snapshots = []
    save = h.states.save

    def spy(state):
        save(state)
        on_disk = json.loads(h.states.path(STACK).read_text())["resources"]
        snapshots.append(sorted(r["name"] for r in on_disk))

    monkeypatch.setattr(h.states, "save", spy)
    h.apply(stack())
    assert snapshots == [["data"], ["data", "train"], ["data", "svc", "train"]]


def test_partial_failure_runs_independent_changes_skips_dependents_and_the_next_plan_shows_what_is_left(h, store):
    store.set("fail", {"mem_job/train": "no nodes in partition a"})
    result = h.apply(stack(extra=("x",)))
    assert not result.ok
    assert [c.resource_id for c in result.done] == ["mem_volume/data", "mem_config/x"]
    assert result.failed == {"mem_job/train": "no nodes in partition a"}
    assert list(result.skipped) == ["mem_service/svc"]
    assert set(h.state().resources) == {"mem_volume/data", "mem_config/x"}
    assert h.actions(stack(extra=("x",))) == [("create", "mem_job/train"), ("create", "mem_service/svc")]
    store.set("fail", {})
    assert h.apply(stack(extra=("x",))).ok
    assert h.actions(stack(extra=("x",))) == []


def test_failed_update_taints_state_instead_of_reporting_drift(h, store):
    h.apply(stack())
    store.set("fail", {"mem_volume/data": "quota"})
    assert not h.apply(stack(size="9Gi")).ok
    assert h.state().resources["mem_volume/data"].tainted
    (change,) = h.plan(stack(size="9Gi")).changes
    assert not change.drift and "previous apply" in change.reasons[0]
    store.set("fail", {})
    assert h.apply(stack(size="9Gi")).ok
    assert not h.state().resources["mem_volume/data"].tainted


def test_provider_that_raises_part_way_fails_the_rest(h, provider, monkeypatch):
    def broken_apply(changes, progress, record):
        raise RuntimeError("connection lost")

    monkeypatch.setattr(provider, "apply", broken_apply)
    result = h.apply(stack())
    assert set(result.failed) == {"mem_volume/data", "mem_job/train", "mem_service/svc"}
    assert all("connection lost" in why for why in result.failed.values())


def test_provider_that_forgets_to_record_counts_as_failed(h, provider, monkeypatch):
    monkeypatch.setattr(provider, "apply", lambda changes, progress, record: None)
    result = h.apply(stack())
    assert set(result.failed) == {"mem_volume/data", "mem_job/train", "mem_service/svc"}
    assert "no result" in result.failed["mem_job/train"]


def test_drift_changed_and_deleted_outside_madinfra(h, store):
    h.apply(stack())
    store.edit_spec("mem_service/svc", "spec.port", 9999)
    store.remove("mem_volume/data")
    p = h.plan(stack())
    by_id = {c.resource_id: c for c in p.changes}
    assert by_id["mem_volume/data"].action == "create" and by_id["mem_volume/data"].drift
    assert by_id["mem_service/svc"].action == "update" and by_id["mem_service/svc"].drift
    assert [(f.path, f.before, f.after) for f in by_id["mem_service/svc"].fields] == [("spec.port", 9999, 80)]
    assert h.apply(stack()).ok and h.actions(stack()) == []


def test_orphans_found_by_label_are_deleted_without_state(h, store, tmp_path):
    h.apply(stack(extra=("x",)))
    h.states.path(STACK).unlink()
    assert h.actions(stack()) == [("delete", "mem_config/x")]
    assert h.actions([]) == [
        ("delete", "mem_service/svc"),
        ("delete", "mem_job/train"),
        ("delete", "mem_volume/data"),
        ("delete", "mem_config/x"),
    ]


def test_other_stacks_are_never_touched(h, store):
    other = MemoryProvider(store=store)
    other._create(res("mem_volume", "theirs", stack="other", size="1Gi"))
    h.apply(stack())
    assert h.actions([]) and "mem_volume/theirs" not in [rid for _, rid in h.actions([])]
    h.apply([])
    assert "mem_volume/theirs" in store.resources


def test_only_applies_the_selection_and_leaves_the_rest_planned(h):
    result = h.apply(stack(extra=("x",)), only=["train"])
    assert [c.resource_id for c in result.done] == ["mem_volume/data", "mem_job/train"]
    assert h.actions(stack(extra=("x",))) == [("create", "mem_service/svc"), ("create", "mem_config/x")]


def test_sync_records_resources_that_already_match_and_drops_vanished_ones(h, store):
    h.apply(stack())
    h.states.path(STACK).unlink()
    h.apply(stack())
    assert set(h.state().resources) == {"mem_volume/data", "mem_job/train", "mem_service/svc"}
    store.remove("mem_service/svc")
    h.apply(stack()[:2])
    assert set(h.state().resources) == {"mem_volume/data", "mem_job/train"}


def test_outcomes_are_reported_for_every_change(h, store):
    store.set("fail", {"mem_volume/data": "disk"})
    h.apply(stack())
    assert [(rid, type(e).__name__ if e else None) for rid, e in h.outcomes] == [
        ("mem_volume/data", "RuntimeError"),
        ("mem_job/train", "ChangeSkipped"),
        ("mem_service/svc", "ChangeSkipped"),
    ]


def test_memory_store_file_is_shared_between_instances(tmp_path):
    path = tmp_path / "store.json"
    first = MemoryProvider(store=MemoryStore(path))
    first._create(res("mem_volume", "v", size="1"))
    assert [r.id for r in MemoryProvider(store=MemoryStore(path)).read(STACK)] == ["mem_volume/v"]


def test_update_without_a_live_result_keeps_the_provider_id(h, provider, monkeypatch):
    h.apply(stack())
    before = h.state().resources["mem_volume/data"].provider_id
    original = provider._update
    monkeypatch.setattr(provider, "_update", lambda change: original(change) and None)
    assert h.apply(stack(size="5Gi")).ok
    assert h.state().resources["mem_volume/data"].provider_id == before


def test_failure_with_a_live_result_records_it_tainted(h, tmp_path):
    from madinfra.engine.recorder import StateRecorder
    from madinfra.sequential import ReplaceIncomplete
    from madinfra.resources import Change
    from madinfra.state.store import State

    recorder = StateRecorder(h.states, State(stack=STACK), rules_for(h.provider))
    new = res("mem_job", "train", partition="b")
    new.provider_id = "mem-99"
    recorder(Change("replace", new.id, new, res("mem_job", "train", partition="a")), new, ReplaceIncomplete("old one stuck", new))
    entry = h.state().resources["mem_job/train"]
    assert (entry.provider_id, entry.tainted, entry.error) == ("mem-99", True, "old one stuck")
    recorder(Change("create", "mem_volume/x", res("mem_volume", "x"), None), None, RuntimeError("no"))
    assert "mem_volume/x" not in h.state().resources
