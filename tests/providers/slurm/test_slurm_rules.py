"""Update rules: what the planner proposes for each kind of change to a pending or running job,
and the scontrol assignments apply sends for in-place updates."""

from __future__ import annotations

import pytest

from madinfra.launchers import compile as compile_launch
from madinfra.planner import plan
from madinfra.resources import Resource
from madinfra_slurm import SlurmProvider, rules, scripts, squeue


def desired_worker(spec) -> Resource:
    (resource,) = SlurmProvider().desired(spec, compile_launch(spec))
    return resource


def live_from(resource: Resource, *, state: str = "RUNNING", job_id: str = "77", **row_overrides: str) -> Resource:
    """What squeue would report for a job submitted from ``resource`` (built through the real parser)."""
    spec = resource.spec
    fields = {
        "job_id": job_id, "name": spec["name"], "state": state, "time": spec["time"], "nodes": str(spec["nodes"]),
        "nodelist": "node[1-2]" if state == "RUNNING" else "", "partition": spec["partition"],
        "tres_per_node": f"gres:gpu:{spec['gpus_per_node']}" if spec["gpus_per_node"] else "N/A", "reason": "None",
        "oversubscribe": "NO" if spec.get("exclusive") else "OK", "qos": spec.get("qos") or "normal",
        "account": spec.get("account") or "root", "constraint": spec.get("constraint") or "(null)",
        "req_nodes": spec.get("nodelist") or "", "exc_nodes": spec.get("exclude") or "", "reservation": spec.get("reservation") or "(null)",
        "mem": spec.get("mem") or "0", "workdir": "/home/u/.madinfra/demo", "elapsed": "0:10", "comment": spec["submit"]["comment"],
    }
    fields.update(row_overrides)
    text = squeue.SEPARATOR.join(fields[name] for name, _ in squeue.FIELDS)
    (live,) = squeue.to_resources(squeue.parse_squeue(text), "demo")
    return live


def plan_one(want: Resource, have: Resource | None):
    return plan([want], [have] if have is not None else [], None, SlurmProvider().update_rules, stack="demo")


def with_slurm(slurm_stack, **slurm):
    base = {"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "10", "exclusive": False}
    return slurm_stack(slurm={**base, **slurm})


def test_a_job_submitted_from_the_desired_spec_reads_back_identical(slurm_stack) -> None:
    want = desired_worker(with_slurm(slurm_stack, qos="high", account="proj", mem="8G", exclusive=True, constraint="fast"))
    assert plan_one(want, live_from(want)).changes == []


def test_missing_job_is_created(slurm_stack) -> None:
    result = plan_one(desired_worker(with_slurm(slurm_stack)), None)
    (change,) = result.changes
    assert change.action == "create" and result.gpus_after == 1
    assert "submit" not in {f.path.split(".")[0] for f in change.fields}, "the script text is not a diffed field"


@pytest.mark.parametrize("state", ["RUNNING", "PENDING"])
def test_time_limit_changes_in_place_whatever_the_state(slurm_stack, state: str) -> None:
    have = live_from(desired_worker(with_slurm(slurm_stack)), state=state)
    (change,) = plan_one(desired_worker(with_slurm(slurm_stack, time="20")), have).changes
    assert change.action == "update"
    assert [(f.path, f.before, f.after, f.forces_replace) for f in change.fields] == [("time", "00:10:00", "00:20:00", False)]


@pytest.mark.parametrize(
    ("field", "slurm"),
    [("partition", {"partition": "other"}), ("qos", {"qos": "high"}), ("constraint", {"constraint": "fast"}), ("mem", {"mem": "4G"})],
)
def test_allocation_fields_replace_a_running_job_but_update_a_pending_one(slurm_stack, field: str, slurm: dict) -> None:
    before = desired_worker(with_slurm(slurm_stack))
    after = desired_worker(with_slurm(slurm_stack, **slurm))
    (running,) = plan_one(after, live_from(before, state="RUNNING")).changes
    assert running.action == "replace"
    assert any(f.path == field and f.forces_replace for f in running.fields)
    assert any(field in reason and "running" in reason for reason in running.reasons)
    (pending,) = plan_one(after, live_from(before, state="PENDING")).changes
    assert pending.action == "update"


def test_more_nodes_or_gpus_replace_and_name_the_field(slurm_stack) -> None:
    before = desired_worker(slurm_stack())
    after = desired_worker(
        slurm_stack(
            slurm={"partition": "debug", "nodes": 2, "gpus_per_node": 2, "time": "10", "exclusive": False},
            distributed={"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 2},
        )
    )
    result = plan_one(after, live_from(before))
    (change,) = result.changes
    assert change.action == "replace"
    forced = {f.path for f in change.fields if f.forces_replace}
    assert {"nodes", "gpus_per_node"} <= forced
    assert result.gpus_before == 1 and result.gpus_after == 4


def test_script_changes_always_replace(slurm_stack) -> None:
    have = live_from(desired_worker(slurm_stack()), state="PENDING")
    (change,) = plan_one(desired_worker(slurm_stack(env_vars={"NEW": "1"})), have).changes
    assert change.action == "replace"
    assert [f.path for f in change.fields if f.forces_replace] == ["script_sha256"]


def test_a_job_of_a_role_the_stack_no_longer_has_is_deleted(slurm_stack) -> None:
    want = desired_worker(slurm_stack())
    orphan = live_from(want, job_id="90", name="madinfra.demo.decode", comment="madinfra:stack=demo;resource=slurm/Job/decode;script=x")
    result = plan([want], [live_from(want), orphan], None, SlurmProvider().update_rules, stack="demo")
    assert [(c.action, c.resource_id) for c in result.changes] == [("delete", "slurm/Job/decode")]


def test_assignments_for_a_running_job() -> None:
    desired = {"time": "00:20:00", "name": "madinfra.demo.worker"}
    words = rules.assignments(desired, {"time", "name", "comment"}, running=True, comment="madinfra:x")
    assert words == ["JobName=madinfra.demo.worker", "TimeLimit=00:20:00", "Comment=madinfra:x"]
    with pytest.raises(rules.NotInPlace, match="nodes cannot be changed in place on a running job"):
        rules.assignments({"nodes": 2}, {"nodes"}, running=True, comment="c")


def test_assignments_for_a_pending_job() -> None:
    desired = {"nodes": 3, "gpus_per_node": 0, "partition": "p", "constraint": None, "qos": "high", "mem": "4G"}
    words = rules.assignments(desired, desired.keys(), running=False, comment="c")
    assert words == ["Features=", "Gres=", "MinMemoryNode=4096", "NumNodes=3-3", "Partition=p", "QOS=high", "Comment=c"]
    with pytest.raises(rules.NotInPlace, match="qos"):
        rules.assignments({"qos": None}, {"qos"}, running=False, comment="c")
    with pytest.raises(rules.NotInPlace, match="script_sha256"):
        rules.assignments({"script_sha256": "x"}, {"script_sha256"}, running=False, comment="c")


def test_field_paths_map_to_top_level_spec_keys() -> None:
    assert rules.top_level("time") == "time"
    assert rules.top_level("submit.script") == "submit"
    assert rules.top_level("env[HOME]") == "env"


def test_only_slurm_jobs_have_rules() -> None:
    assert SlurmProvider().update_rules(scripts.KIND) is rules.JOB_RULES
    with pytest.raises(Exception, match="no resource kind 'k8s/Job'"):
        SlurmProvider().update_rules("k8s/Job")
