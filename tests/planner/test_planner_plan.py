from dataclasses import dataclass, field
from typing import Any

import pytest

from madinfra.errors import MadinfraError
from madinfra.planner import CHANGED_OUTSIDE, DELETED_OUTSIDE, live_fingerprint, plan
from madinfra.resources import Resource, UpdateRules

RULES = {
    "job": UpdateRules(force_replace=("spec.partition",), replace_when_running=("spec.nodes",), server_owned=("metadata.uid",)),
}


def rules_for(kind: str) -> UpdateRules:
    return RULES.get(kind, UpdateRules(server_owned=("metadata.uid",)))


def r(kind, name, *, deps=(), gpus=0, workload=False, status=None, pid=None, **spec):
    return Resource(kind, name, {"spec": spec}, depends_on=tuple(deps), gpus=gpus, workload=workload, status=status or {}, provider_id=pid)


def live(resource: Resource, pid: str = "id-1", status: dict | None = None) -> Resource:
    spec = {**resource.spec, "metadata": {"uid": pid}}
    return Resource(resource.kind, resource.name, spec, resource.depends_on, resource.gpus, resource.workload, provider_id=pid, status=status or {})


@dataclass
class Applied:
    spec: dict[str, Any]
    tainted: bool = False
    extra: dict = field(default_factory=dict)


def actions(p):
    return [(c.action, c.resource_id) for c in p.changes]


def test_create_when_nothing_is_live():
    p = plan([r("vol", "data", size=1)], [], None, rules_for, stack="demo")
    assert actions(p) == [("create", "vol/data")]
    assert [(f.path, f.after) for f in p.changes[0].fields] == [("spec.size", 1)]
    assert p.summary == {"add": 1, "change": 0, "replace": 0, "destroy": 0}
    assert not p.changes[0].drift


