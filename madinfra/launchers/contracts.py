"""Launcher contracts checked before anything runs: a stack whose numbers cannot work together
fails ``validate`` and ``plan`` with every problem named by its field, instead of failing on the
cluster minutes later (a rendezvous that never completes, a server that cannot shard its model,
two servers fighting over one port).

Checked on the compiled launch, so each rule sees the values the nodes would really get:

- **User values the launcher overrides.** ``env_vars``/``docker_env_vars`` come first and the
  launcher's contract (WORLD_SIZE, NNODES, ranks, parallel sizes, ...) overrides them, so a user
  value that differs would be silently dropped. It is refused, naming the value madinfra sets;
  ``roles.<role>.env`` is the deliberate override and wins.
- **Parallel sizes.** Tensor x pipeline (x context) parallel sizes, from the environment the
  nodes get and from server flags in ``model.args``: for training their product must divide the
  GPUs of the run (the rest is data parallel); for a server it must equal the GPUs one server
  spans (vLLM on SLURM: all nodes; otherwise one node).
- **Ports on one node.** The ports a role binds on a node (its server or proxy port, Ray's head
  6379 where a launcher starts Ray, the master port of multi-node training, SGLang's bootstrap
  port on prefill servers) must differ; and on SLURM, where ``exclusive: false`` lets two servers
  of a disaggregated pool share a node, they would both bind the same ports.

Whether a partition or node type has the GPUs per node is a property of the cluster: the
providers check it at plan time from their live read.
"""

from __future__ import annotations

import dataclasses

from typing import Iterable

from madinfra.launchers.common import RAY_PORT, SGLANG_PORT
from madinfra.launchers import kv_layout
from madinfra.launchers.model import LaunchPlan, RoleLaunch

Problems = list[tuple[str, str]]

CONTRACT_FREE = frozenset({"MAD_SYSTEM_GPU_ARCHITECTURE", "MIOPEN_USER_DB_PATH"})
"""Variables whose user value is not lost: MAD_SYSTEM_GPU_ARCHITECTURE is read from the user and
only detected when unset; MIOPEN_USER_DB_PATH is replaced on multi-node SLURM by madengine's
per-rank path on purpose (ranks sharing one MIOpen database corrupt it), and madengine's own
multi-node examples and presets set a shared one, which must stay valid stack files."""
SGLANG_BOOTSTRAP_PORT = 8998
"""SGLang's default ``--disaggregation-bootstrap-port``, bound by every prefill server."""

PARALLEL_ENV = {
    "tp": ("TENSOR_MODEL_PARALLEL_SIZE", "TORCHTITAN_TENSOR_PARALLEL_SIZE", "VLLM_TENSOR_PARALLEL_SIZE", "SGLANG_TENSOR_PARALLEL_SIZE"),
    "pp": ("PIPELINE_MODEL_PARALLEL_SIZE", "TORCHTITAN_PIPELINE_PARALLEL_SIZE", "VLLM_PIPELINE_PARALLEL_SIZE", "SGLANG_PIPELINE_PARALLEL_SIZE"),
    "cp": ("CONTEXT_PARALLEL_SIZE", "TORCHTITAN_CONTEXT_PARALLEL_SIZE"),
}
PARALLEL_FLAGS = {
    "tp": ("--tensor-parallel-size", "--tp-size", "--tp"),
    "pp": ("--pipeline-parallel-size", "--pp-size", "--pp"),
    "cp": ("--context-parallel-size", "--cp-size"),
}
SERVER_LAUNCHERS = frozenset({"vllm", "sglang", "sglang-disagg"})


def problems(spec, launch: LaunchPlan) -> Problems:
    """Every contract problem of ``spec`` as compiled into ``launch``, each with its field path."""
    found: Problems = []
    found += overridden_user_values(spec, launch)
    found += parallel_size_problems(spec, launch)
    found += port_problems(spec, launch)
    found += kv_layout.mismatch(launch)
    return found


def overridden_user_values(spec, launch: LaunchPlan) -> Problems:
    """A user variable the launcher sets to something else would never reach the nodes."""
    found: Problems = []
    for name in sorted(set(spec.env_vars) | set(spec.docker_env_vars)):
        section = "docker_env_vars" if name in spec.docker_env_vars else "env_vars"
        value = spec.docker_env_vars.get(name, spec.env_vars.get(name))
        if name in CONTRACT_FREE:
            continue
        for role in launch.roles:
            if name in _role_env(spec, role.role):
                continue
            launcher_value = _launcher_value(role, name, value)
            if launcher_value is None:
                continue
            source = SOURCE_FIELDS.get(name)
            who = source if source and source_set(spec, source) else f"the {launch.launcher or 'default'} launcher"
            found.append((
                f"{section}.{name}",
                f"is {value!r}, but {who} sets {name} to {launcher_value} on the {role.role} nodes, "
                f"so your value would never reach them; remove it, or set roles.{role.role}.env.{name} to override the launcher on purpose",
            ))
            break
    return found


SOURCE_FIELDS = {"MODEL_PATH": "model.model_path"}
"""Variables a stack field sets, named in the message instead of the launcher."""


def source_set(spec, path: str) -> bool:
    section, _, key = path.partition(".")
    return getattr(getattr(spec, section, None), key, None) is not None


def _role_env(spec, role: str) -> dict[str, str]:
    override = spec.roles.get(role)
    return override.env if override is not None else {}


def _launcher_value(role: RoleLaunch, name: str, user_value: str) -> str | None:
    """What the launcher gives ``name`` on this role's nodes when that is not the user's value
    (a literal, a per-node expression, or nothing); ``None`` when the user's value stands."""
    if name in dict(role.runtime_env):
        return "a value computed on each node"
    if name in role.unset_env:
        return "nothing (it unsets it)"
    if name in role.env and role.env[name] != user_value:
        return repr(role.env[name])
    return None


