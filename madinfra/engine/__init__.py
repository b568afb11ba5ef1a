"""The provider-independent engine: plan pipeline, apply with state after every change, saved plans.

Providers that apply one resource at a time call :func:`madinfra.sequential.apply_sequentially`
(re-exported here) from their ``apply``; it lives in the core so providers need not import the engine.

Besides the Provider protocol (madinfra.resources), the engine looks for these optional provider
methods (with ``getattr``) and works without them:

- ``outputs(spec, live) -> dict[str, str]``: endpoints and other outputs (``show``, ``output``,
  printed after ``apply`` and kept in state);
- ``plan_warnings(changes) -> list[str]``: warnings printed under the plan;
- ``not_in_place(live, desired, path, before, after) -> str | None``: a field the rules allow in
  place that the target will not change in place for this resource (a reason; the plan then
  replaces it);
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
