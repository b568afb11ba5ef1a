"""Unit tests for plans that hold for a user who is not a Slurm operator (no cluster needed):
apply tells a crashed training job from a finished one by its end marker, plan refuses a job
that can never fit its partition (sinfo), and destroy removes only the stack's directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from madinfra.errors import ProviderError
from madinfra.launchers import compile as compile_launch
from madinfra.resources import Change, Resource
from madinfra_slurm import SlurmProvider, markers, readout, squeue
from madinfra_slurm.connection import CommandResult
from madinfra_slurm.provider import JobFailed
from slurm_fakes import apply_changes, failed, ok, provider_with, row_text

SINFO = "debug* node1 gpu:4\ndebug* node2 gpu:4\ndebug* node3 gpu:4(S:0-1)\nbig node4 gpu:a100:2,gpu:v100:2\nbig node5 (null)\n"


def worker(slurm_stack, **overrides) -> Resource:
    spec = slurm_stack(**overrides)
    (resource,) = SlurmProvider().desired(spec, compile_launch(spec))
    return resource


def marker_text(want: Resource, code: int) -> str:
    """A marker as the trap writes it: exit, end, and the script's #SBATCH directives."""
    directives = [line[len("#SBATCH "):] for line in want.spec["submit"]["script"].splitlines() if line.startswith("#SBATCH ")]
    return f"exit={code}\nend=2030-01-01T00:00:00Z\nnodes=node1\nworkdir=/home/u/.madinfra/demo\n" + "".join(f"sbatch={d}\n" for d in directives)


def ended_job_handler(want: Resource, job_id: str, code: int | None, state: str = "COMPLETED"):
    """sbatch queues ``job_id``; squeue -t all shows it ended; its marker says ``code``."""

    def handler(command: str, idempotent: bool) -> CommandResult:
        if "sbatch" in command:
            return ok(f"{job_id}\n")
        if command.startswith("squeue"):
            assert "-t all" in command, "apply must see jobs that already ended"
            return ok(row_text(want, job_id, state))
        if command.startswith("cat ") and f"status/worker.{job_id}" in command:
            return ok(marker_text(want, code)) if code is not None else failed("cat: No such file or directory")
        return ok()

    return handler


def test_a_training_job_that_already_failed_fails_apply_with_its_exit_code_and_is_recorded(slurm_stack) -> None:
    want = worker(slurm_stack)
    provider, _ = provider_with(ended_job_handler(want, "812", 3, "FAILED"))
    ((action, job_id, error),) = apply_changes(provider, [Change("create", want.id, want, None)])
    assert isinstance(error, JobFailed) and job_id == "812", "the job is recorded although apply failed"
    assert str(error) == "slurm/Job/worker: job 812 failed with exit code 3; see ~/.madinfra/demo/logs/madinfra.demo.worker_812.err on the cluster"
    assert error.live_after.status["state"] == "FAILED (exit code 3)"
    assert error.live_after.spec == {k: v for k, v in want.spec.items() if k != "submit"}


def test_a_training_job_that_already_completed_is_a_success(slurm_stack) -> None:
    want = worker(slurm_stack)
    provider, _ = provider_with(ended_job_handler(want, "813", 0))
    assert apply_changes(provider, [Change("create", want.id, want, None)]) == [("create", "813", None)]


def test_a_training_job_that_ended_without_a_marker_fails_apply(slurm_stack) -> None:
    want = worker(slurm_stack)
    provider, _ = provider_with(ended_job_handler(want, "814", None, "CANCELLED"))
    ((_, _, error),) = apply_changes(provider, [Change("create", want.id, want, None)])
    assert isinstance(error, ProviderError) and not isinstance(error, JobFailed)
    assert "job 814 ended (CANCELLED) without recording an exit status" in str(error)


def test_a_training_job_that_crashes_in_its_first_seconds_fails_apply(slurm_stack) -> None:
    """RUNNING at the first look is not enough: apply watches it settle first."""
    want = worker(slurm_stack)
    looks = iter(["RUNNING", "RUNNING", "FAILED"])

    def handler(command: str, idempotent: bool) -> CommandResult:
        if "sbatch" in command:
            return ok("815\n")
        if command.startswith("squeue"):
            return ok(row_text(want, "815", next(looks)))
        if command.startswith("cat "):
            return ok(marker_text(want, 2))
        return ok()

    provider, _ = provider_with(handler, settle_time=10)
    ((_, _, error),) = apply_changes(provider, [Change("create", want.id, want, None)])
    assert isinstance(error, JobFailed) and "job 815 failed with exit code 2" in str(error)


