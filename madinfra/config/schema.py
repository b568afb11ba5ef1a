"""The resolved stack model (after preset layering).

These models are strict on purpose: a typo such as ``nnode`` or a string where a number belongs
must fail at ``validate`` time with the field path, not deep inside a provider. madengine's
documented keys are accepted so its additional-context JSON loads as-is; keys starting with ``_``
(madengine's inline comments) are dropped before validation by the loader.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LAUNCHERS: tuple[str, ...] = (
    "torchrun",
    "deepspeed",
    "megatron",
    "torchtitan",
    "primus",
    "vllm",
    "sglang",
    "sglang-disagg",
)
"""Canonical launcher names, in the order madengine lists them."""

REFUSED_LAUNCHERS: dict[str, str] = {
    "slurm_multi": (
        "'slurm_multi' runs a model's own .slurm script through madengine's wrapper, which is hardcoded to one "
        "cluster's layout and is not supported by madinfra; set distributed.launcher to the framework the "
        "script starts (torchrun, deepspeed, megatron, torchtitan, primus, vllm, sglang or sglang-disagg), "
        "or remove it to run model.script as-is on every node with NNODES, NODE_RANK and MASTER_ADDR set"
    ),
}
"""madengine launcher names madinfra refuses, with the one sentence ``validate`` reports."""

LAUNCHER_ALIASES: dict[str, str] = {
    "megatron-lm": "megatron",
    "megatron_lm": "megatron",
    "sglang_disagg": "sglang-disagg",
    "slurm-multi": "slurm_multi",
}

INFERENCE_LAUNCHERS = frozenset({"vllm", "sglang", "sglang-disagg"})

STACK_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
SLURM_TIME_RE = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$|^\d+$|^(UNLIMITED|INFINITE)$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Lenient(BaseModel):
    """Sections madengine documents but madinfra does not act on: accepted and carried along."""

    model_config = ConfigDict(extra="allow", frozen=True)


class SglangDisaggSpec(Strict):
    prefill_nodes: int | None = None
    decode_nodes: int | None = None


class PrimusSpec(Strict):
    """``distributed.primus``: what madengine's Primus launcher reads (all optional)."""

    config_path: str | None = None
    cli_extra: str | None = None
    backend: str | None = None


class DistributedSpec(Strict):
    launcher: str | None = None
    nnodes: int = 1
    nproc_per_node: int = 1
    master_port: int = 29500
    backend: str = "nccl"
    enabled: bool | None = None
    vllm_backend: Literal["auto", "ray", "none"] | None = Field(
        default=None, description="Override VLLM_DISTRIBUTED_BACKEND; default follows the guide."
    )
    sglang_disagg: SglangDisaggSpec | None = None
    vllm_disagg: dict[str, Any] | None = None
    primus: PrimusSpec | None = None


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


class K8sSecrets(Strict):
    strategy: Literal["from_local_credentials", "existing", "omit"] = "from_local_credentials"
    image_pull_secret_names: list[str] = Field(default_factory=list)
    runtime_secret_name: str | None = None


class K8sSpec(Strict):
    kubeconfig: str = "~/.kube/config"
    context: str | None = None
    namespace: str = "default"
    create_namespace: bool = False
    gpu_resource_name: str = "amd.com/gpu"
    gpu_count: int = 1
    memory: str = "128Gi"
    memory_limit: str = "256Gi"
    cpu: str = "32"
    cpu_limit: str = "64"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "Always"
    backoff_limit: int = 3
    ttl_seconds_after_finished: int | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    allow_privileged_profiling: bool | None = None
    host_ipc: bool | None = None
    shm_size: str = "16Gi"
    storage_class: str | None = None
    nfs_storage_class: str | None = None
    data_storage_class: str | None = None
    single_node_results_storage_class: str | None = None
    local_path_storage_class: str | None = None
    multi_node_results_storage_class: str | None = None
    results_storage_size: str = "10Gi"
    data_storage_size: str = "100Gi"
    results_pvc: str | None = None
    data_pvc: str | None = None
    recreate_shared_data_pvc: bool = False
    secrets: K8sSecrets = K8sSecrets()
    service_account: str | None = None
    output_dir: str = "./k8s_manifests"
    ready_timeout: int = 600
    cluster_domain: str = Field("cluster.local", pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
    """The cluster's DNS domain (kubelet --cluster-domain), in every pod's peer addresses."""


CONTAINER_RUNTIMES: tuple[str, ...] = ("pyxis", "apptainer", "singularity", "podman", "none")
"""``slurm.container.runtime`` values; ``singularity`` is apptainer's former name (and binary)."""


class SlurmContainerSpec(Strict):
    """``slurm.container``: which runtime runs ``model.image`` on the nodes, and what it mounts.

    madengine always runs the image (in Docker); SLURM clusters run images through Pyxis/enroot
    (``srun --container-image``) or apptainer, so the runtime is named here. ``runtime`` unset
    means "none" when there is no image; with an image it must be chosen (``validate`` says so),
    since guessing a runtime the cluster lacks would fail every job. ``mounts`` adds
    ``SRC[:DST[:ro|rw]]`` to the paths madinfra mounts itself (the stack's directory, results,
    model path, shared workspace and data); ``options`` are extra arguments for the runtime
    (srun for pyxis, ``apptainer exec``, ``podman run``).
    """

    runtime: Literal["pyxis", "apptainer", "singularity", "podman", "none"] | None = None
    mounts: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)