def test_no_change_when_live_only_differs_by_server_noise():
    want = r("vol", "data", size=1, env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    have = live(r("vol", "data", size=1, comment=None, env=[{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]))
    p = plan([want], [have], None, rules_for)
    assert p.changes == [] and not p.has_changes


def test_update_in_place_lists_each_field():
    p = plan([r("vol", "data", size=2, mode="rw")], [live(r("vol", "data", size=1, mode="rw"))], None, rules_for)
    (change,) = p.changes
    assert change.action == "update"
    assert [(f.path, f.before, f.after, f.forces_replace) for f in change.fields] == [("spec.size", 1, 2, False)]


def test_replace_names_every_forcing_field():
    want = r("job", "train", partition="b", time="2:00", nodes=1)
    have = live(r("job", "train", partition="a", time="1:00", nodes=1))
    (change,) = plan([want], [have], None, rules_for).changes
    assert change.action == "replace"
    assert {f.path: f.forces_replace for f in change.fields} == {"spec.partition": True, "spec.time": False}
    assert change.reasons == ["spec.partition forces replacement"]


@pytest.mark.parametrize("status", [{"state": "RUNNING"}, {"running": True}, {"state": "running"}])
def test_replace_when_running_fields_replace_only_a_running_resource(status):
    want = r("job", "train", partition="a", nodes=2)
    pending = live(r("job", "train", partition="a", nodes=1), status={"state": "PENDING"})
    running = live(r("job", "train", partition="a", nodes=1), status=status)
    assert actions(plan([want], [pending], None, rules_for)) == [("update", "job/train")]
    (change,) = plan([want], [running], None, rules_for).changes
    assert change.action == "replace"
    assert change.fields[0].forces_replace
    assert "because the resource is running" in change.reasons[0]


def test_orphans_are_deleted_with_a_reason():
    p = plan([], [live(r("vol", "old"))], {"vol/old": Applied({"spec": {}})}, rules_for)
    assert actions(p) == [("delete", "vol/old")]
    assert p.changes[0].reasons == ["no longer in the stack"]
    p = plan([], [live(r("vol", "stray"))], None, rules_for)
    assert "found by its stack label" in p.changes[0].reasons[0]


def test_drift_changed_outside_shows_live_and_desired():
    want = r("vol", "data", size=1)
    have = live(r("vol", "data", size=5))
    p = plan([want], [have], {"vol/data": Applied(want.spec)}, rules_for)
    (change,) = p.changes
    assert change.drift and change.reasons[0] == CHANGED_OUTSIDE
    assert [(f.before, f.after) for f in change.fields] == [(5, 1)]
    assert p.drift == [change]


def test_deleted_outside_madinfra_is_a_create_marked_as_drift():
    want = r("vol", "data", size=1)
    (change,) = plan([want], [], {"vol/data": Applied(want.spec)}, rules_for).changes
    assert change.action == "create" and change.drift and change.reasons == [DELETED_OUTSIDE]


def test_tainted_state_is_not_reported_as_drift():
    want = r("vol", "data", size=1)
    have = live(r("vol", "data", size=5))
    (change,) = plan([want], [have], {"vol/data": Applied({"spec": {"size": 3}}, tainted=True)}, rules_for).changes
    assert not change.drift
    assert "previous apply" in change.reasons[0]
    (create,) = plan([want], [], {"vol/data": Applied(want.spec, tainted=True)}, rules_for).changes
    assert create.action == "create" and not create.drift


def test_changes_follow_dependencies_and_deletes_go_first_in_reverse():
    desired = [r("svc", "s", deps=("job/j",)), r("job", "j", deps=("vol/v",)), r("vol", "v")]
    orphans = [live(r("cfg", "base")), live(Resource("cfg", "top", {"spec": {}}, depends_on=("cfg/base",)))]
    p = plan(desired, orphans, None, rules_for)
    assert actions(p) == [
        ("delete", "cfg/top"),
        ("delete", "cfg/base"),
        ("create", "vol/v"),
        ("create", "job/j"),
        ("create", "svc/s"),
    ]


def test_dependency_cycle_is_a_clear_error():
    with pytest.raises(MadinfraError, match="cycle"):
        plan([r("a", "x", deps=("b/y",)), r("b", "y", deps=("a/x",))], [], None, rules_for)


def test_gpu_totals_and_restarts():
    want_job = r("job", "train", gpus=16, workload=True, partition="b", nodes=2)
    have_job = live(Resource("job", "train", {"spec": {"partition": "a", "nodes": 2}}, gpus=8, workload=True))
    have_old = live(Resource("job", "old", {"spec": {}}, gpus=4, workload=True))
    have_vol = live(r("vol", "v", size=1))
    p = plan([want_job, r("vol", "v", size=2)], [have_job, have_old, have_vol], None, rules_for)
    assert (p.gpus_before, p.gpus_after) == (12, 16)
    assert {(x.resource_id, x.action) for x in p.restarts} == {("job/train", "replace"), ("job/old", "delete")}


def test_provider_can_mark_an_update_as_restarting():
    want = r("job", "train", workload=True, partition="a", time="2")
    have = live(Resource("job", "train", {"spec": {"partition": "a", "time": "1"}}, workload=True))
    p = plan([want], [have], None, rules_for, restarts_on_update=lambda change: True)
    assert [(x.resource_id, x.action) for x in p.restarts] == [("job/train", "update")]
    assert plan([want], [have], None, rules_for).restarts == []


def test_only_limits_to_the_named_resources_and_their_dependencies():
    desired = [r("vol", "v", size=2), r("job", "j", deps=("vol/v",), x=1), r("svc", "s", deps=("job/j",), y=1), r("cfg", "c", z=1)]
    p = plan(desired, [], None, rules_for, only=["job/j"])
    assert actions(p) == [("create", "vol/v"), ("create", "job/j")]
    p = plan(desired, [live(r("cfg", "gone"))], None, rules_for, only=["c", "gone"])
    assert actions(p) == [("delete", "cfg/gone"), ("create", "cfg/c")]


def test_only_with_an_unknown_name_lists_valid_ids():
    with pytest.raises(MadinfraError) as err:
        plan([r("vol", "v")], [], None, rules_for, only=["nope"])
    assert "--only nope" in str(err.value) and "vol/v" in str(err.value)


def test_duplicate_ids_are_rejected():
    with pytest.raises(MadinfraError, match="vol/v"):
        plan([r("vol", "v"), r("vol", "v")], [], None, rules_for)


def test_live_fingerprint_ignores_order_and_server_fields_but_not_real_changes():
    a, b = live(r("vol", "a", size=1), "id-1"), live(r("vol", "b", size=1), "id-2")
    base = live_fingerprint([a, b], rules_for)
    assert live_fingerprint([b, a], rules_for) == base
    moved = live(r("vol", "a", size=1), "id-1")
    moved.spec["metadata"]["uid"] = "changed-by-server"
    assert live_fingerprint([moved, b], rules_for) == base
    assert live_fingerprint([live(r("vol", "a", size=2), "id-1"), b], rules_for) != base
    assert live_fingerprint([live(r("vol", "a", size=1), "id-9"), b], rules_for) != base
    assert live_fingerprint([live(r("vol", "a", size=1), "id-1", {"state": "RUNNING"}), b], rules_for) != base


def test_plan_carries_stack_and_fingerprints():
    p = plan([], [], None, rules_for, stack="demo", stack_fingerprint="sha256:x")
    assert p.stack == "demo" and p.stack_fingerprint == "sha256:x" and p.live_fingerprint.startswith("sha256:")


def test_replace_forces_a_replacement_without_any_difference():
    job = r("job", "train", nodes=2, workload=True, gpus=2)
    p = plan([job], [live(job)], None, rules_for, stack="demo", replace=["train"])
    assert actions(p) == [("replace", "job/train")]
    assert p.changes[0].reasons == ["replacement requested with --replace"]
    assert p.changes[0].fields == []
    assert [x.resource_id for x in p.restarts] == ["job/train"]
    assert p.replace == ("train",)


def test_replace_upgrades_an_in_place_update_and_keeps_its_fields():
    job = r("job", "train", nodes=2, time="1:00")
    p = plan([r("job", "train", nodes=2, time="2:00")], [live(job)], None, rules_for, replace=["job/train"])
    assert actions(p) == [("replace", "job/train")]
    assert [f.path for f in p.changes[0].fields] == ["spec.time"]


def test_replace_of_a_resource_not_yet_live_is_a_plain_create_and_unknown_names_fail():
    job = r("job", "train", nodes=2)
    assert actions(plan([job], [], None, rules_for, replace=["train"])) == [("create", "job/train")]
    with pytest.raises(MadinfraError, match="--replace nope matches no resource of this stack; valid resource ids: job/train"):
        plan([job], [live(job)], None, rules_for, replace=["nope"])


def test_a_provider_can_refuse_an_in_place_field_with_its_reason():
    rules = UpdateRules()
    live = Resource("slurm/Job", "w", {"time": "10", "name": "a"}, status={"running": True})
    want = Resource("slurm/Job", "w", {"time": "20", "name": "b"})

    def not_in_place(have, desired, path, before, after):
        return "only an operator may raise it" if path == "time" and after > before else None

    result = plan([want], [live], {}, lambda kind: rules, not_in_place=not_in_place)
    (change,) = result.changes
    assert change.action == "replace" and "only an operator may raise it" in change.reasons
    assert {f.path: f.forces_replace for f in change.fields} == {"time": True, "name": False}
    assert plan([want], [live], {}, lambda kind: rules).changes[0].action == "update"
