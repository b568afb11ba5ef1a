"""``SlurmProvider.desired`` and ``render_files``: one job per role pool, what apply will need in
``spec["submit"]``, uploaded files and secrets by digest only. No cluster involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from madinfra.errors import ConfigError, MadinfraError, ProviderError
from madinfra.launchers import compile as compile_launch
from madinfra.provider_registry import provider_for
from madinfra.resources import ProviderOptions
from madinfra.secrets import secret_digest
from madinfra.planner import normalise, order_changes
from madinfra.resources import Change
from madinfra_slurm import SlurmProvider, files, rules, scripts, stackfiles


def desired(spec, stack_dir: Path = Path(".")):
    return SlurmProvider(ProviderOptions(stack_dir=stack_dir)).desired(spec, compile_launch(spec))


def test_the_entry_point_finds_the_provider_without_connecting() -> None:
    provider = provider_for("slurm", ProviderOptions(ssh_target="/nonexistent/target.json"))
    assert isinstance(provider, SlurmProvider)
    provider.close()


def test_training_is_one_worker_job(slurm_stack) -> None:
    (worker,) = desired(slurm_stack(slurm={"partition": "debug", "nodes": 2, "gpus_per_node": 4, "time": "1:00:00"}, distributed={"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 4}))
    assert worker.id == "slurm/Job/worker" and worker.role == "worker" and worker.workload
    assert worker.gpus == 8 and worker.depends_on == ()
    assert worker.spec["name"] == "madinfra.demo.worker"
    submit = worker.spec["submit"]
    assert submit["ready"] == {"service": False, "timeout": 300, "command": None, "http_path": None, "port": None, "all_nodes": False}
    assert submit["remote_dir"] == "~/.madinfra/demo" and submit["script_file"] == "worker.sbatch"


def disagg(slurm_stack, nnodes: int = 5, prefill: int = 2, decode: int = 2, **overrides):
    values = dict(
        slurm={"partition": "debug", "nodes": nnodes, "gpus_per_node": 2, "time": "60", "ready_timeout": 90},
        distributed={"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": 2, "sglang_disagg": {"prefill_nodes": prefill, "decode_nodes": decode}},
        env_vars={"MODEL_PATH": "/m"},
        service={"port": 8080, "health_check": {"http_path": "/health"}},
    )
    values.update(overrides)
    return slurm_stack(**values)


def by_id(resources) -> dict:
    return {r.id: r for r in resources}


def test_disaggregated_sglang_is_three_jobs_a_topology_and_two_endpoint_files(slurm_stack) -> None:
    resources = desired(disagg(slurm_stack))
    assert [r.id for r in resources] == [
        "slurm/File/topology.env",
        "slurm/Job/prefill",
        "slurm/File/endpoints/prefill",
        "slurm/Job/decode",
        "slurm/File/endpoints/decode",
        "slurm/Job/proxy",
    ]
    topology, prefill, prefill_ep, decode, decode_ep, proxy = resources
    assert (proxy.spec["nodes"], prefill.spec["nodes"], decode.spec["nodes"]) == (1, 2, 2)
    assert (proxy.gpus, prefill.gpus, decode.gpus, topology.gpus, decode_ep.gpus) == (0, 4, 4, 0, 0)
    assert not topology.workload and not decode_ep.workload
    assert proxy.spec["submit"]["ready"] == {"service": True, "timeout": 90, "command": None, "http_path": "/health", "port": 8080, "all_nodes": False}
    assert decode.spec["submit"]["ready"]["all_nodes"] is True
    assert "#SBATCH --gres" not in proxy.spec["submit"]["script"]
    assert decode_ep.spec["port"] == 30000 and decode_ep.spec["nodes"] == 2
    assert decode_ep.spec["pool_job"] == stackfiles.pool_job_digest(decode.spec)
    assert decode_ep.spec["submit"]["job_name"] == "madinfra.demo.decode"


def test_pools_roll_one_at_a_time_prefill_then_decode_then_the_proxy(slurm_stack) -> None:
    resources = by_id(desired(disagg(slurm_stack)))
    deps = {rid: set(r.depends_on) for rid, r in resources.items()}
    assert deps["slurm/File/topology.env"] == set()
    assert deps["slurm/Job/prefill"] == {"slurm/File/topology.env"}
    assert deps["slurm/File/endpoints/prefill"] == {"slurm/Job/prefill"}
    assert deps["slurm/Job/decode"] == {"slurm/Job/prefill", "slurm/File/endpoints/prefill", "slurm/File/topology.env"}
    assert deps["slurm/File/endpoints/decode"] == {"slurm/Job/decode"}
    assert deps["slurm/Job/proxy"] == set(resources) - {"slurm/Job/proxy"}
    # Whatever order the changes come in, apply replaces them in this order (server flags change).
    replaces = [Change("replace", rid, r, r) for rid, r in reversed(resources.items()) if r.kind == "slurm/Job"]
    assert [c.resource_id for c in order_changes(replaces)] == ["slurm/Job/prefill", "slurm/Job/decode", "slurm/Job/proxy"]


def test_the_topology_is_a_file_every_task_sources_not_part_of_any_script(slurm_stack) -> None:
    spec = disagg(slurm_stack)
    launch = compile_launch(spec)
    resources = by_id(desired(spec))
    topology = resources["slurm/File/topology.env"]
    assert topology.spec["variables"] == launch.topology_env and topology.spec["variables"]["SGLANG_DISAGG_DECODE_NODES"] == "2"
    assert scripts.parse_topology(topology.spec["submit"]["text"]) == launch.topology_env
    for role in ("proxy", "prefill", "decode"):
        script = resources[f"slurm/Job/{role}"].spec["submit"]["script"]
        assert "SGLANG_DISAGG_DECODE_NODES" not in script and "MADINFRA_FIRST_RANK_DECODE=" not in script
        assert "bash -c '. \"$MADINFRA_WORKDIR\"/topology.env || {" in script, "the topology comes first in every task"
    assert set(SlurmProvider().render_files(list(resources.values()))) == {"proxy.sbatch", "prefill.sbatch", "decode.sbatch"}


def job_specs(resources) -> dict:
    return {r.name: normalise(r.spec, rules.JOB_RULES) for r in resources if r.kind == "slurm/Job"}


@pytest.mark.parametrize(
    ("before", "after", "resized"),
    [((5, 1, 3), (4, 1, 2), "decode"), ((4, 1, 2), (5, 2, 2), "prefill"), ((5, 2, 2), (4, 2, 1), "decode"), ((6, 2, 3), (7, 3, 3), "prefill")],
)
def test_resizing_one_pool_changes_only_that_pool_its_endpoints_and_the_topology(slurm_stack, before, after, resized) -> None:
    old = by_id(desired(disagg(slurm_stack, *before)))
    new = by_id(desired(disagg(slurm_stack, *after)))
    old_jobs, new_jobs = job_specs(old.values()), job_specs(new.values())
    for role in ("proxy", "prefill", "decode"):
        if role == resized:
            assert new_jobs[role]["nodes"] != old_jobs[role]["nodes"]
            if min(new_jobs[role]["nodes"], old_jobs[role]["nodes"]) > 1:
                # (a one-node pool uses MASTER_ADDR=localhost, so 1 <-> N changes its script too)
                assert new_jobs[role]["script_sha256"] == old_jobs[role]["script_sha256"], "a pool's own size is not in its script"
        else:
            assert new_jobs[role] == old_jobs[role], f"{role} must not change when {resized} is resized"
    other = "prefill" if resized == "decode" else "decode"
    assert new[f"slurm/File/endpoints/{other}"].spec == old[f"slurm/File/endpoints/{other}"].spec
    assert new[f"slurm/File/endpoints/{resized}"].spec["nodes"] == after[1 if resized == "prefill" else 2]
    assert new["slurm/File/topology.env"].spec["variables"] != old["slurm/File/topology.env"].spec["variables"]


def test_a_stack_without_topology_has_no_file_resources(slurm_stack) -> None:
    (worker,) = desired(slurm_stack())
    assert worker.depends_on == () and ". \"$MADINFRA_WORKDIR\"/topology.env" not in worker.spec["submit"]["script"]


def test_render_files_are_the_sbatch_scripts(slurm_stack) -> None:
    resources = desired(slurm_stack())
    assert SlurmProvider().render_files(resources) == {"worker.sbatch": resources[0].spec["submit"]["script"]}


def test_secrets_are_digests_in_the_script_and_sources_by_name_in_submit(slurm_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN_SOURCE", "hf_live_value_123")
    spec = slurm_stack(secret_env={"HF_TOKEN": {"from_env": "HF_TOKEN_SOURCE"}, "INLINE": {"value": "inline-secret-456"}})
    (worker,) = desired(spec)
    text = repr(worker.spec)
    assert "hf_live_value_123" not in text and "inline-secret-456" not in text
    assert secret_digest("HF_TOKEN", "hf_live_value_123") in worker.spec["submit"]["script"]
    assert worker.spec["submit"]["secret_env"] == {"HF_TOKEN": {"from_env": "HF_TOKEN_SOURCE"}, "INLINE": {"inline": True}}
    monkeypatch.setenv("HF_TOKEN_SOURCE", "rotated")
    (rotated,) = desired(spec)
    assert rotated.spec["script_sha256"] != worker.spec["script_sha256"], "a rotated secret must show up in the plan"


def test_an_unset_secret_source_is_a_clear_error(slurm_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(MadinfraError, match="NOT_SET_ANYWHERE, which is not set"):
        desired(slurm_stack(secret_env={"T": {"from_env": "NOT_SET_ANYWHERE"}}))


def test_a_k8s_stack_is_refused(slurm_stack) -> None:
    from madinfra.config import resolve

    spec = resolve({"name": "k", "k8s": {"gpu_count": 1}, "distributed": {"launcher": "torchrun"}})
    with pytest.raises(ProviderError, match="targets 'k8s', not slurm"):
        SlurmProvider().desired(spec, compile_launch(spec))


def test_scripts_dir_contents_land_at_the_work_dir_root_as_on_k8s(slurm_stack, tmp_path: Path) -> None:
    (tmp_path / "scripts" / "lib").mkdir(parents=True)
    (tmp_path / "scripts" / "train.py").write_text("print('hi')\n")
    (tmp_path / "scripts" / "lib" / "util.sh").write_text("true\n")
    (tmp_path / "scripts" / "__pycache__").mkdir()
    (tmp_path / "scripts" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    spec = slurm_stack(model={"scripts_dir": "scripts", "script": "train.py"})
    found = files.local_files(spec, tmp_path)
    assert [remote for _, remote in found] == ["lib/util.sh", "train.py"]
    (worker,) = desired(spec, tmp_path)
    assert worker.spec["submit"]["files"] == [[str(local), remote] for local, remote in found]
    before = worker.spec["script_sha256"]
    (tmp_path / "scripts" / "train.py").write_text("print('changed')\n")
    (after,) = desired(spec, tmp_path)
    assert after.spec["script_sha256"] != before, "editing an uploaded file must resubmit the job"


def test_a_lone_local_model_script_is_uploaded_and_a_remote_one_is_not(slurm_stack, tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo hi\n")
    assert [r for _, r in files.local_files(slurm_stack(model={"script": "run.sh"}), tmp_path)] == ["run.sh"]
    assert files.local_files(slurm_stack(model={"script": "/opt/models/run.sh"}), tmp_path) == []
    assert files.local_files(slurm_stack(model={"script": "elsewhere.sh"}), tmp_path) == []


def test_scripts_dir_outside_the_stack_directory_lands_at_the_root_too(slurm_stack, tmp_path: Path) -> None:
    outside = tmp_path / "lib"
    outside.mkdir()
    (outside / "a.py").write_text("")
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    assert [r for _, r in files.local_files(slurm_stack(model={"scripts_dir": "../lib"}), stack_dir)] == ["a.py"]
    assert [r for _, r in files.local_files(slurm_stack(model={"scripts_dir": str(outside)}), stack_dir)] == ["a.py"]


@pytest.mark.parametrize("name", ["logs/x.txt", "status/worker.1", "topology.env", "worker.sbatch", "worker.secrets.env"])
def test_a_script_file_that_would_shadow_madinfras_files_is_refused(slurm_stack, tmp_path: Path, name: str) -> None:
    target = tmp_path / "scripts" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("x")
    with pytest.raises(ConfigError, match=f"model.scripts_dir: '{name}' in .* would overwrite madinfra's own files"):
        files.local_files(slurm_stack(model={"scripts_dir": "scripts"}), tmp_path)


def test_a_missing_scripts_dir_names_the_field(slurm_stack, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.scripts_dir"):
        desired(slurm_stack(model={"scripts_dir": "nope"}), tmp_path)
