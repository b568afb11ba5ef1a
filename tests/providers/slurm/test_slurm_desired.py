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
from providers.slurm import SlurmProvider, files


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
    assert submit["endpoint_port"] is None and submit["reads_endpoints"] == {}


def test_disaggregated_sglang_is_three_jobs_and_the_proxy_waits_for_both_pools(slurm_stack) -> None:
    spec = slurm_stack(
        slurm={"partition": "debug", "nodes": 5, "gpus_per_node": 2, "time": "60", "ready_timeout": 90},
        distributed={"launcher": "sglang-disagg", "nnodes": 5, "nproc_per_node": 2, "sglang_disagg": {"prefill_nodes": 2, "decode_nodes": 2}},
        env_vars={"MODEL_PATH": "/m"},
        service={"port": 8080, "health_check": {"http_path": "/health"}},
    )
    proxy, prefill, decode = desired(spec)
    assert [r.name for r in (proxy, prefill, decode)] == ["proxy", "prefill", "decode"]
    assert proxy.depends_on == ("slurm/Job/prefill", "slurm/Job/decode")
    assert (proxy.spec["nodes"], prefill.spec["nodes"], decode.spec["nodes"]) == (1, 2, 2)
    assert (proxy.gpus, prefill.gpus, decode.gpus) == (0, 4, 4)
    assert proxy.spec["submit"]["reads_endpoints"] == {"prefill": 30000, "decode": 30000}
    assert prefill.spec["submit"]["endpoint_port"] == 30000 and proxy.spec["submit"]["endpoint_port"] is None
    assert proxy.spec["submit"]["ready"] == {"service": True, "timeout": 90, "command": None, "http_path": "/health", "port": 8080, "all_nodes": False}
    assert decode.spec["submit"]["ready"]["all_nodes"] is True
    assert "#SBATCH --gres" not in proxy.spec["submit"]["script"]


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


def test_scripts_dir_files_keep_their_path_relative_to_the_stack_file(slurm_stack, tmp_path: Path) -> None:
    (tmp_path / "scripts" / "lib").mkdir(parents=True)
    (tmp_path / "scripts" / "train.py").write_text("print('hi')\n")
    (tmp_path / "scripts" / "lib" / "util.sh").write_text("true\n")
    (tmp_path / "scripts" / "__pycache__").mkdir()
    (tmp_path / "scripts" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    spec = slurm_stack(model={"scripts_dir": "scripts", "script": "scripts/train.py"})
    found = files.local_files(spec, tmp_path)
    assert [remote for _, remote in found] == ["scripts/lib/util.sh", "scripts/train.py"]
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


def test_scripts_dir_outside_the_stack_directory_lands_in_scripts(slurm_stack, tmp_path: Path) -> None:
    outside = tmp_path / "lib"
    outside.mkdir()
    (outside / "a.py").write_text("")
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    assert [r for _, r in files.local_files(slurm_stack(model={"scripts_dir": "../lib"}), stack_dir)] == ["scripts/a.py"]
    assert [r for _, r in files.local_files(slurm_stack(model={"scripts_dir": str(outside)}), stack_dir)] == ["scripts/a.py"]


def test_a_missing_scripts_dir_names_the_field(slurm_stack, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.scripts_dir"):
        desired(slurm_stack(model={"scripts_dir": "nope"}), tmp_path)
