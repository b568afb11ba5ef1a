"""The engine's core promise: after an apply, the next plan is empty — for any stack, any change."""

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_provider import MemoryProvider, MemoryStore, res

from madinfra.engine.pipeline import rules_for
from madinfra.engine.run import apply_plan
from madinfra.planner import plan as make_plan
from madinfra.state.store import StateStore

KINDS = ("mem_job", "mem_service", "mem_volume", "mem_config")
NAMES = ("a", "b", "c", "d")
leaf = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from(["x", "y", ""]), st.booleans())
env = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["A", "B", "C"]), "value": st.sampled_from(["1", "2"])}), max_size=3, unique_by=lambda e: e["name"])
spec_fields = st.fixed_dictionaries(
    {},
    optional={
        "partition": st.sampled_from(["p1", "p2"]),
        "nodes": st.integers(1, 3),
        "tags": st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=3, unique=True),
        "args": st.lists(leaf, max_size=3),
        "env": env,
        "cluster_ip": st.sampled_from(["10.0.0.1", "10.0.0.2"]),
        "opts": st.dictionaries(st.sampled_from(["k1", "k2"]), leaf, max_size=2),
        "value": leaf,
    },
)


@st.composite
def stacks(draw):
    ids = draw(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(NAMES)), unique=True, max_size=6))
    resources = []
    for i, (kind, name) in enumerate(ids):
        earlier = [f"{k}/{n}" for k, n in ids[:i]]
        deps = tuple(draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2))) if earlier else ()
        resources.append(
            res(kind, name, depends_on=deps, gpus=draw(st.integers(0, 8)), workload=kind == "mem_job", **draw(spec_fields))
        )
    return resources


outside = st.lists(
    st.tuples(st.sampled_from(["edit", "remove", "run"]), st.sampled_from([f"{k}/{n}" for k in KINDS for n in NAMES]), leaf),
    max_size=3,
)


def converge(provider, states, desired):
    state = states.load_or_new("demo")
    rules = rules_for(provider)
    p = make_plan(desired, provider.read("demo"), state.resources, rules, stack="demo")
    result = apply_plan(p, provider, states, state, rules, lambda *a: None)
    assert result.ok, result.failed
    state = states.load("demo")
    return make_plan(desired, provider.read("demo"), state.resources if state else None, rules, stack="demo")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=stacks(), second=stacks(), drift=outside)
def test_plan_apply_plan_is_empty(first, second, drift):
    with tempfile.TemporaryDirectory() as tmp:
        store = MemoryStore()
        provider = MemoryProvider(store=store)
        states = StateStore(tmp)
        assert converge(provider, states, first).changes == []
        for action, rid, value in drift:
            if rid not in store.resources:
                continue
            if action == "edit":
                store.edit_spec(rid, "spec.value", value)
            elif action == "remove":
                store.remove(rid)
            else:
                store.set_status(rid, {"state": "RUNNING"})
        assert converge(provider, states, second).changes == []
        final = states.load("demo")
        assert set(final.resources if final else ()) == {r.id for r in second}
