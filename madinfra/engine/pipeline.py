"""The plan pipeline: stack file -> StackSpec -> LaunchPlan -> desired + live resources -> Plan.

Everything here except ``provider.read`` is pure; commands (plan, apply, destroy, show) share this
one path so that what ``plan`` prints is exactly what ``apply`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from madinfra.config.schema import StackSpec
from madinfra.errors import ConfigError, MadinfraError
from madinfra.planner import plan as make_plan
from madinfra.planner.normalise import sha256_label
from madinfra.planner.plan import Plan, RulesFor
from madinfra.resources import Provider, ProviderOptions, Resource, UpdateRules
from madinfra.secrets import Redactor
from madinfra.state.store import State, StateStore

CompileFn = Callable[[StackSpec], Any]


@dataclass
class StackContext:
    """A loaded stack and what acting on it needs; ``close`` releases the provider."""

    stack_file: Path
    spec: StackSpec
    fingerprint: str
    provider: Provider
    store: StateStore
    redactor: Redactor

    @property
    def name(self) -> str:
        return self.spec.name

    def close(self) -> None:
        self.provider.close()


def stack_fingerprint(path: Path) -> str:
    """sha256 of the stack file's bytes (a saved plan is refused when it changed)."""
    try:
        return sha256_label(Path(path).read_bytes())
    except OSError as exc:
        raise MadinfraError(f"Cannot read the stack file {path} ({exc.__class__.__name__}); check the path") from None


def work_dir_for(state_dir: Path) -> Path:
    """The project's ``.madinfra`` directory: the state dir's parent when that is ``.madinfra``
    (the default ``.madinfra/state``), else a ``.madinfra`` beside the state dir."""
    state_dir = Path(state_dir)
    parent = state_dir.parent
    return parent if parent.name == ".madinfra" else parent / ".madinfra"


def open_stack(
    stack_file: Path,
    state_dir: Path,
    options: ProviderOptions | None = None,
    provider_factory: Callable[[str, ProviderOptions], Provider] | None = None,
) -> StackContext:
    """Load the stack file, create its provider (by target name) and its state store."""
    from madinfra.config import load
    from madinfra.provider_registry import provider_for

    stack_file = Path(stack_file)
    fingerprint = stack_fingerprint(stack_file)
    spec = load(stack_file)
    base = options or ProviderOptions()
    options = ProviderOptions(
        stack_dir=stack_file.resolve().parent,
        work_dir=work_dir_for(Path(state_dir)),
        kubeconfig=base.kubeconfig,
        kube_context=base.kube_context,
        ssh_target=base.ssh_target,
        insecure_skip_host_key_check=base.insecure_skip_host_key_check,
        rollback=base.rollback,
    )
    provider = (provider_factory or provider_for)(spec.target, options)
    # Optional hook: commands that never call desired() (destroy, apply PLAN, show, output)
    # still need the provider to act for this stack (its namespace, context, Pulumi stack).
    bind = getattr(provider, "bind", None)
    if callable(bind):
        bind(spec)
    redactor = Redactor.for_spec(spec)
    return StackContext(stack_file, spec, fingerprint, provider, StateStore(state_dir, redactor), redactor)


def compile_launch(spec: StackSpec) -> Any:
    """``madinfra.launchers.compile``, imported only when a plan needs it."""
    import madinfra.launchers as launchers

    return launchers.compile(spec)


def rules_for(provider: Provider) -> RulesFor:
    """The provider's update rules, asked once per kind."""

    @lru_cache(maxsize=None)
    def cached(kind: str) -> UpdateRules:
        return provider.update_rules(kind)

    return cached


def desired_resources(spec: StackSpec, provider: Provider, compile_fn: CompileFn | None = None) -> list[Resource]:
    return provider.desired(spec, (compile_fn or compile_launch)(spec))


def compute_plan(
    spec: StackSpec,
    provider: Provider,
    state: State | None,
    *,
    stack_file: Path | None = None,
    fingerprint: str = "",
    only: Iterable[str] = (),
    destroy: bool = False,
    desired: list[Resource] | None = None,
    replace: Iterable[str] = (),
    compile_fn: CompileFn | None = None,
) -> Plan:
    """Plan the stack: ``destroy`` plans removing everything the live read finds for it.

    ``desired`` short-cuts the pure part (used to re-plan a saved plan from its own resources).
    """
    if destroy:
        desired = []
    elif desired is None:
        try:
            desired = desired_resources(spec, provider, compile_fn)
        except ConfigError as exc:
            # The launcher contracts are checked at compile: name the file, as validate does.
            raise ConfigError(str(stack_file) if stack_file is not None else exc.source, exc.problems) from None
    live = provider.read(spec.name)
    ignored = {role: list(override.ignore_changes) for role, override in spec.roles.items() if override.ignore_changes}
    kept_notes: list[str] = []
    if ignored and desired:
        from madinfra.planner.ignore import keep_live_values

        desired, kept_notes = keep_live_values(desired, live, ignored, str(stack_file) if stack_file is not None else f"stack '{spec.name}'")
    result = make_plan(
        desired,
        live,
        state.resources if state is not None else None,
        rules_for(provider),
        stack=spec.name,
        only=only,
        restarts_on_update=getattr(provider, "restarts_on_update", None),
        stack_fingerprint=fingerprint,
        replace=() if destroy else replace,
        finished_and_gone=getattr(provider, "finished_and_gone", None),
        not_in_place=getattr(provider, "not_in_place", None),
    )
    result.notes.extend(kept_notes)
    if not destroy:
        from madinfra.launchers.ray_cluster import unmanaged_heads

        result.warnings.extend(unmanaged_heads(spec))
    result.stack_file = str(Path(stack_file).resolve()) if stack_file is not None else None
    result.target = spec.target
    result.destroy = destroy
    rollouts = getattr(provider, "plan_rollouts", None)
    if callable(rollouts):
        pools = rollouts(result.changes, result.gpus_before, result.gpus_after)
        result.rollouts = list(pools.pools)
        result.gpus_peak = pools.gpus_peak
        result.gpus_free = pools.gpus_free
        result.warnings.extend(pools.warnings())
    warn = getattr(provider, "plan_warnings", None)
    if callable(warn):
        result.warnings.extend(warn(result.changes))
    note = getattr(provider, "plan_notes", None)
    if callable(note):
        result.notes.extend(note(result.changes))
    result.cost = _cost(spec, provider, result)
    result.warnings.extend(result.cost.warnings())
    return result


def _cost(spec: StackSpec, provider: Provider, plan: Plan) -> Any:
    from madinfra.planner.cost import estimate

    price = spec.cost.gpu_hour_price if spec.cost is not None else None
    currency = spec.cost.currency if spec.cost is not None else "USD"
    serving = spec.is_service and not plan.destroy
    restarted = frozenset(r.resource_id for r in plan.restarts if r.action == "update")
    return estimate(plan.changes, plan.gpus_after, serving=serving, limit_of=getattr(provider, "time_limit_hours", None), restarted=restarted, price=price, currency=currency)


def collect_outputs(provider: Provider, spec: StackSpec, live: list[Resource]) -> dict[str, str] | None:
    """Outputs (endpoints ...) from the provider's optional ``outputs(spec, live)``; ``None`` if it
    has none."""
    outputs = getattr(provider, "outputs", None)
    if not callable(outputs):
        return None
    return {str(k): str(v) for k, v in (outputs(spec, live) or {}).items()}
