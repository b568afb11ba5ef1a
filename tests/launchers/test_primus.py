"""Primus: madengine's PRIMUS_* / BACKEND contract on both targets, no runner, values stay literal."""

from __future__ import annotations

import pytest

from madinfra.launchers.addressing import SlurmAddressing

CD = 'cd "${MADINFRA_WORKDIR:-.}" || exit 1'
ROOT_DEFAULT = "${PRIMUS_ROOT:-/workspace/Primus}"
SHOW = 'printf "%s\\n" "$PRIMUS_ROOT" "$PRIMUS_CONFIG_PATH" "$PRIMUS_CLI_EXTRA" "$BACKEND" "$NODE_RANK" "$MASTER_ADDR" > "$ARGV_FILE"'


def primus(**settings: str) -> dict:
    return {"distributed": {"primus": settings}}


@pytest.mark.parametrize(
    ("target", "config"),
    [("k8s", "examples/torchtitan/configs/MI300X/qwen3_1.7B-pretrain.yaml"), ("slurm", "exp_pretrain.yaml")],
)
def test_single_node_defaults_follow_madengine_per_target(plan, target, config):
    worker = plan(target, "primus", 1, 4).role("worker")
    runtime = dict(worker.runtime_env)
    assert worker.env["PRIMUS_CONFIG_PATH"] == config
    assert runtime["PRIMUS_ROOT"] == ROOT_DEFAULT
    assert (worker.env["GPUS_PER_NODE"], worker.env["NNODES"], worker.env["NODE_RANK"], worker.env["MASTER_ADDR"]) == ("4", "1", "0", "localhost")
    assert worker.env["MAD_LAUNCHER_TYPE"] == "primus"
    assert "MAD_MULTI_NODE_RUNNER" not in worker.env and "MAD_MULTI_NODE_RUNNER" not in runtime
    assert not {"PRIMUS_CLI_EXTRA", "BACKEND"} & set(worker.env)
    assert worker.command == f"{CD}\nbash run.sh"


def test_k8s_multi_node_uses_pod0_dns_and_the_completion_index(plan):
    extra = {**primus(config_path="examples/megatron/configs/llama3_8B.yaml", backend="megatron"), "model": {"script": "scripts/primus_pretrain/run.sh", "args": ["--steps", "10"]}}
    worker = plan("k8s", "primus", 2, 8, port=29600, extra=extra).role("worker")
    runtime = dict(worker.runtime_env)
    assert worker.env["MASTER_ADDR"] == "demo-0.demo.ml.svc.cluster.local"
    assert worker.env["MASTER_PORT"] == "29600"
    assert runtime["NODE_RANK"] == runtime["POD_INDEX"] == "${JOB_COMPLETION_INDEX}"
    assert (worker.env["PRIMUS_CONFIG_PATH"], worker.env["BACKEND"]) == ("examples/megatron/configs/llama3_8B.yaml", "megatron")
    assert worker.command.endswith("\nbash scripts/primus_pretrain/run.sh --steps 10")


def test_slurm_multi_node_process_gets_primus_settings_and_rank(plan, run_role):
    extra = primus(config_path="exp.yaml", cli_extra="--train_iters 5 --lr 1e-4")
    worker = plan("slurm", "primus", 2, 8, extra=extra).role("worker")
    assert dict(worker.runtime_env)["MASTER_ADDR"] == SlurmAddressing("demo").master_addr("worker")
    proc, shown, _ = run_role(worker, "unused", {"SLURM_PROCID": "1", "SLURM_JOB_NODELIST": "node[1-2]"}, command=SHOW)
    assert proc.returncode == 0, proc.stderr
    assert shown == ["/workspace/Primus", "exp.yaml", "--train_iters 5 --lr 1e-4", "", "1", "10.0.0.1"]


def test_image_primus_root_is_kept_and_user_values_never_execute(plan, run_role, tmp_path):
    hostile = f"$(touch {tmp_path}/pwned) `id`"
    worker = plan("slurm", "primus", 1, 2, extra=primus(config_path=hostile, cli_extra=hostile, backend=hostile)).role("worker")
    proc, shown, _ = run_role(worker, "unused", {"PRIMUS_ROOT": "/opt/Primus"}, command=SHOW)
    assert proc.returncode == 0, proc.stderr
    assert shown[:4] == ["/opt/Primus", hostile, hostile, hostile]
    assert not (tmp_path / "pwned").exists()


def test_env_vars_primus_root_is_passed_on_as_written(plan):
    worker = plan("k8s", "primus", 1, 2, extra={"env_vars": {"PRIMUS_ROOT": "/srv/primus"}}).role("worker")
    assert worker.env["PRIMUS_ROOT"] == "/srv/primus"
    assert "PRIMUS_ROOT" not in dict(worker.runtime_env)


@pytest.mark.parametrize(
    ("model_name", "given", "expected"),
    [
        ("primus_pretrain/maxtext_MI300X_llama2_7B-pretrain", None, "MaxText"),
        ("primus_pretrain/torchtitan_MI300X_qwen3_4B-pretrain", None, "torchtitan"),
        ("primus_pretrain/megatron_MI355X_llama3", "torchtitan", "torchtitan"),
        ("primus_pretrain/unknown_MI300X_x", None, None),
        ("llama_pretrain", None, None),
    ],
)
def test_backend_comes_from_the_config_else_the_model_name(plan, model_name, given, expected):
    extra = {"model": {"name": model_name}, **(primus(backend=given) if given else {})}
    worker = plan("slurm", "primus", 1, 2, extra=extra).role("worker")
    assert worker.env.get("BACKEND") == expected


def test_blank_cli_extra_is_not_exported(plan):
    worker = plan("k8s", "primus", 1, 2, extra=primus(cli_extra="   ")).role("worker")
    assert "PRIMUS_CLI_EXTRA" not in worker.env
