"""Finished training jobs: end markers parsed, read back as live COMPLETED/FAILED jobs, planned as
no change, and resubmitted (never ``scontrol update``d) when the stack changes."""

from __future__ import annotations

import pytest

from madinfra.launchers import compile as compile_launch
from madinfra.planner import plan
from madinfra.resources import Change, Resource
from madinfra_slurm import SlurmProvider, markers, readout
from slurm_fakes import apply_changes, ok, provider_with, row_text


def worker(slurm_stack, time_limit: str = "10") -> Resource:
    spec = slurm_stack(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": time_limit, "exclusive": False})
    (resource,) = SlurmProvider().desired(spec, compile_launch(spec))
    return resource


def marker_text(resource: Resource, job_id: str, code: int | str = 0) -> str:
    return f"exit={code}\nend=2026-03-01T10:00:00Z\nrow={row_text(resource, job_id)}"


def read_output(squeue_rows: str = "", files: dict[str, str] | None = None) -> str:
    """What the remote read command prints (see test_slurm_readout for the real command)."""
    out = squeue_rows + f"{readout.MARK} squeue-exit 0\n{readout.MARK} dir /home/u/.madinfra/demo\n"
    for path, text in (files or {}).items():
        out += f"{readout.MARK} file {path}\n{text}\n"
    return out


def reading(output: str):
    return provider_with(lambda command, _: ok(output) if command.startswith("squeue") else ok())


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("worker.12", "exit=0\nend=T\nrow=12|x", ("worker", "12", 0, "T", "12|x", "COMPLETED")),
        ("decode.7", "exit=137\nrow=", ("decode", "7", 137, None, "", "FAILED (exit code 137)")),
        ("worker.3", "garbage", ("worker", "3", None, None, "", "FAILED (exit code unknown)")),
    ],
)
def test_markers_parse(name: str, text: str, expected: tuple) -> None:
    marker = markers.parse_marker(name, text)
    assert marker is not None
    assert (marker.role, marker.job_id, marker.exit_code, marker.ended_at, marker.row, marker.state) == expected


@pytest.mark.parametrize("name", ["worker.12.tmp", "worker", "../x.1", "worker.abc"])
def test_other_files_are_not_markers(name: str) -> None:
    assert markers.parse_marker(name, "exit=0") is None


@pytest.mark.parametrize(("code", "state"), [(0, "COMPLETED"), (3, "FAILED (exit code 3)")])
def test_a_finished_job_is_live_with_its_end_and_plans_no_change(slurm_stack, code: int, state: str) -> None:
    want = worker(slurm_stack)
    provider, conn = reading(read_output(files={"status/worker.12": marker_text(want, "12", code)}))
    (live,) = provider.read("demo")
    assert (live.id, live.provider_id, live.gpus) == ("slurm/Job/worker", "12", 0)
    assert live.status == {
        "state": state, "running": False, "finished": True, "exit_code": code, "ended_at": "2026-03-01T10:00:00Z",
        "nodes": ["node1"], "job_id": "12", "workdir": "/home/u/.madinfra/demo",
    }
    result = plan([want], [live], None, provider.update_rules)
    assert result.changes == [] and (result.gpus_before, result.gpus_after) == (0, 0)
    assert len(conn.commands) == 1, "squeue and the markers come in one round trip"


def test_a_change_to_a_finished_job_resubmits_it_and_the_plan_says_so(slurm_stack) -> None:
    old, want = worker(slurm_stack), worker(slurm_stack, time_limit="20")
    provider, _ = reading(read_output(files={"status/worker.12": marker_text(old, "12")}))
    live = provider.read("demo")
    result = plan([want], live, None, provider.update_rules, restarts_on_update=provider.restarts_on_update)
    (change,) = result.changes
    assert change.action == "update" and [f.path for f in change.fields] == ["time"]
    assert [(r.resource_id, r.action) for r in result.restarts] == [("slurm/Job/worker", "update")]
    assert provider.plan_warnings(result.changes) == ["worker: job 12 has finished: COMPLETED; applying this change submits it again"]

    submitted: list[str] = []

    def handler(command: str, idempotent: bool):
        if "sbatch" in command:
            submitted.append(command)
            return ok("13\n")
        if command.startswith("squeue"):
            return ok(row_text(want, "13"))
        return ok()

    provider, conn = provider_with(handler)
    assert apply_changes(provider, [change]) == [("update", "13", None)]
    assert len(submitted) == 1 and not any(c.startswith(("scontrol update", "scancel")) for c in conn.commands)
    assert conn.commands[0].endswith('rm -f "$HOME"/.madinfra/demo/status/worker.*'), "the old marker goes before the resubmission"


def test_destroying_a_finished_job_removes_its_marker_without_scancel(slurm_stack) -> None:
    want = worker(slurm_stack)
    provider, _ = reading(read_output(files={"status/worker.12": marker_text(want, "12", 1)}))
    (live,) = provider.read("demo")
    provider, conn = provider_with(lambda command, _: ok())
    assert apply_changes(provider, [Change("delete", live.id, None, live)]) == [("delete", None, None)]
    assert conn.commands == ["rm -f /home/u/.madinfra/demo/worker.secrets.env /home/u/.madinfra/demo/status/worker.*"]


def test_the_newest_job_of_a_role_wins_whether_active_or_finished(slurm_stack) -> None:
    want = worker(slurm_stack)
    newer_active = read_output(row_text(want, "20"), {"status/worker.12": marker_text(want, "12")})
    provider, _ = reading(newer_active)
    assert [(r.name, r.provider_id, r.status["state"]) for r in provider.read("demo")] == [("worker", "20", "RUNNING")]
    newer_marker = read_output(row_text(want, "9"), {"status/worker.12": marker_text(want, "12")})
    provider, _ = reading(newer_marker)
    assert [(r.name, r.provider_id, r.status["state"]) for r in provider.read("demo")] == [("worker#9", "9", "RUNNING"), ("worker", "12", "COMPLETED")]


def test_markers_without_a_matching_row_are_ignored(slurm_stack) -> None:
    want = worker(slurm_stack)
    files = {
        "status/worker.12": "exit=0\nend=T\nrow=\n",
        "status/decode.13": marker_text(want, "13"),
        "status/worker.14": marker_text(want, "15"),
        "status/worker.16.tmp": marker_text(want, "16"),
    }
    provider, _ = reading(read_output(files=files))
    assert provider.read("demo") == []
