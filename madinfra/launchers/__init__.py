"""Launchers: compile a resolved stack into per-role environment and commands (pure).

``compile(spec)`` is the only entry point the rest of madinfra needs; providers turn the
resulting LaunchPlan into workloads, the planner diffs what they produce.
"""

from __future__ import annotations

from madinfra.config.schema import StackSpec
from madinfra.errors import ConfigError
from madinfra.launchers import contracts
from madinfra.launchers.common import LaunchContext
from madinfra.launchers.model import LaunchPlan, RoleLaunch
from madinfra.launchers.registry import lookup

__all__ = ["LaunchPlan", "RoleLaunch", "compile"]


def compile(spec: StackSpec) -> LaunchPlan:  # noqa: A001 - the name the design uses
    """Compile ``spec`` for its target; raises MadinfraError for what only compile can detect."""
    compiler = lookup(spec.distributed.launcher)
    ctx = LaunchContext.of(spec)
    plan = LaunchPlan(
        stack=spec.name,
        target=spec.target,
        launcher=spec.distributed.launcher,
        workload=compiler.workload,
        nnodes=ctx.nnodes,
        nproc_per_node=ctx.nproc,
        master_port=ctx.port,
        roles=tuple(compiler.roles(ctx)),
        service_port=compiler.service_port(ctx) if compiler.service_port else None,
        topology_env=compiler.topology(ctx) if compiler.topology else {},
    )
    problems = contracts.problems(spec, plan)
    if problems:
        raise ConfigError(f"stack '{spec.name}'", problems)
    return plan
