"""``SlurmProvider.desired`` and ``render_files``: one job per role (one per replica of a serving pool), what apply will need in
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


def test_disaggregated_sglang_is_one_job_per_replica_a_topology_and_two_endpoint_files(slurm_stack) -> None:
    resources = desired(disagg(slurm_stack))
    assert [r.id for r in resources] == [
        "slurm/File/topology.env",
        "slurm/Job/prefill-0",
        "slurm/Job/prefill-1",
        "slurm/File/endpoints/prefill",
        "slurm/Job/decode-0",
        "slurm/Job/decode-1",
        "slurm/File/endpoints/decode",
        "slurm/Job/proxy",
    ]
    topology, prefill0, prefill1, prefill_ep, decode0, decode1, decode_ep, proxy = resources
    assert [(r.role, r.replica, r.spec["nodes"], r.gpus) for r in (prefill0, prefill1, decode0, decode1, proxy)] == [
        ("prefill", 0, 1, 2), ("prefill", 1, 1, 2), ("decode", 0, 1, 2), ("decode", 1, 1, 2), ("proxy", None, 1, 0),
    ]
    assert (topology.gpus, decode_ep.gpus) == (0, 0) and not topology.workload and not decode_ep.workload
    assert proxy.spec["submit"]["ready"] == {"service": True, "timeout": 90, "command": None, "http_path": "/health", "port": 8080, "all_nodes": False}
    assert decode1.spec["submit"]["ready"]["all_nodes"] is True
    assert decode1.spec["name"] == "madinfra.demo.decode-1" and decode1.spec["submit"]["script_file"] == "decode-1.sbatch"
    assert "export MADINFRA_REPLICA_INDEX=1" in decode1.spec["submit"]["script"]
    assert "#SBATCH --gres" not in proxy.spec["submit"]["script"]
    assert decode_ep.spec["port"] == 30000 and decode_ep.spec["replicas"] == 2
    assert decode_ep.spec["replica_jobs"] == stackfiles.replica_jobs_digest([decode0, decode1])
    assert decode_ep.spec["submit"]["job_names"] == ["madinfra.demo.decode-0", "madinfra.demo.decode-1"]
    assert decode_ep.spec["submit"]["proxy_ack"] is True, "the generated proxy acknowledges endpoint lists"
    own = desired(disagg(slurm_stack, roles={"proxy": {"command": "my-router"}}))
    assert by_id(own)["slurm/File/endpoints/decode"].spec["submit"]["proxy_ack"] is False, "a proxy of the user's own does not"


def test_pools_come_prefill_then_decode_then_the_proxy(slurm_stack) -> None:
    resources = by_id(desired(disagg(slurm_stack)))
    deps = {rid: set(r.depends_on) for rid, r in resources.items()}
    assert deps["slurm/File/topology.env"] == set()
    assert deps["slurm/Job/prefill-1"] == {"slurm/File/topology.env"}, "a replica does not wait for its siblings"
    assert deps["slurm/File/endpoints/prefill"] == {"slurm/Job/prefill-0", "slurm/Job/prefill-1"}
    assert deps["slurm/Job/decode-0"] == {"slurm/File/topology.env", "slurm/File/endpoints/prefill"}
    assert deps["slurm/File/endpoints/decode"] == {"slurm/Job/decode-0", "slurm/Job/decode-1"}
    assert deps["slurm/Job/proxy"] == {"slurm/File/topology.env", "slurm/File/endpoints/prefill", "slurm/File/endpoints/decode"}
    # Whatever order a plan lists them in (server flags change: every job and file changes).
    changes = [Change("replace" if r.kind == "slurm/Job" else "update", rid, r, r) for rid, r in reversed(resources.items())]
    ordered = [c.resource_id for c in order_changes(changes)]
    assert ordered.index("slurm/Job/prefill-1") < ordered.index("slurm/Job/decode-0") < ordered.index("slurm/Job/proxy")


def test_the_topology_is_a_file_every_task_sources_not_part_of_any_script(slurm_stack) -> None:
    spec = disagg(slurm_stack)
    launch = compile_launch(spec)
    resources = by_id(desired(spec))
    topology = resources["slurm/File/topology.env"]
    assert topology.spec["variables"] == launch.topology_env and topology.spec["variables"]["SGLANG_DISAGG_DECODE_NODES"] == "2"
    assert scripts.parse_topology(topology.spec["submit"]["text"]) == launch.topology_env
    for role in ("proxy", "prefill-0", "decode-1"):
        script = resources[f"slurm/Job/{role}"].spec["submit"]["script"]
        assert "SGLANG_DISAGG_DECODE_NODES" not in script and "MADINFRA_FIRST_RANK_DECODE=" not in script
        assert "bash -c '. \"$MADINFRA_WORKDIR\"/topology.env || {" in script, "the topology comes first in every task"
    assert set(SlurmProvider().render_files(list(resources.values()))) == {
        "proxy.sbatch", "prefill-0.sbatch", "prefill-1.sbatch", "decode-0.sbatch", "decode-1.sbatch",
    }


def job_specs(resources) -> dict:
    return {r.name: normalise(r.spec, rules.JOB_RULES) for r in resources if r.kind == "slurm/Job"}


@pytest.mark.parametrize(
    ("before", "after", "resized"),
    [((5, 1, 3), (4, 1, 2), "decode"), ((4, 1, 2), (5, 2, 2), "prefill"), ((5, 2, 2), (4, 2, 1), "decode"), ((6, 2, 3), (7, 3, 3), "prefill")],
)
def test_resizing_one_pool_adds_or_removes_only_its_highest_replicas(slurm_stack, before, after, resized) -> None:
    old = by_id(desired(disagg(slurm_stack, *before)))
    new = by_id(desired(disagg(slurm_stack, *after)))
    old_jobs, new_jobs = job_specs(old.values()), job_specs(new.values())
    kept = set(old_jobs) & set(new_jobs)
    for name in kept:
        assert new_jobs[name] == old_jobs[name], f"{name} must not change when {resized} is resized"
    size = {"prefill": 1, "decode": 2}[resized]
    changed = (set(old_jobs) ^ set(new_jobs))
    top = max(before[size], after[size])
    assert changed == {f"{resized}-{i}" for i in range(min(before[size], after[size]), top)}
    other = "prefill" if resized == "decode" else "decode"
    assert new[f"slurm/File/endpoints/{other}"].spec == old[f"slurm/File/endpoints/{other}"].spec
    assert new[f"slurm/File/endpoints/{resized}"].spec["replicas"] == after[size]
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
