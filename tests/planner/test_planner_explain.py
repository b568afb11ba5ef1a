"""A digest-compared script: the plan shows which of its lines changed, env lines as env changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from madinfra.planner import plan
from madinfra.planner.explain import MAX_DETAIL_LINES, UNKNOWN_BEFORE, text_differences
from madinfra.render.human import plan_text
from madinfra.render.json_plan import plan_to_data
from madinfra.resources import Resource, UpdateRules

RULES = UpdateRules(force_replace=("script_sha256",), server_owned=("submit",), explained_by=(("script_sha256", "submit.script"),))

SCRIPT = """#!/bin/bash
#SBATCH --comment=madinfra:stack=s;script={sha}
export NCCL_DEBUG=WARN
export FOO=1
srun bash -c 'export RANK="${{SLURM_PROCID}}"
python train.py --lr 0.1
'
"""


@dataclass
class Applied:
    spec: dict[str, Any]
    tainted: bool = False
    finished: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def job(sha: str, script: str) -> Resource:
    return Resource("slurm/Job", "worker", {"script_sha256": sha, "submit": {"script": script}}, workload=True)


def test_env_changes_are_named_and_other_lines_shown():
    before = SCRIPT.format(sha="aaa")
    after = SCRIPT.format(sha="bbb").replace("NCCL_DEBUG=WARN", "NCCL_DEBUG=INFO").replace("export FOO=1\n", "").replace("--lr 0.1", "--lr 0.2")
    after = after.replace("export NCCL_DEBUG=INFO\n", "export NCCL_DEBUG=INFO\nexport BAR='a b'\n")
    lines = text_differences(before, after, ("aaa", "bbb"))
    assert lines == [
        "env BAR = 'a b'",
        "env FOO removed (was 1)",
        "env NCCL_DEBUG: WARN -> INFO",
        "- python train.py --lr 0.1",
        "+ python train.py --lr 0.2",
    ]


def test_an_export_inside_the_srun_block_is_an_env_change():
    before = SCRIPT.format(sha="a")
    after = before.replace('RANK="${SLURM_PROCID}"', 'RANK="${SLURM_NODEID}"')
    assert text_differences(before, after) == ['env RANK: "${SLURM_PROCID}" -> "${SLURM_NODEID}"']


def test_a_line_that_only_moved_is_not_a_difference():
    before = "export A=1\nexport B=2\n"
    after = "export B=2\nexport A=1\n"
    assert text_differences(before, after) == []


def test_long_differences_are_cut_with_a_pointer_to_render():
    before = "\n".join(f"export V{i}=0" for i in range(40))
    after = "\n".join(f"export V{i}=1" for i in range(40))
    lines = text_differences(before, after)
    assert len(lines) == MAX_DETAIL_LINES + 1
    assert lines[-1].startswith("... and 20 more differing line(s)") and "madinfra render" in lines[-1]


def test_plan_shows_the_env_change_behind_script_sha256():
    old, new = SCRIPT.format(sha="sha256:aaa"), SCRIPT.format(sha="sha256:bbb").replace("FOO=1", "FOO=2")
    live = job("sha256:aaa", "")
    result = plan([job("sha256:bbb", new)], [live], {"slurm/Job/worker": Applied(spec=job("sha256:aaa", old).spec)}, lambda kind: RULES, stack="s")
    (change,) = result.changes
    (fc,) = change.fields
    assert change.action == "replace" and fc.details == ("env FOO: 1 -> 2",)
    text = plan_text(result)
    assert '~ script_sha256: "sha256:aaa" -> "sha256:bbb"  # forces replacement\n          env FOO: 1 -> 2' in text
    assert plan_to_data(result)["changes"][0]["fields"][0]["details"] == ["env FOO: 1 -> 2"]


def test_plan_says_it_cannot_tell_when_the_live_job_does_not_run_the_recorded_text():
    old, new = SCRIPT.format(sha="sha256:aaa"), SCRIPT.format(sha="sha256:ccc")
    live = job("sha256:bbb", "")  # resubmitted outside madinfra with another script
    result = plan([job("sha256:ccc", new)], [live], {"slurm/Job/worker": Applied(spec=job("sha256:aaa", old).spec)}, lambda kind: RULES)
    assert result.changes[0].fields[0].details == (UNKNOWN_BEFORE,)
    no_state = plan([job("sha256:ccc", new)], [live], {}, lambda kind: RULES)
    assert no_state.changes[0].fields[0].details == (UNKNOWN_BEFORE,)


def test_fields_without_a_text_have_no_details():
    rules = UpdateRules(force_replace=("script_sha256",))
    result = plan([job("b", "x")], [job("a", "y")], {}, lambda kind: rules)
    assert all(f.details == () for f in result.changes[0].fields)

