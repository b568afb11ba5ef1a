"""Ctrl-C during apply, at the engine: a provider that stops between its own steps after the first
Ctrl-C (as the Kubernetes provider does between rollout steps) leaves the rest *not started*."""

from __future__ import annotations

import pytest
from memory_provider import MemoryProvider, MemoryStore, res

from madinfra import interrupt
from madinfra.engine.pipeline import rules_for
from madinfra.engine.run import apply_plan
from madinfra.planner import plan as make_plan
from madinfra.state.store import StateStore


class StopsAfterFirstStep(MemoryProvider):
    """Applies the first change, then sees the stop request and returns without reporting the rest."""

    def apply(self, changes, progress, record):
        first = changes[0]
        progress(first.resource_id, "creating")
        record(first, self._create(first.desired), None)
        interrupt._requested.set()  # the user pressed Ctrl-C during the first step
        assert interrupt.stop_requested()  # what a provider asks between its steps


@pytest.fixture(autouse=True)
def clear_request():
    interrupt._requested.clear()
    yield
    interrupt._requested.clear()


def test_unreported_changes_after_a_stop_request_are_not_started_and_not_in_state(tmp_path):
    provider = StopsAfterFirstStep(store=MemoryStore())
    states = StateStore(tmp_path)
    desired = [res("mem_volume", "a"), res("mem_volume", "b"), res("mem_volume", "c")]
    plan = make_plan(desired, [], None, rules_for(provider), stack="demo")
    result = apply_plan(plan, provider, states, states.load_or_new("demo"), rules_for(provider), lambda rid, msg: None)
    assert result.interrupted and [c.resource_id for c in result.done] == ["mem_volume/a"]
    assert result.skipped == {
        "mem_volume/b": "mem_volume/b was not started because the apply was interrupted (Ctrl-C)",
        "mem_volume/c": "mem_volume/c was not started because the apply was interrupted (Ctrl-C)",
    }
    assert not result.failed
    assert sorted(states.load("demo").resources) == ["mem_volume/a"]


def test_no_stop_request_means_an_ordinary_apply(tmp_path):
    provider = MemoryProvider(store=MemoryStore())
    states = StateStore(tmp_path)
    desired = [res("mem_volume", "a"), res("mem_volume", "b")]
    plan = make_plan(desired, [], None, rules_for(provider), stack="demo")
    result = apply_plan(plan, provider, states, states.load_or_new("demo"), rules_for(provider), lambda rid, msg: None)
    assert result.ok and not result.interrupted
