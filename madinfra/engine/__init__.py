"""The provider-independent engine: plan pipeline, apply with state after every change, saved plans.

Providers that apply one resource at a time call :func:`apply_sequentially` from their ``apply``.

Besides the Provider protocol (madinfra.resources), the engine looks for these optional provider
methods (with ``getattr``) and works without them:

- ``outputs(spec, live) -> dict[str, str]``: endpoints and other outputs (``show``, ``output``,
  printed after ``apply`` and kept in state);
- ``plan_warnings(changes) -> list[str]``: warnings printed under the plan;
- ``restarts_on_update(change) -> bool``: an in-place update restarts a workload (listed under
  "Workloads that will restart"; replacements and deletes of workloads always are).
"""

from madinfra.sequential import (
    ChangeSkipped,
    CreateFn,
    DeleteFn,
    ReplaceIncomplete,
    SequentialResult,
    UpdateFn,
    apply_sequentially,
)

__all__ = [
    "ChangeSkipped",
    "CreateFn",
    "DeleteFn",
    "ReplaceIncomplete",
    "SequentialResult",
    "UpdateFn",
    "apply_sequentially",
]