def test_a_training_job_still_running_after_settling_is_a_success(slurm_stack) -> None:
    want = worker(slurm_stack)

    def handler(command: str, idempotent: bool) -> CommandResult:
        if "sbatch" in command:
            return ok("816\n")
        if command.startswith("squeue"):
            return ok(row_text(want, "816", "RUNNING"))
        return ok()

    provider, _ = provider_with(handler, settle_time=3)
    assert apply_changes(provider, [Change("create", want.id, want, None)]) == [("create", "816", None)]


# -- markers -------------------------------------------------------------------------------------


def test_a_marker_without_a_row_reads_back_as_the_job_it_was(slurm_stack) -> None:
    want = worker(slurm_stack)
    marker = markers.parse_marker("worker.900", marker_text(want, 0))
    assert marker is not None and marker.row == "" and marker.nodes == "node1"
    (live,) = squeue.to_resources([], "demo", [marker])
    assert live.spec == {k: v for k, v in want.spec.items() if k != "submit"}
    assert live.status["state"] == "COMPLETED" and live.status["workdir"] == "/home/u/.madinfra/demo"


def test_a_marker_of_another_stack_or_without_directives_is_not_a_job(slurm_stack) -> None:
    want = worker(slurm_stack)
    bare = markers.parse_marker("worker.901", "exit=0\nend=2030-01-01T00:00:00Z\n")
    other = markers.parse_marker("worker.902", marker_text(want, 0))
    assert bare is not None and squeue.to_resources([], "demo", [bare]) == []
    assert other is not None and squeue.to_resources([], "other", [other]) == []


def test_directive_options_keep_the_first_value_and_bare_flags() -> None:
    assert markers.directive_options(["--time=00:05:00", "--exclusive", "--time=1", "not-an-option"]) == {"time": "00:05:00", "exclusive": ""}


# -- sinfo ---------------------------------------------------------------------------------------


def test_sinfo_lists_partitions_with_each_nodes_gpus() -> None:
    partitions = squeue.parse_sinfo(SINFO + "garbage line here too\n\n")
    assert set(partitions) == {"debug", "big"}
    assert partitions["debug"].default and not partitions["big"].default
    assert partitions["debug"].node_gpus == {"node1": 4, "node2": 4, "node3": 4}
    assert partitions["big"].node_gpus == {"node4": 4, "node5": 0}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"partition": "debug", "nodes": 3, "gpus_per_node": 4}, None),
        ({"partition": None, "nodes": 3, "gpus_per_node": 0}, None),
        ({"partition": "nope", "nodes": 10000, "gpus_per_node": 0}, None),
        ({"partition": "debug", "nodes": 10000, "gpus_per_node": 1}, "it asks for 10000 node(s) with 1 GPU(s) each and the partition has 3 node(s);"),
        ({"partition": None, "nodes": 4, "gpus_per_node": 0}, "partition 'debug': it asks for 4 node(s) and the partition has 3 node(s);"),
        ({"partition": "debug", "nodes": 1, "gpus_per_node": 8}, "the partition has 3 node(s), 0 of them with 8 or more GPUs (the most any node has is 4);"),
        ({"partition": "big", "nodes": 2, "gpus_per_node": 1}, "partition 'big': it asks for 2 node(s) with 1 GPU(s) each and the partition has 2 node(s), 1 of them with 1 or more GPUs"),
    ],
)
def test_a_job_that_can_never_fit_is_named_with_the_partition_and_both_sizes(spec: dict, problem: str | None) -> None:
    found = squeue.fit_problem("slurm/Job/worker", spec, squeue.parse_sinfo(SINFO))
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith("slurm/Job/worker can never start in partition") and problem in found


def test_gpus_are_not_judged_where_no_node_reports_any() -> None:
    partitions = squeue.parse_sinfo("cpu* n1 (null)\ncpu* n2 (null)\n")
    assert squeue.fit_problem("r", {"partition": "cpu", "nodes": 2, "gpus_per_node": 8}, partitions) is None
    assert squeue.fit_problem("r", {"partition": "cpu", "nodes": 3, "gpus_per_node": 8}, partitions) is not None


