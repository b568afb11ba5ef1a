"""``SlurmProvider.apply`` paths the sandbox cannot provoke on demand (a reset connection during
sbatch, a job that starts between plan and apply, scancel that does not take), with a scripted
stand-in for the SSH connection; plus one in-process apply on the sandbox that checks a whole
plan runs over a single connection."""

from __future__ import annotations

import pytest

from madinfra.errors import ProviderError, TransientProviderError
from madinfra.launchers import compile as compile_launch
from madinfra.planner import plan
from madinfra.resources import Change, FieldChange, ProviderOptions, Resource
from madinfra_slurm import SlurmProvider, squeue
from madinfra_slurm.connection import CommandResult
from slurm_fakes import apply_changes, failed, ok, provider_with, row_text


def worker(slurm_stack, **overrides) -> Resource:
    spec = slurm_stack(**overrides)
    (resource,) = SlurmProvider().desired(spec, compile_launch(spec))
    return resource


def test_a_reset_during_sbatch_adopts_the_job_it_did_submit(slurm_stack) -> None:
    want = worker(slurm_stack)
    calls = {"sbatch": 0}

    def handler(command: str, idempotent: bool) -> CommandResult:
        if "sbatch" in command:
            calls["sbatch"] += 1
            assert not idempotent, "sbatch must not be retried blindly"
            raise TransientProviderError("connection reset")
        if command.startswith("squeue"):
            return ok(row_text(want, "501"))
        return ok()

    provider, conn = provider_with(handler)
    assert apply_changes(provider, [Change("create", want.id, want, None)]) == [("create", "501", None)]
    assert calls["sbatch"] == 1


def test_a_reset_before_sbatch_ran_submits_again(slurm_stack) -> None:
    want = worker(slurm_stack)
    submitted: list[str] = []

    def handler(command: str, idempotent: bool) -> CommandResult:
        if "sbatch" in command:
            if not submitted:
                submitted.append("lost")
                raise TransientProviderError("connection reset")
            submitted.append("602")
            return ok("602\n")
        if command.startswith("squeue"):
            return ok(row_text(want, "602") if "602" in submitted else "")
        return ok()

    provider, _ = provider_with(handler)
    assert apply_changes(provider, [Change("create", want.id, want, None)]) == [("create", "602", None)]
    assert submitted == ["lost", "602"]


def test_create_uploads_the_script_and_a_private_secrets_file(slurm_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN_SOURCE", "tok 'en' $(x)")
    want = worker(slurm_stack, secret_env={"TOKEN": {"from_env": "MY_TOKEN_SOURCE"}})

    def handler(command: str, idempotent: bool) -> CommandResult:
        if "sbatch" in command:
            return ok("77;cluster\n")
        if command.startswith("squeue"):
            return ok(row_text(want, "77"))
        return ok()

    provider, conn = provider_with(handler)
    assert apply_changes(provider, [Change("create", want.id, want, None)]) == [("create", "77", None)]
    script, script_mode = conn.files[".madinfra/demo/worker.sbatch"]
    secrets, secrets_mode = conn.files[".madinfra/demo/worker.secrets.env"]
    assert script == want.spec["submit"]["script"] and script_mode == 0o644
    assert secrets_mode == 0o600 and "export TOKEN='tok '\"'\"'en'\"'\"' $(x)'" in secrets
    assert "tok 'en'" not in script
    assert conn.commands[0] == (
        'mkdir -p "$HOME"/.madinfra/demo/endpoints "$HOME"/.madinfra/demo/logs "$HOME"/.madinfra/demo/status'
        ' && chmod 700 "$HOME"/.madinfra/demo && rm -f "$HOME"/.madinfra/demo/status/worker.*'
    ), "the role's end markers of earlier jobs go before it is submitted again"
    assert 'cd "$HOME"/.madinfra/demo && sbatch --parsable worker.sbatch' in conn.commands


def test_an_update_refused_once_the_job_started_running(slurm_stack) -> None:
    have_spec = worker(slurm_stack)
    want = worker(slurm_stack, slurm={"partition": "other", "nodes": 1, "gpus_per_node": 1, "time": "10", "exclusive": False})
    live = squeue.to_resources(squeue.parse_squeue(row_text(have_spec, "88", state="PENDING")), "demo")[0]
    change = Change("update", want.id, want, live, fields=[FieldChange("partition", "debug", "other")])

    provider, conn = provider_with(lambda command, _: ok(row_text(have_spec, "88", state="RUNNING")) if command.startswith("squeue") else ok())
    ((action, _, error),) = apply_changes(provider, [change])
    assert isinstance(error, ProviderError)
    assert "partition cannot change in place because job 88 started running after the plan was made; run plan again" in str(error)
    assert not any(c.startswith("scontrol update") for c in conn.commands)


def test_a_pending_field_scontrol_cannot_reset_resubmits_the_pending_job(slurm_stack) -> None:
    have_spec = worker(slurm_stack, slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "10", "exclusive": False, "qos": "high"})
    want = worker(slurm_stack)
    live = squeue.to_resources(squeue.parse_squeue(row_text(have_spec, "90", state="PENDING")), "demo")[0]
    state = {"cancelled": False}

    def handler(command: str, idempotent: bool) -> CommandResult:
        if command.startswith("scancel"):
            state["cancelled"] = True
            return ok()
        if "sbatch" in command:
            return ok("91\n")
        if command.startswith("squeue"):
            if "--jobs=90" in command:
                return ok("" if state["cancelled"] else row_text(have_spec, "90", state="PENDING"))
            return ok(row_text(want, "91"))
        return ok()

    provider, conn = provider_with(handler)
    change = Change("update", want.id, want, live, fields=[FieldChange("qos", "high", None)])
    assert apply_changes(provider, [change]) == [("update", "91", None)]
    assert "scancel 90" in conn.commands


