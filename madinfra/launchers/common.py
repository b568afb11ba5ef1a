"""What every launcher compiler shares: the context, the common environment, the merge rules.

A launcher module only says what is special about its framework (runner line, parallelism
variables, server command). Everything madengine sets for all launchers — NNODES, MASTER_*,
ranks, GPU visibility, HSA_NO_SCRATCH_RECLAIM — and the rules for combining the user's
environment with the launcher's live here, so the launchers cannot drift apart.

Where a value goes:
- ``env``: literal strings. User values always land here, so a provider quotes them and they
  can never execute.
- ``runtime_env``: trusted shell expressions madinfra generates (``${SLURM_PROCID}``, the first
  host of the allocation); exported in order, inside double quotes, after ``env``.
A name is never in both, and never both set and unset.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from madinfra.config.schema import StackSpec
from madinfra.launchers.addressing import Addressing, K8sAddressing, SlurmAddressing
from madinfra.launchers.model import RoleLaunch

WORKDIR = "${MADINFRA_WORKDIR:-.}"
"""The stack's work directory on the node; providers set MADINFRA_WORKDIR, launchers never do."""

CD_WORKDIR = f'cd "{WORKDIR}" || exit 1'
DEFAULT_SCRIPT = "run.sh"
MASTER_REF = "${MASTER_ADDR}"
"""How runners and commands name the master: through the variable, so a role override wins."""
RAY_PORT = 6379
SGLANG_PORT = 30000
VLLM_PORT = 8000

MIOPEN_PER_RANK_DB = "/tmp/.miopen/node_${SLURM_PROCID}_rank_\\${LOCAL_RANK:-0}"
r"""madengine's per-rank MIOpen cache on multi-node SLURM, byte for byte: ``${SLURM_PROCID}`` is
expanded by each srun task (so nodes never share one database file over a shared /tmp or
home), while ``\${LOCAL_RANK:-0}`` reaches the process unexpanded, for the model script to
expand once its launcher has set LOCAL_RANK per GPU process (madengine's contract)."""
RDZV_TIMEOUT_SECONDS = 3600
"""torch elastic's default rendezvous wait (~900 s) is shorter than a cold multi-node start."""

GPU_ARCH_VAR = "MAD_SYSTEM_GPU_ARCHITECTURE"
GPU_ARCH_PROBES = {
    "AMD": "$({ rocminfo || /opt/rocm/bin/rocminfo; } 2>/dev/null | grep -o -m 1 'gfx[0-9a-z]*')",
    "NVIDIA": "$(nvidia-smi -L 2>/dev/null | head -n1 | sed -e 's/ (UUID: .*)//' -e 's/^GPU 0: //')",
}
"""How madengine detects the architecture (rocminfo's first ``gfx*`` name, ``nvidia-smi -L``'s
first GPU), run in the pod itself: madengine copies the build machine's value into the Job (or
``gfx90a`` when it has none), which is wrong whenever the cluster's GPUs differ from it."""