def parallel_size_problems(spec, launch: LaunchPlan) -> Problems:
    """TP x PP (x CP) must fit the GPUs: divide them for training, fill one server for serving."""
    found: Problems = []
    total_gpus = launch.nnodes * launch.nproc_per_node
    for role in launch.roles:
        if role.gpus_per_node == 0 or (role.ray is not None and role.ray.part == "workers"):
            continue  # no GPUs, or nodes that only join the head, which runs the server
        # The sizes the processes see include the stack's topology (a Ray cluster's PP).
        role = dataclasses.replace(role, env={**launch.topology_env, **role.env})
        sizes, where = _parallel_sizes(spec, role)
        if not sizes:
            continue
        product = 1
        for value in sizes.values():
            product *= value
        named = " x ".join(f"{key.upper()} {value}" for key, value in sizes.items())
        if launch.workload == "training":
            if product > total_gpus or total_gpus % product:
                found.append((where, f"{named} = {product} does not divide the run's {total_gpus} GPUs (distributed.nnodes {launch.nnodes} x nproc_per_node {launch.nproc_per_node}); choose sizes whose product divides it"))
            continue
        server_gpus = _server_gpus(launch, role)
        if product != server_gpus:
            found.append((where, f"{named} = {product}, but one {'' if role.role == 'server' else role.role + ' '}server spans {server_gpus} GPU(s) (distributed.nproc_per_node {launch.nproc_per_node}{' x nnodes' if server_gpus != launch.nproc_per_node else ''}); make them equal"))
    return found


def _server_gpus(launch: LaunchPlan, role: RoleLaunch) -> int:
    """vLLM on SLURM spans the whole allocation (TP per node, PP across nodes); every other
    server (SGLang, disaggregated pools, vLLM replicas on Kubernetes) is one node."""
    if role.ray is not None:
        return role.ray.nodes * role.gpus_per_node
    if launch.launcher == "vllm" and launch.target == "slurm":
        return role.nodes * role.gpus_per_node
    return role.gpus_per_node


def _parallel_sizes(spec, role: RoleLaunch) -> tuple[dict[str, int], str]:
    """The parallel sizes a role's processes see, and the field the first non-launcher value
    came from (a ``roles.<role>.env`` override or ``model.args``); sizes the launcher itself
    derived are consistent by construction and only counted alongside a user value."""
    override = _role_env(spec, role.role)
    sizes: dict[str, int] = {}
    where = ""
    for key, names in PARALLEL_ENV.items():
        for name in names:
            value = _int(role.env.get(name))
            if value is None:
                continue
            sizes[key] = value
            if name in override and not where:
                where = f"roles.{role.role}.env.{name}"
            break
    for key, value in _flag_sizes(spec.model.args).items():
        sizes[key] = value
        where = where or "model.args"
    return (sizes, where) if where else ({}, "")


def _flag_sizes(args: Iterable[str]) -> dict[str, int]:
    """``--tp-size 8`` / ``--tensor-parallel-size=8`` style flags in the server arguments
    (``model.args`` are argv words, each passed as one argument)."""
    words = list(args)
    sizes: dict[str, int] = {}
    for i, word in enumerate(words):
        flag, _, inline = word.partition("=")
        for key, flags in PARALLEL_FLAGS.items():
            if flag in flags:
                value = _int(inline if inline else (words[i + 1] if i + 1 < len(words) else None))
                if value is not None:
                    sizes[key] = value
    return sizes


def _int(text: str | None) -> int | None:
    try:
        value = int(str(text))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def port_problems(spec, launch: LaunchPlan) -> Problems:
    """Ports bound on one node must differ (see the module docstring)."""
    found: Problems = []
    service_port = spec.service.port if spec.service is not None else None
    ray_ports = {RAY_PORT: ""} | {role.ray.dashboard_port: " for its dashboard" for role in launch.roles if role.ray is not None}
    if launch.launcher == "vllm" and (launch.nnodes > 1) and launch.service_port in ray_ports:
        what = ray_ports[launch.service_port]
        found.append(("service.port", f"is {launch.service_port}, which Ray's head binds on the same node{what}; choose another port"))
    if launch.launcher == "sglang" and launch.nnodes > 1 and launch.service_port == launch.master_port:
        field = "service.port" if service_port is not None else "distributed.master_port"
        found.append((field, f"is {launch.master_port}, which is both the server's HTTP port and the NCCL init address on node 0 (distributed.master_port); choose different ports"))
    if launch.launcher == "sglang-disagg" and launch.target == "slurm" and spec.slurm is not None and not spec.slurm.exclusive:
        proxy_port = launch.role("proxy").ports.get("http")
        if proxy_port in (SGLANG_PORT, SGLANG_BOOTSTRAP_PORT):
            field = "service.port" if service_port is not None else "distributed.master_port"
            found.append((field, f"is {proxy_port}, which the prefill/decode servers also bind and slurm.exclusive is false, so the proxy may share a node with one; choose another port"))
        generated = [pool for pool in ("prefill", "decode") if not spec.model.script and not (spec.roles.get(pool) and spec.roles[pool].command)]
        if generated:
            found.append((
                "slurm.exclusive",
                f"is false, so two {' or '.join(generated)} servers may share a node and both bind port {SGLANG_PORT}"
                f"{f' (and prefill servers bootstrap port {SGLANG_BOOTSTRAP_PORT})' if 'prefill' in generated else ''}; set slurm.exclusive: true (one server per node)",
            ))
    return found