class SlurmSpec(Strict):
    partition: str = "amd-rccl"
    nodes: int = 1
    gpus_per_node: int = 8
    time: str = "24:00:00"
    output_dir: str = "./slurm_results"
    exclusive: bool = True
    modules: list[str] = Field(default_factory=list)
    nodelist: str | None = None
    exclude: str | None = None
    constraint: str | None = None
    qos: str | None = None
    account: str | None = None
    reservation: str | None = None
    mem: str | None = None
    network_interface: str | None = None
    shared_workspace: str | None = None
    results_dir: str | None = None
    mail_user: str | None = None
    mail_type: str | None = None
    enable_node_check: bool = True
    auto_cleanup_nodes: bool = False
    allow_submit_without_clean_nodes: bool = False
    verbose_node_check: bool = False
    remote_dir: str = "~/.madinfra"
    ready_timeout: int = 300
    container: SlurmContainerSpec = SlurmContainerSpec()

    @field_validator("container", mode="before")
    @classmethod
    def _container_shorthand(cls, value: Any) -> Any:
        """``container: pyxis`` is short for ``container: {runtime: pyxis}``."""
        return {"runtime": value} if isinstance(value, str) else value

    @field_validator("time")
    @classmethod
    def _time_format(cls, value: str) -> str:
        if not SLURM_TIME_RE.match(value):
            raise ValueError(
                f"'{value}' is not a SLURM time limit; use HH:MM:SS, D-HH:MM:SS or minutes"
            )
        return value


class ModelSpec(Strict):
    """What runs: madengine takes this from its build manifest; madinfra names it in the stack."""

    name: str | None = None
    image: str | None = None
    script: str | None = None
    args: list[str] = Field(default_factory=list)
    scripts_dir: str | None = None
    model_path: str | None = None


class HealthCheck(Strict):
    http_path: str | None = "/health"
    command: str | None = None
    timeout: int = 600


class RolloutSettings(Strict):
    """How a serving pool rolls a change replica by replica (LeaderWorkerSet's and Deployments'
    maxSurge / maxUnavailable, as replica counts): ``max_surge`` new replicas may start ahead of
    the old ones when the cluster has the free GPUs; otherwise up to ``max_unavailable`` old
    replicas stop first, never the last ready one of a pool."""

    max_surge: int = Field(1, ge=0)
    max_unavailable: int = Field(1, ge=0)


class ServiceSpec(Strict):
    """Long-lived inference stacks declare their endpoint and how to tell they are healthy."""

    port: int | None = None
    api_path: str = "/v1"
    health_check: HealthCheck = HealthCheck()
    rollout: RolloutSettings = RolloutSettings()


class RoleOverride(Strict):
    """Replace or extend what a launcher runs for one role (e.g. a stand-in server in tests)."""

    command: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    rollout: RolloutSettings | None = None
    ignore_changes: list[str] = Field(default_factory=list)
    """Field paths of this role's resources that something else owns once they run (an
    autoscaler's ``spec.replicas``, an operator's ``time``): madinfra creates them, then keeps
    the live value (``planner.ignore``)."""


class SecretSource(Strict):
    """A secret environment value: taken from the operator's environment, never written in clear."""

    from_env: str | None = None
    value: str | None = None


class CostSpec(Strict):
    """Turns the plan's GPU-hours into money (``madinfra.planner.cost``)."""

    gpu_hour_price: float = Field(ge=0)
    currency: str = Field("USD", pattern=r"^[A-Za-z$€£¥]{1,8}$")


class StackSpec(Strict):
    name: str
    target: Literal["k8s", "slurm"]
    gpu_vendor: Literal["AMD", "NVIDIA"] = "AMD"
    guest_os: Literal["UBUNTU", "CENTOS"] = "UBUNTU"
    model: ModelSpec = ModelSpec()
    distributed: DistributedSpec = DistributedSpec()
    env_vars: dict[str, str] = Field(default_factory=dict)
    docker_env_vars: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, SecretSource] = Field(default_factory=dict)
    k8s: K8sSpec | None = None
    slurm: SlurmSpec | None = None
    service: ServiceSpec | None = None
    roles: dict[str, RoleOverride] = Field(default_factory=dict)
    debug: bool = False
    tools: list[dict[str, Any]] = Field(default_factory=list)
    pre_scripts: list[dict[str, Any]] = Field(default_factory=list)
    post_scripts: list[dict[str, Any]] = Field(default_factory=list)
    shared_data: str | None = None
    cost: CostSpec | None = None

    @property
    def launcher(self) -> str | None:
        return self.distributed.launcher

    @property
    def is_service(self) -> bool:
        return self.distributed.launcher in INFERENCE_LAUNCHERS

    @property
    def gpus_per_node(self) -> int:
        if self.target == "k8s":
            assert self.k8s is not None
            return self.k8s.gpu_count
        assert self.slurm is not None
        return self.slurm.gpus_per_node

    @property
    def model_name(self) -> str:
        return self.model.name or self.name