def test_sinfo_comes_in_the_same_round_trip_as_squeue_and_its_failure_only_disables_the_check() -> None:
    command = readout.read_command("demo")
    assert command.index("squeue ") < command.index(squeue.SINFO_COMMAND)
    text = "1\x1frow\n@@madinfra squeue-exit 0\n@@madinfra sinfo\n" + SINFO + "@@madinfra sinfo-exit 0\n@@madinfra dir /h/d\n@@madinfra file topology.env\nA=1\n"
    live = readout.parse_read(text)
    assert live.squeue_text == "1\x1frow\n" and live.sinfo_text == SINFO and live.files == [("topology.env", "A=1\n")]
    assert readout.parse_read(text.replace("sinfo-exit 0", "sinfo-exit 1")).sinfo_text is None
    assert readout.parse_read("1\x1frow\n").sinfo_text is None


def test_plan_fails_for_a_job_that_can_never_fit(slurm_stack) -> None:
    want = worker(slurm_stack, slurm={"partition": "debug", "nodes": 5, "gpus_per_node": 1, "time": "10", "exclusive": False}, distributed={"launcher": "torchrun", "nnodes": 5, "nproc_per_node": 1})
    output = "@@madinfra squeue-exit 0\n@@madinfra sinfo\n" + SINFO + "@@madinfra sinfo-exit 0\n"
    provider, _ = provider_with(lambda command, idempotent: ok(output))
    assert provider.read("demo") == []
    with pytest.raises(ProviderError, match=r"^slurm/Job/worker can never start in partition 'debug': it asks for 5 node\(s\)"):
        provider.plan_warnings([Change("create", want.id, want, None)])
    assert provider.plan_warnings([Change("delete", want.id, None, want)]) == []


# -- destroy -------------------------------------------------------------------------------------


def run_remove(home: Path, stack: str, remote_dir: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", readout.remove_command(stack, remote_dir)], env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)


def test_the_stack_directory_is_removed_and_nothing_else(tmp_path: Path) -> None:
    base = tmp_path / ".madinfra"
    for name in ("demo/logs", "demo/status", "demo-2", "other"):
        (base / name).mkdir(parents=True)
    assert run_remove(tmp_path, "demo").returncode == 0
    assert sorted(p.name for p in base.iterdir()) == ["demo-2", "other"]


def test_a_pointer_that_does_not_end_in_the_stack_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".madinfra" / "demo").mkdir(parents=True)
    (tmp_path / "precious").mkdir()
    for target in (str(tmp_path / "precious"), str(tmp_path / "x" / ".." / "demo"), "demo"):
        (tmp_path / ".madinfra" / "demo" / ".remote_dir").write_text(target + "\n")
        proc = run_remove(tmp_path, "demo")
        assert proc.returncode == 1 and "so it was left in place" in proc.stderr
    assert (tmp_path / "precious").is_dir() and (tmp_path / ".madinfra" / "demo").is_dir()


def test_an_invalid_stack_name_never_reaches_a_command() -> None:
    for name in ("../etc", "a b", "", "x;rm"):
        with pytest.raises(ValueError):
            readout.remove_command(name)


def test_destroy_removes_the_directory_only_when_nothing_of_the_stack_is_left(slurm_stack) -> None:
    want = worker(slurm_stack)
    live = squeue.row_resource(squeue.parse_squeue(row_text(want, "70"))[0], "worker", "worker")
    commands: list[str] = []
    others = {"live": ""}

    def handler(command: str, idempotent: bool) -> CommandResult:
        commands.append(command)
        if command.startswith("squeue") and "--jobs" not in command:
            return ok(others["live"] + "@@madinfra squeue-exit 0\n")
        return ok()

    provider, _ = provider_with(handler)
    provider.read("demo")
    assert apply_changes(provider, [Change("delete", want.id, None, live)]) == [("delete", None, None)]
    assert commands[-1] == readout.remove_command("demo"), "destroy removes the stack directory last"

    commands.clear()
    others["live"] = row_text(want, "71")
    provider.read("demo")
    topology = Resource("slurm/File", "topology.env", {}, status={"path": "/h/.madinfra/demo/topology.env"})
    apply_changes(provider, [Change("delete", topology.id, None, topology)])
    assert not any("rm -rf" in c for c in commands), "a job of the stack is still live: its directory stays"
