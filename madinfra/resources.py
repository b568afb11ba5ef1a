"""Provider-neutral resources and the provider contract the engine drives.

A Resource is what a provider wants to exist (``desired``) or found on the cluster (``read``):
kind, name, a plain-dict spec, dependencies, and the kind's update rules, which tell the planner
which field changes are in place and which force a replacement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Protocol, runtime_checkable

from madinfra.config.schema import StackSpec
from madinfra.launchers.model import LaunchPlan

if TYPE_CHECKING:
    from madinfra.logs import LogLine, LogQuery


@dataclass(frozen=True)
class UpdateRules:
    """Field paths (dotted, prefixes match sub-fields) with their update behaviour.

    ``force_replace``: any change under these paths needs delete + create.
    ``server_owned``: filled or changed by the cluster; never diffed.
    ``replace_when_running``: in place while pending/not started, replace once running (SLURM).
    ``managed_fields_only``: compare only the fields madinfra sets (the desired spec's, and the
    last applied spec's so a removed field still shows); whatever else the live object carries
    belongs to the server or to other controllers (Kubernetes server-side apply semantics).
    Everything else is updated in place.
    """

    force_replace: tuple[str, ...] = ()
    server_owned: tuple[str, ...] = ()
    replace_when_running: tuple[str, ...] = ()
    unordered_lists: tuple[str, ...] = ()
    managed_fields_only: bool = False
    compared_when_unset: tuple[str, ...] = ()
    whole_fields: tuple[str, ...] = ()
    explained_by: tuple[tuple[str, str], ...] = ()
    """``(digest field, text path)`` pairs: a field compared by its digest (``script_sha256``) and
    where the spec keeps the text it digests (``submit.script``), so the plan can show which lines
    of the text changed, from the text the state recorded at the last apply."""
    """With ``managed_fields_only``: mappings (or order-free named lists) madinfra owns entirely,
    so a key the live object has and the desired spec lacks is a difference (a removed env var,
    a file gone from the scripts ConfigMap); the server never adds keys there."""
    """With ``managed_fields_only``: fields madinfra sets only sometimes and the server never
    fills in, so a live value the desired spec lacks is a difference (a node selector that was
    removed, a headless Service that became a ClusterIP one)."""


@dataclass
class Resource:
    kind: str
    name: str
    spec: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    gpus: int = 0
    workload: bool = False
    role: str | None = None
    replica: int | None = None
    """The replica number within the pool ``role`` when each replica is a resource of its own
    (a SLURM job per disaggregated pool replica); ``None`` otherwise."""
    kv_layout: str | None = None
    """A disaggregated serving pool's KV cache layout (``launchers.kv_layout.encode``): what the
    stack asks for on a desired resource, what the replica was started with on a live one
    (``None``: not a pool, or started before madinfra recorded it)."""
    provider_id: str | None = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"


ProgressCallback = Callable[[str, str], None]
"""``progress(resource_id, message)``: providers report what they are doing, engine displays it."""

ChangeAction = Literal["create", "update", "replace", "delete"]


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any
    forces_replace: bool = False
    details: tuple[str, ...] = ()
    """Lines explaining the change where before/after are digests (which env var of a script)."""


@dataclass
class Change:
    """One planned action on one resource; ``fields`` name every differing field."""

    action: ChangeAction
    resource_id: str
    desired: Resource | None
    current: Resource | None
    fields: list[FieldChange] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    drift: bool = False


RecordCallback = Callable[[Change, "Resource | None", "Exception | None"], None]
"""``record(change, live_resource_after, error)``: called once per change as soon as it is done
(or failed), so the engine can write state after every single change."""


@dataclass(frozen=True)
class ProviderOptions:
    """Everything a provider may need beyond the stack itself, mostly from CLI flags.

    ``stack_dir`` resolves relative paths in the stack file (model.scripts_dir); ``work_dir`` is
    the project's ``.madinfra`` directory (Pulumi's file backend lives under it).
    """

    stack_dir: Path = Path(".")
    work_dir: Path = Path(".madinfra")
    kubeconfig: str | None = None
    kube_context: str | None = None
    ssh_target: str | None = None
    insecure_skip_host_key_check: bool = False
    rollback: bool = True
    """When a new serving replica fails its health check, restore the pool as it was (``apply
    --no-rollback``: stop where the failure happened, as Terraform does)."""


@runtime_checkable
class Provider(Protocol):
    """What the engine needs from a target. Implementations live in ``providers/``, registered
    through the ``madinfra.providers`` entry point group and loaded only when a stack names them."""

    name: str

    def desired(self, spec: StackSpec, launch: LaunchPlan) -> list[Resource]:
        """Pure: the resources the stack should have."""

    def read(self, stack: str) -> list[Resource]:
        """Batched live read of every resource labelled with / named for the stack."""

    def update_rules(self, kind: str) -> UpdateRules:
        """How fields of a kind may change."""

    def apply(self, changes: list[Change], progress: ProgressCallback, record: RecordCallback) -> None:
        """Carry out the changes in dependency order, calling ``record`` after each one."""

    def render_files(self, resources: list[Resource]) -> dict[str, str]:
        """Pure: file name -> text of what would be deployed (manifests, sbatch scripts)."""

    def close(self) -> None:
        """Release connections."""


class LogsProvider(Protocol):
    """The optional part of a provider behind ``madinfra logs`` (``madinfra.logs`` holds the
    contract's types and helpers). Optional, so a target without it still plans and applies:
    the CLI looks it up with ``getattr`` and says in one sentence when a target has none.
    Kept out of ``Provider`` because that protocol is runtime-checkable, and every one of its
    members would become mandatory for ``isinstance``."""

    def logs(self, spec: StackSpec, desired: list[Resource], query: LogQuery) -> Iterator[LogLine]:
        """Lines of the stack's processes in time order, each with its role and rank (the node
        rank within the role; for a pool of independent replicas, the replica index); ``desired``
        is what ``desired()`` returned for ``spec``. Finished runs are read too, as long as the
        target keeps their output. With ``query.follow`` lines are yielded as they arrive, and
        the iterator ends once every process it follows has ended."""
