import json

from madinfra.planner import plan as make_plan
from madinfra.render.json_plan import FORMAT_VERSION, dumps, plan_to_data, resource_from_data, resource_to_data
from madinfra.resources import Resource, UpdateRules
from madinfra.secrets import Redactor

RULES = {"job": UpdateRules(force_replace=("spec.partition",))}


def rules_for(kind):
    return RULES.get(kind, UpdateRules())


def test_json_plan_shape():
    live = [Resource("job", "j", {"spec": {"partition": "a", "n": 1}}, gpus=8, workload=True, provider_id="42"), Resource("cfg", "old", {"spec": {}})]
    desired = [Resource("job", "j", {"spec": {"partition": "b", "n": 1}}, gpus=8, workload=True), Resource("vol", "v", {"spec": {"size": 1}})]
    p = make_plan(desired, live, None, rules_for, stack="demo", stack_fingerprint="sha256:abc")
    data = json.loads(dumps(plan_to_data(p)))
    assert data["format_version"] == FORMAT_VERSION == "1.3"
    assert data["summary"] == {"add": 1, "change": 0, "replace": 1, "destroy": 1}
    assert data["has_changes"] is True and data["gpus"] == {"before": 8, "after": 8, "peak": None, "free": None}
    assert data["rollouts"] == []
    assert [(c["action"], c["address"], c["symbol"]) for c in data["changes"]] == [
        ("delete", "cfg/old", "-"),
        ("replace", "job/j", "-/+"),
        ("create", "vol/v", "+"),
    ]
    job = data["changes"][1]
    assert job["replace_paths"] == ["spec.partition"] and job["provider_id"] == "42" and job["workload"] is True
    assert job["fields"] == [{"path": "spec.partition", "before": "a", "after": "b", "forces_replacement": True, "details": []}]
    assert data["changes"][2]["before"] is None and data["changes"][0]["after"] is None
    assert data["restarts"] == [{"address": "job/j", "action": "replace"}]
    assert data["fingerprints"] == {"live": p.live_fingerprint, "stack_file": "sha256:abc"}


def test_json_plan_is_redacted():
    p = make_plan([Resource("cfg", "c", {"spec": {"v": "hunter2-secret"}})], [], None, rules_for)
    assert "hunter2-secret" not in dumps(plan_to_data(p, Redactor(["hunter2-secret"])))


def test_resource_data_roundtrip():
    resource = Resource("job", "j", {"spec": {"x": [1]}}, depends_on=("vol/v",), gpus=4, workload=True, role="worker", provider_id="7", status={"state": "RUNNING"})
    assert resource_from_data(json.loads(json.dumps(resource_to_data(resource)))) == resource
