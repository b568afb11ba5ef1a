"""Primus (AMD's training front end for Megatron-LM, TorchTitan, MaxText): the model's script runs.

Primus brings its own launcher: the model's ``run.sh`` calls Primus' ``run_pretrain.sh``, which
reads NNODES, NODE_RANK, GPUS_PER_NODE, MASTER_ADDR and MASTER_PORT and starts torchrun itself.
So, as in madengine, no MAD_MULTI_NODE_RUNNER is exported; the launcher adds what Primus reads
besides the common environment (module ``common``):

- PRIMUS_ROOT: the image's own value, else ``/workspace/Primus`` (where madengine's Dockerfiles
  install it); an ``env_vars.PRIMUS_ROOT`` is kept as the user wrote it.
- PRIMUS_CONFIG_PATH: ``distributed.primus.config_path``, else madengine's default for the
  target (the two differ in madengine, and a stack that names its config behaves the same on
  both targets).
- PRIMUS_CLI_EXTRA: ``distributed.primus.cli_extra`` when it is not blank.
- BACKEND: ``distributed.primus.backend``, else inferred from a madengine model name
  ``primus_pretrain/<backend>_<arch>_<config>``, else unset (Primus then reads its config).
- GPUS_PER_NODE: the processes per node, which Primus starts one per GPU.

Multi-node addressing (pod-0 DNS or the allocation's first node, NODE_RANK from the pod index or
SLURM_PROCID) is the common one. Values from the stack file are literals: they can never execute.
"""

from __future__ import annotations

from madinfra.launchers.common import LaunchContext, training_worker
from madinfra.launchers.model import RoleLaunch

DEFAULT_ROOT = "/workspace/Primus"
DEFAULT_CONFIG_PATH = {
    "k8s": "examples/torchtitan/configs/MI300X/qwen3_1.7B-pretrain.yaml",
    "slurm": "exp_pretrain.yaml",
}
"""madengine's fallbacks when ``distributed.primus.config_path`` is unset, per target."""
MODEL_NAME_PREFIX = "primus_pretrain/"
BACKEND_BY_TOKEN = {
    "maxtext": "MaxText",
    "torchtitan": "torchtitan",
    "megatron": "megatron",
    "megatron_bridge": "megatron_bridge",
    "moe_package": "moe_package",
}
"""Primus' ``run_pretrain.sh`` spells the JAX backend ``MaxText``; the others are lower case."""


def backend_from_model_name(name: str | None) -> str | None:
    """``primus_pretrain/torchtitan_MI300X_qwen3`` -> ``torchtitan`` (madengine's convention)."""
    if not name or not name.strip().startswith(MODEL_NAME_PREFIX):
        return None
    rest = name.strip()[len(MODEL_NAME_PREFIX):].strip()
    return BACKEND_BY_TOKEN.get(rest.split("_", 1)[0].lower()) if rest else None


def backend(ctx: LaunchContext) -> str | None:
    """An explicit ``distributed.primus.backend`` wins over the model name."""
    settings = ctx.spec.distributed.primus
    given = (settings.backend or "").strip() if settings else ""
    return given or backend_from_model_name(ctx.spec.model.name)


def literal_env(ctx: LaunchContext) -> dict[str, str]:
    """The stack file's Primus settings, as literal environment values."""
    settings = ctx.spec.distributed.primus
    config_path = settings.config_path if settings and settings.config_path else DEFAULT_CONFIG_PATH[ctx.target]
    env = {"PRIMUS_CONFIG_PATH": config_path}
    if settings and settings.cli_extra and settings.cli_extra.strip():
        env["PRIMUS_CLI_EXTRA"] = settings.cli_extra
    chosen = backend(ctx)
    if chosen:
        env["BACKEND"] = chosen
    return env


def generated_env(ctx: LaunchContext) -> dict[str, str | int]:
    """PRIMUS_ROOT falls back at run time so an image that sets its own keeps it."""
    env: dict[str, str | int] = {"GPUS_PER_NODE": ctx.nproc}
    if "PRIMUS_ROOT" not in ctx.spec.env_vars:
        env["PRIMUS_ROOT"] = f"${{PRIMUS_ROOT:-{DEFAULT_ROOT}}}"
    return env


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    return [training_worker(ctx, runner=None, env=generated_env(ctx), literal_env=literal_env(ctx))]