def test_a_job_that_survives_scancel_is_reported(slurm_stack) -> None:
    have_spec = worker(slurm_stack)
    live = squeue.to_resources(squeue.parse_squeue(row_text(have_spec, "95")), "demo")[0]
    provider, _ = provider_with(lambda command, _: ok(row_text(have_spec, "95")) if command.startswith("squeue") else ok(), cancel_timeout=5)
    ((_, _, error),) = apply_changes(provider, [Change("delete", live.id, None, live)])
    assert isinstance(error, ProviderError) and "job 95 is still RUNNING 5 s after scancel" in str(error)


def test_a_failed_squeue_is_a_clear_error() -> None:
    provider, _ = provider_with(lambda command, _: failed("squeue: error: Invalid user: nobody"))
    with pytest.raises(ProviderError, match=r"Reading the jobs of stack 'demo': squeue failed \(squeue: error: Invalid user: nobody\)"):
        provider.read("demo")


@pytest.mark.slurm
def test_a_whole_apply_uses_one_ssh_connection(sandbox, new_sandbox_stack, slurm_stack) -> None:
    stack = new_sandbox_stack()
    spec = slurm_stack(
        name=stack.name,
        slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": "5", "exclusive": False, "ready_timeout": 60},
        roles={"worker": {"command": "sleep 600"}},
    )
    provider = SlurmProvider(ProviderOptions(ssh_target=str(sandbox.target_file)))
    try:
        desired = provider.desired(spec, compile_launch(spec))
        result = plan(desired, provider.read(spec.name), None, provider.update_rules, stack=spec.name)
        outcomes = apply_changes(provider, result.changes)
        live = provider.read(spec.name)
        assert [(a, e) for a, _, e in outcomes] == [("create", None)]
        assert [r.provider_id for r in live] == [outcomes[0][1]] and live[0].status["running"]
        assert plan(desired, live, None, provider.update_rules).changes == []
        assert provider.connection.opened == 1
    finally:
        provider.close()


def disagg_resources(slurm_stack) -> dict[str, Resource]:
    spec = slurm_stack(
        slurm={"partition": "debug", "nodes": 3, "gpus_per_node": 1, "time": "10", "exclusive": True},
        distributed={"launcher": "sglang-disagg", "nnodes": 3, "nproc_per_node": 1},
        env_vars={"MODEL_PATH": "/m"},
        service={"health_check": {"http_path": None}},
    )
    return {r.id: r for r in SlurmProvider().desired(spec, compile_launch(spec))}


def test_files_are_written_in_place_and_removed_where_the_live_read_found_them(slurm_stack) -> None:
    topology = disagg_resources(slurm_stack)["slurm/File/topology.env"]
    provider, conn = provider_with(lambda command, _: ok())
    assert apply_changes(provider, [Change("update", topology.id, topology, topology)]) == [("update", None, None)]
    text, mode = conn.files[".madinfra/demo/topology.env"]
    assert text == topology.spec["submit"]["text"] and "export SGLANG_DISAGG_DECODE_NODES=1" in text
    assert conn.commands[0].startswith('mkdir -p "$HOME"/.madinfra/demo/endpoints'), "the directory exists before the first file"

    live_files = [
        Resource("slurm/File", "topology.env", {"variables": {}}, status={"path": "/home/u/.madinfra/demo/topology.env"}),
        Resource("slurm/File", "endpoints/decode", {"nodes": 1}, status={"path": "/home/u/.madinfra/demo/endpoints/decode"}),
    ]
    conn.commands.clear()
    outcomes = apply_changes(provider, [Change("delete", f.id, None, f) for f in live_files])
    assert [error for _, _, error in outcomes] == [None, None]
    assert sorted(conn.commands) == [
        "rm -f /home/u/.madinfra/demo/endpoints/decode /home/u/.madinfra/demo/endpoints/decode.source",
        "rm -f /home/u/.madinfra/demo/topology.env",
    ]


def test_a_stack_elsewhere_than_the_default_directory_leaves_a_pointer_there(slurm_stack) -> None:
    want = worker(slurm_stack, slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "10", "exclusive": False, "remote_dir": "/scratch/me"})
    provider, conn = provider_with(lambda command, _: ok("7\n") if "sbatch" in command else ok(row_text(want, "7")) if command.startswith("squeue") else ok())
    assert apply_changes(provider, [Change("create", want.id, want, None)]) == [("create", "7", None)]
    assert '(cd /scratch/me/demo && pwd) > "$HOME"/.madinfra/demo/.remote_dir' in conn.commands[0]