VISIBILITY_VARS = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
RAY_AMD_UNSET = ("RAY_EXPERIMENTAL_NOSET_HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
RAY_NVIDIA_UNSET = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def addressing_for(spec: StackSpec) -> Addressing:
    if spec.target == "k8s":
        assert spec.k8s is not None
        return K8sAddressing(spec.name, spec.k8s.namespace, spec.k8s.cluster_domain)
    return SlurmAddressing(spec.name)


def quote_words(words: list[str] | tuple[str, ...]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def is_expression(value: str) -> bool:
    """Anything with a ``$`` needs the node's shell to evaluate it."""
    return "$" in value


@dataclass(frozen=True)
class LaunchContext:
    """The resolved stack plus how its nodes address each other; read-only for all compilers."""

    spec: StackSpec
    addressing: Addressing

    @classmethod
    def of(cls, spec: StackSpec) -> LaunchContext:
        return cls(spec, addressing_for(spec))

    @property
    def target(self) -> str:
        return self.spec.target

    @property
    def on_k8s(self) -> bool:
        return self.spec.target == "k8s"

    @property
    def stack(self) -> str:
        return self.spec.name

    @property
    def launcher(self) -> str | None:
        return self.spec.distributed.launcher

    @property
    def nnodes(self) -> int:
        return self.spec.distributed.nnodes

    @property
    def nproc(self) -> int:
        return self.spec.distributed.nproc_per_node

    @property
    def port(self) -> int:
        """``distributed.master_port``, honoured everywhere (madengine ignores it: bug 6)."""
        return self.spec.distributed.master_port

    @property
    def gpus(self) -> int:
        return self.spec.gpus_per_node

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    @property
    def deployment_type(self) -> str:
        return "kubernetes" if self.on_k8s else "slurm"

    @property
    def script(self) -> str:
        return self.spec.model.script or DEFAULT_SCRIPT

    @property
    def args(self) -> tuple[str, ...]:
        return tuple(self.spec.model.args)

    def rank(self, role: str, first_rank: int, nodes: int) -> str:
        """Global rank of this node: a literal when the pool has one node.

        A one-node pool may not be an Indexed Job or a StatefulSet (K8s single-node Jobs are not
        indexed, the disaggregated proxy is a Deployment), so its rank must not come from the
        pod's index; it is known at compile time anyway.
        """
        return str(first_rank) if nodes == 1 else self.addressing.node_rank(role, first_rank)

    def self_ip(self) -> str:
        return self.addressing.self_ip()

    def service_port(self, default: int) -> int:
        service = self.spec.service
        return service.port if service is not None and service.port is not None else default


@dataclass
class RoleDraft:
    """A role being assembled; ``finish`` turns it into the immutable RoleLaunch."""

    role: str
    nodes: int
    first_rank: int
    gpus_per_node: int
    env: dict[str, str] = field(default_factory=dict)
    runtime: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=lambda: [CD_WORKDIR])
    ports: dict[str, int] = field(default_factory=dict)

    def set(self, name: str, value: str | int) -> None:
        self.runtime.pop(name, None)
        self._drop_unset(name)
        self.env[name] = str(value)

    def export(self, name: str, expression: str) -> None:
        """Re-exporting moves the name to the end, after whatever it may reference."""
        self.env.pop(name, None)
        self.runtime.pop(name, None)
        self._drop_unset(name)
        self.runtime[name] = expression

    def put(self, name: str, value: str | int) -> None:
        value = str(value)
        if is_expression(value):
            self.export(name, value)
        else:
            self.set(name, value)

    def remove(self, name: str) -> None:
        self.env.pop(name, None)
        self.runtime.pop(name, None)
        if name not in self.unset:
            self.unset.append(name)

    def run(self, *lines: str) -> None:
        self.lines.extend(lines)

    def _drop_unset(self, name: str) -> None:
        if name in self.unset:
            self.unset.remove(name)


def start_role(ctx: LaunchContext, role: str, nodes: int, first_rank: int, gpus: int, *, ray_style: bool = False) -> RoleDraft:
    """A role with madengine's common environment already in it.

    ``ray_style`` selects the vLLM/SGLang GPU visibility rule (only one vendor variable, the
    others unset, because Ray rejects inconsistent HIP/ROCR/CUDA lists). WORLD_SIZE counts
    nodes, as madengine's SLURM env (SLURM_NTASKS) and K8s torchrun forms do; DeepSpeed and
    plain scripts replace it with the process count. MODEL_PATH from ``model.model_path`` is the
    more specific setting, so it beats an ``env_vars.MODEL_PATH``.
    """
    draft = RoleDraft(role=role, nodes=nodes, first_rank=first_rank, gpus_per_node=gpus)
    draft.set("NNODES", ctx.nnodes)
    draft.set("NPROC_PER_NODE", ctx.nproc)
    draft.set("MASTER_PORT", ctx.port)
    draft.set("MAD_RUNTIME_NGPUS", ctx.nproc)
    draft.set("MAD_LAUNCHER_TYPE", ctx.launcher or "none")
    draft.set("MAD_DEPLOYMENT_TYPE", ctx.deployment_type)
    draft.set("GPUS_PER_NODE", gpus)
    draft.set("WORLD_SIZE", ctx.nnodes)
    draft.set("LOCAL_RANK", 0)
    if ctx.on_k8s:
        draft.set("HSA_NO_SCRATCH_RECLAIM", 1)
        _set_gpu_architecture(ctx, draft)
    else:
        draft.set("MAD_IN_SLURM_JOB", 1)
        draft.set("MAD_TOTAL_NODES", ctx.nnodes)
        draft.export("MAD_SLURM_JOB_ID", "${SLURM_JOB_ID}")
    _set_master(ctx, draft)
    rank = ctx.rank(role, first_rank, nodes)
    draft.put("NODE_RANK", rank)
    draft.put("RANK", rank)
    if not ctx.on_k8s:
        draft.put("MAD_NODE_RANK", rank)
    if ctx.spec.model.model_path:
        draft.set("MODEL_PATH", ctx.spec.model.model_path)
    _set_visibility(ctx, draft, ray_style)
    return draft


def _set_gpu_architecture(ctx: LaunchContext, draft: RoleDraft) -> None:
    """K8s MAD_SYSTEM_GPU_ARCHITECTURE: the user's value (madengine's override spelling
    ``docker_env_vars``, else ``env_vars``) as a literal, else detected on the node at start."""
    given = ctx.spec.docker_env_vars.get(GPU_ARCH_VAR) or ctx.spec.env_vars.get(GPU_ARCH_VAR)
    if given:
        draft.set(GPU_ARCH_VAR, given)
    else:
        draft.export(GPU_ARCH_VAR, GPU_ARCH_PROBES[ctx.spec.gpu_vendor])


def _set_master(ctx: LaunchContext, draft: RoleDraft) -> None:
    """Rank 0 of the role's pool: localhost alone, pod DNS on K8s, first NodeAddr on SLURM.

    A one-node pool uses ``localhost`` as madengine does for single-node runs: K8s only gives
    pods a DNS name when they sit behind a headless Service (multi-node). In disaggregated
    stacks every pool is its own workload (K8s) or allocation (SLURM), so the pool's own first
    node is the only master both targets can name.
    """
    if draft.nodes == 1:
        draft.set("MASTER_ADDR", "localhost")
    elif ctx.on_k8s:
        draft.set("MASTER_ADDR", ctx.addressing.master_addr(draft.role))
    else:
        draft.export("MASTER_ADDR", ctx.addressing.master_addr(draft.role))


def _set_visibility(ctx: LaunchContext, draft: RoleDraft, ray_style: bool) -> None:
    """madengine's rule (section 3): Ray launchers get one vendor variable, others all three."""
    if draft.gpus_per_node <= 0:
        return
    devices = ",".join(str(i) for i in range(draft.gpus_per_node))
    if not ray_style:
        for name in VISIBILITY_VARS:
            draft.set(name, devices)
        return
    if ctx.spec.gpu_vendor == "NVIDIA":
        draft.set("CUDA_VISIBLE_DEVICES", devices)
        unset = RAY_NVIDIA_UNSET
    else:
        draft.set("HIP_VISIBLE_DEVICES", devices)
        unset = RAY_AMD_UNSET
    for name in unset:
        draft.remove(name)


def export_pod_ip(ctx: LaunchContext, draft: RoleDraft) -> None:
    """K8s: keep a POD_IP the provider injected (downward API), else ask the pod itself."""
    if ctx.on_k8s:
        draft.export("POD_IP", "${POD_IP:-$(hostname -i | awk '{print $1}')}")


def script_line(script: str, args: tuple[str, ...], *, runner: bool) -> str:
    """Run the user's script with every argument kept and quoted (madengine drops them).

    ``.py`` goes through the exported runner when the launcher has one (it is left unquoted on
    purpose so it splits into words); anything else is a shell script run with bash, which
    finds the runner in MAD_MULTI_NODE_RUNNER.
    """
    words = quote_words([script, *args])
    if script.endswith(".py"):
        return f"${{MAD_MULTI_NODE_RUNNER}} {words}" if runner else f"python3 {words}"
    return f"bash {words}"


def torchrun_standalone(ctx: LaunchContext) -> str:
    return f"torchrun --standalone --nproc_per_node={ctx.nproc}"


def torchrun_multi(ctx: LaunchContext, *, rendezvous: bool) -> str:
    """madengine's multi-node runner; ``rendezvous`` adds its c10d form (K8s ``.py``), which
    lets torchrun agree on ranks without trusting the scheduler's order."""
    runner = (
        f"torchrun --nnodes={ctx.nnodes} --nproc_per_node={ctx.nproc}"
        f" --node_rank={ctx.rank('worker', 0, ctx.nnodes)} --master_addr={MASTER_REF} --master_port={ctx.port}"
    )
    if rendezvous:
        runner += f" --rdzv_backend=c10d --rdzv_endpoint={MASTER_REF}:{ctx.port} --rdzv_id={ctx.stack}"
    return runner


def multi_node_training_env(ctx: LaunchContext, draft: RoleDraft) -> None:
    """What madengine adds for every multi-node training job besides the launcher's block.

    SLURM: the per-rank MIOpen cache (a runtime expression, so each srun task expands its own
    SLURM_PROCID; a literal in the sbatch header would give every node rank 0's path),
    TORCH_ELASTIC_RDZV_TIMEOUT and DISTRIBUTED_BACKEND (``distributed.backend``, nccl by
    default). K8s: POD_INDEX, the pod's own completion index, as the launcher block exports it.
    """
    if not ctx.multi_node:
        return
    if ctx.on_k8s:
        draft.put("POD_INDEX", ctx.rank(draft.role, 0, ctx.nnodes))
        return
    draft.export("MIOPEN_USER_DB_PATH", MIOPEN_PER_RANK_DB)
    draft.set("TORCH_ELASTIC_RDZV_TIMEOUT", RDZV_TIMEOUT_SECONDS)
    draft.set("DISTRIBUTED_BACKEND", ctx.spec.distributed.backend)


def training_worker(
    ctx: LaunchContext,
    *,
    runner: str | None,
    env: dict[str, str | int] | None = None,
    literal_env: dict[str, str] | None = None,
    setup: tuple[str, ...] = (),
    world_size: int | None = None,
) -> RoleLaunch:
    """The single ``worker`` role of every training launcher: N nodes from rank 0.

    ``env`` holds values madinfra generates (an expression among them is exported on the
    node); ``literal_env`` holds values taken from the stack file, which must never execute.
    """
    draft = start_role(ctx, "worker", ctx.nnodes, 0, ctx.gpus)
    draft.ports["master"] = ctx.port
    multi_node_training_env(ctx, draft)
    if world_size is not None:
        draft.set("WORLD_SIZE", world_size)
    for name, value in (env or {}).items():
        draft.put(name, value)
    for name, text in (literal_env or {}).items():
        draft.set(name, text)
    if runner is not None:
        draft.put("MAD_MULTI_NODE_RUNNER", runner)
    draft.run(*setup)
    draft.run(script_line(ctx.script, ctx.args, runner=runner is not None))
    return finish(ctx, draft)


MODEL_PATH_GUARD = ': "${MODEL_PATH:?names no model: set model.model_path or env_vars.MODEL_PATH in the stack}"'
"""A native server with no model fails on the node with this sentence instead of a Python trace.

Not a compile error on purpose: madengine configs load as-is without a model, and an image
may set MODEL_PATH itself; ``plan`` must keep working for both.
"""


def server_lines(ctx: LaunchContext, native: str) -> tuple[str, ...]:
    """Inference roles run the user's script when one is named, else the framework's server.

    Model args are appended to the native server (they are its extra flags), so they are never
    dropped either way.
    """
    if ctx.spec.model.script:
        return (script_line(ctx.spec.model.script, ctx.args, runner=False),)
    extra = quote_words(ctx.args)
    return MODEL_PATH_GUARD, (f"{native} {extra}" if extra else native)


def finish(ctx: LaunchContext, draft: RoleDraft, *, settings_role: str | None = None, command_override: bool = True) -> RoleLaunch:
    """Merge user env (first), launcher contract (overrides it), role override env (last).

    User env is ``env_vars`` with ``docker_env_vars`` over it: madengine passes the latter into
    the container its workload runs in, and here the workload always runs in one (the pod, a
    SLURM container runtime) or on the bare host where the same variables are its environment;
    either way, as ``docker run -e`` would, they win over ``env_vars``.

    A user variable the launcher computes at run time or unsets is dropped from ``env``, else
    the two would fight on the node. ``roles.<role>.command`` replaces the command only.

    ``settings_role`` names the ``roles.<role>`` entry when the draft is one part of a role (a
    Ray cluster's workers take the ``server`` settings); ``command_override=False`` keeps the
    draft's command where the launcher has already put the override in its place (the engine a
    Ray head supervises).
    """
    runtime = dict(draft.runtime)
    unset = list(draft.unset)
    user_env = {**ctx.spec.env_vars, **ctx.spec.docker_env_vars}
    env = {k: v for k, v in user_env.items() if k not in runtime and k not in unset}
    env.update(draft.env)
    command = "\n".join(draft.lines)
    override = ctx.spec.roles.get(settings_role or draft.role)
    if override is not None:
        for name, value in override.env.items():
            env[name] = value
            runtime.pop(name, None)
            if name in unset:
                unset.remove(name)
        if override.command and command_override:
            command = override.command
    return RoleLaunch(
        role=draft.role,
        nodes=draft.nodes,
        first_rank=draft.first_rank,
        gpus_per_node=draft.gpus_per_node,
        env=env,
        runtime_env=tuple(runtime.items()),
        command=command,
        unset_env=tuple(unset),
        ports=dict(draft.ports),
    )
