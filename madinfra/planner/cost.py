"""What a plan costs in GPU time: what it commits, and the progress it throws away.

GPU time is the currency ML clusters are rationed in, and a plan is the moment to see it:

- **committed**: every workload the plan starts (created, replaced, or restarted by an update)
  holds its GPUs until its time limit at most: GPUs x limit. A training workload without a limit
  (a Kubernetes Job without ``activeDeadlineSeconds``) is *unbounded* and named as such.
- **per day**: long-lived serving stacks have no end; what they hold is shown per day (GPUs x
  24 h) for the whole stack after the plan.
- **thrown away**: a running training job the plan replaces or deletes loses the progress it
  made: elapsed x GPUs, one warning each. (A checkpointing job loses less; the plan cannot see
  checkpoints, so this is the upper bound.)

``cost.gpu_hour_price`` in the stack turns GPU-hours into money. Providers supply two facts:
``time_limit_hours(resource)`` (optional hook; ``None`` = no limit) and, on live resources,
``status["elapsed_seconds"]`` for running workloads. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from madinfra.resources import Change, Resource

HOURS_PER_DAY = 24
LimitOf = Callable[[Resource], "float | None"]


@dataclass(frozen=True)
class LostProgress:
    resource_id: str
    gpus: int
    elapsed_seconds: float

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.elapsed_seconds / 3600


@dataclass
class CostEstimate:
    committed_gpu_hours: float = 0.0
    unbounded: list[str] = field(default_factory=list)
    """Workloads the plan starts that have no time limit (their GPU-hours have no upper bound)."""
    serving_gpus: int = 0
    """GPUs a serving stack holds after the plan (shown per day)."""
    lost: list[LostProgress] = field(default_factory=list)
    price: float | None = None
    currency: str = "USD"

    @property
    def per_day_gpu_hours(self) -> float:
        return self.serving_gpus * HOURS_PER_DAY

    def money(self, gpu_hours: float) -> str:
        return "" if self.price is None else f" ≈ {self.price * gpu_hours:,.2f} {self.currency}"

    def lines(self) -> list[str]:
        """``Cost: ...`` lines for the human plan (empty when the plan commits nothing)."""
        out = []
        if self.serving_gpus:
            out.append(f"Cost: serving holds {self.serving_gpus} GPU(s) = {_hours(self.per_day_gpu_hours)} GPU-hours per day{self.money(self.per_day_gpu_hours)}")
        unbounded = f"{', '.join(self.unbounded)} {'has' if len(self.unbounded) == 1 else 'have'} no time limit"
        if self.committed_gpu_hours:
            text = f"Cost: commits up to {_hours(self.committed_gpu_hours)} GPU-hours (GPUs x time limit){self.money(self.committed_gpu_hours)}"
            out.append(text + (f"; no upper bound: {unbounded}" if self.unbounded else ""))
        elif self.unbounded:
            out.append(f"Cost: no upper bound on GPU-hours: {unbounded}")
        return out

    def warnings(self) -> list[str]:
        return [
            f"{lost.resource_id} has run for {_duration(lost.elapsed_seconds)} on {lost.gpus} GPU(s): this plan throws away up to "
            f"{_hours(lost.gpu_hours)} GPU-hours of its progress{self.money(lost.gpu_hours)}"
            for lost in self.lost
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "committed_gpu_hours": round(self.committed_gpu_hours, 3),
            "unbounded": list(self.unbounded),
            "serving_gpus": self.serving_gpus,
            "per_day_gpu_hours": round(self.per_day_gpu_hours, 3),
            "lost": [{"address": l.resource_id, "gpus": l.gpus, "elapsed_seconds": round(l.elapsed_seconds), "gpu_hours": round(l.gpu_hours, 3)} for l in self.lost],
            "gpu_hour_price": self.price,
            "currency": self.currency if self.price is not None else None,
        }


def estimate(
    changes: list[Change],
    gpus_after: int,
    *,
    serving: bool,
    limit_of: LimitOf | None,
    restarted: frozenset[str] = frozenset(),
    price: float | None = None,
    currency: str = "USD",
) -> CostEstimate:
    """The plan's ``CostEstimate`` (see the module docstring). ``restarted``: ids of in-place
    updates that restart their workload, as the plan's ``restarts`` already says (the provider's
    ``restarts_on_update``), so cost and restarts never disagree."""
    result = CostEstimate(price=price, currency=currency, serving_gpus=gpus_after if serving else 0)
    for change in changes:
        starts = change.action in ("create", "replace") or (change.action == "update" and change.resource_id in restarted)
        desired = change.desired
        if starts and desired is not None and desired.workload and desired.gpus and not serving:
            hours = limit_of(desired) if limit_of is not None else None
            if hours is None:
                result.unbounded.append(change.resource_id)
            else:
                result.committed_gpu_hours += desired.gpus * hours
        current = change.current
        if change.action in ("replace", "delete") and current is not None and current.workload and current.gpus and not serving:
            elapsed = current.status.get("elapsed_seconds")
            running = current.status.get("running") or str(current.status.get("state", "")).upper() == "RUNNING"
            if running and not current.status.get("finished") and isinstance(elapsed, (int, float)) and elapsed > 0:
                result.lost.append(LostProgress(change.resource_id, current.gpus, float(elapsed)))
    return result


def _hours(value: float) -> str:
    if not value % 1:
        return f"{int(value):,}"
    return f"{value:.2f}" if value < 1 else f"{value:,.1f}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{int(seconds % 60):02d}s"
