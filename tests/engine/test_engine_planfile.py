import json
import stat

import pytest
from memory_provider import res

from madinfra.engine.planfile import PLAN_FILE_KIND, check_live, check_stack_file, load_plan_file, read_plan_document, save_plan
from madinfra.errors import MadinfraError
from madinfra.planner import plan as make_plan
from madinfra.resources import UpdateRules
from madinfra.secrets import Redactor


def rules_for(kind):
    return UpdateRules(server_owned=("metadata.uid",))


def sample_plan(live=()):
    desired = [res("mem_volume", "v", size="1Gi"), res("mem_job", "j", depends_on=("mem_volume/v",), gpus=8, workload=True, token="hunter2-secret")]
    p = make_plan(desired, list(live), None, rules_for, stack="demo", only=("j",), stack_fingerprint="sha256:stack")
    p.stack_file, p.target = "/abs/demo.yaml", "slurm"
    return p


def test_saved_plan_roundtrips_desired_resources_and_fingerprints(tmp_path):
    p = sample_plan()
    path = tmp_path / "plan.json"
    save_plan(p, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = load_plan_file(path)
    assert (saved.stack, saved.target, str(saved.stack_file), saved.only) == ("demo", "slurm", "/abs/demo.yaml", ("j",))
    assert saved.live_fingerprint == p.live_fingerprint and saved.stack_fingerprint == "sha256:stack"
    assert [r.id for r in saved.desired] == ["mem_volume/v", "mem_job/j"]
    assert saved.desired[1].depends_on == ("mem_volume/v",) and saved.desired[1].gpus == 8 and saved.desired[1].workload
    assert saved.actions == [("create", "mem_volume/v"), ("create", "mem_job/j")]
    assert json.loads(path.read_text())["plan_file"]["kind"] == PLAN_FILE_KIND


def test_plan_file_never_holds_a_known_secret_value(tmp_path):
    path = tmp_path / "plan.json"
    save_plan(sample_plan(), path, Redactor(["hunter2-secret"]))
    assert "hunter2-secret" not in path.read_text()


def test_stack_files_are_not_plan_files(tmp_path):
    stack = tmp_path / "s.yaml"
    stack.write_text("name: demo\nslurm: {}\n")
    assert read_plan_document(stack) is None
    assert read_plan_document(tmp_path / "missing.json") is None
    with pytest.raises(MadinfraError, match="not a saved madinfra plan"):
        load_plan_file(stack)


def test_other_major_format_versions_are_refused(tmp_path):
    path = tmp_path / "plan.json"
    save_plan(sample_plan(), path)
    data = json.loads(path.read_text())
    data["format_version"] = "2.0"
    path.write_text(json.dumps(data))
    with pytest.raises(MadinfraError, match="format version 2.0"):
        load_plan_file(path)
    del data["fingerprints"]
    data["format_version"] = "1.3"
    path.write_text(json.dumps(data))
    with pytest.raises(MadinfraError, match="incomplete"):
        load_plan_file(path)


def test_stale_stack_file_and_stale_live_state_are_refused_in_one_sentence(tmp_path):
    path = tmp_path / "plan.json"
    save_plan(sample_plan(), path)
    saved = load_plan_file(path)
    check_stack_file(saved, "sha256:stack")
    with pytest.raises(MadinfraError, match=r"stale: the stack file /abs/demo.yaml changed since it was made"):
        check_stack_file(saved, "sha256:other")
    with pytest.raises(MadinfraError, match="no longer exists"):
        check_stack_file(saved, None)
    check_live(saved, sample_plan())
    live_now = res("mem_volume", "v", size="1Gi")
    live_now.provider_id = "mem-1"
    with pytest.raises(MadinfraError) as err:
        check_live(saved, sample_plan([live_now]))
    assert "live resources of stack 'demo' changed since it was made" in str(err.value)
    assert str(err.value).count(";") == 1


def test_a_saved_plan_whose_pools_would_now_roll_otherwise_is_refused(tmp_path):
    """Free GPUs changed between plan and apply: a surge promised is no longer possible."""
    from madinfra.rollout import PoolRollout

    path = tmp_path / "plan.json"
    p = sample_plan()
    p.rollouts = [PoolRollout("decode", 3, 3, rolled=(0, 1, 2), surge=1, gpus_per_replica=4)]
    save_plan(p, path)
    saved = load_plan_file(path)
    assert saved.rollouts == (("-/+ decode[0..2] rolling, surge 1",),)
    check_live(saved, p)
    fresh = sample_plan()
    fresh.rollouts = [PoolRollout("decode", 3, 3, rolled=(0, 1, 2), unavailable=1, gpus_per_replica=4, no_surge_reason="0 GPU(s) free, no node has 4 free for a surge replica")]
    with pytest.raises(MadinfraError, match=r"free GPUs changed how the pools would roll \(now: -/\+ decode\[0\.\.2\] rolling, 1 at a time, no surge"):
        check_live(saved, fresh)
