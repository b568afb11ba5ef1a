"""How a serving pool changes replica by replica: the plan's per-pool lines and apply's batches.

A *pool* is a role whose replicas serve independently (a disaggregated prefill or decode pool, a
Kubernetes vLLM Deployment); a *replica* is the nodes one server spans. A plan changes a pool in
up to three ways, and the provider reports each pool as one ``PoolRollout``:

- scale-in removes the highest replicas (after the proxy stopped routing to them);
- scale-out adds replicas (the proxy routes to them once they are healthy);
- a change of image, flags or env *rolls* the kept replicas in batches: with ``surge`` a batch's
  new replicas start and pass their health check before the old ones stop (only when the
  cluster has the free GPUs for them, checked in the plan's live read); without surge up to
  ``unavailable`` replicas stop before their replacements start, never all of a pool's replicas
  unless the pool has one replica and no room for a surge (then the plan says so).

Everything here is pure: providers compute the numbers from their live read; the planner, the
renderers and the saved-plan check only carry them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable

from madinfra.config.schema import RolloutSettings, StackSpec
from madinfra.errors import ProviderError


def limits_for(spec: StackSpec, role: str) -> RolloutSettings:
    """``roles.<role>.rollout`` over ``service.rollout`` over the defaults (surge 1, unavailable 1)."""
    override = spec.roles.get(role)
    if override is not None and override.rollout is not None:
        return override.rollout
    if spec.service is not None:
        return spec.service.rollout
    return RolloutSettings()


def index_ranges(indices: Iterable[int]) -> str:
    """``0-1``, ``0-2,5``: consecutive replica numbers collapsed."""
    values = sorted(set(indices))
    parts: list[str] = []
    start = prev = None
    for value in values:
        if start is None:
            start = prev = value
        elif value == prev + 1:
            prev = value
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = value
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def _replicas_word(indices: tuple[int, ...]) -> str:
    return f"replica{'s' if len(indices) != 1 else ''} {index_ranges(indices)}"


@dataclass(frozen=True)
class PoolRollout:
    """One pool's part of a plan (see the module docstring)."""

    pool: str
    before: int
    after: int
    removed: tuple[int, ...] = ()
    added: tuple[int, ...] = ()
    rolled: tuple[int, ...] = ()
    untouched: tuple[int, ...] = ()
    surge: int = 0
    """New replicas started ahead of the old ones they replace, per batch (0: none)."""
    unavailable: int = 0
    """Old replicas stopped before their replacements start, per batch (used when ``surge`` is 0)."""
    gpus_per_replica: int = 0
    no_surge_reason: str | None = None
    """Why a rolling change gets no surge although ``max_surge`` allows one (no free GPUs)."""
    no_ready: bool = False
    """At some point of the apply the pool has no ready replica (a one-replica pool rolled
    without surge); the plan warns."""
    together: str | None = None
    """Why every rolled replica of this pool is replaced in one step together with the other
    pool (a KV cache layout change, ``planner.kv_compat``); ``None``: an ordinary roll."""

    @property
    def batch(self) -> int:
        return max(1, self.surge or self.unavailable)

    def batches(self) -> list[tuple[int, ...]]:
        """The rolled replicas in the order and groups apply changes them."""
        size = self.batch
        rolled = sorted(self.rolled)
        return [tuple(rolled[i:i + size]) for i in range(0, len(rolled), size)]

    def lines(self) -> list[str]:
        """``~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)`` and
        ``-/+ decode[0..2] rolling, surge 1``."""
        out = []
        if self.before != self.after or self.removed or self.added:
            parts = []
            if self.removed:
                parts.append(f"{_replicas_word(self.removed)} removed")
            if self.added:
                parts.append(f"{_replicas_word(self.added)} added")
            if self.rolled:
                parts.append(f"{_replicas_word(self.rolled)} rolled")
            if self.untouched:
                parts.append(f"{_replicas_word(self.untouched)} untouched")
            out.append(f"~ {self.pool}: {self.before} -> {self.after} replicas ({'; '.join(parts)})")
        if self.rolled:
            where = f"{self.pool}[{min(self.rolled)}..{max(self.rolled)}]" if len(self.rolled) > 1 else f"{self.pool}[{self.rolled[0]}]"
            if self.together:
                how = "new replicas start beside the old ones, then the proxy switches" if self.surge else "old replicas stop first"
                if not self.surge and self.no_surge_reason:
                    how += f": {self.no_surge_reason}"
                out.append(f"-/+ {where} replaced together with the other pool ({self.together}); {how}")
                return out
            if self.surge:
                how = f"rolling, surge {self.surge}"
            else:
                how = f"rolling, {self.unavailable} at a time, no surge"
                if self.no_surge_reason:
                    how += f" ({self.no_surge_reason})"
            if self.untouched and not (self.before != self.after):
                how += f"; {_replicas_word(self.untouched)} untouched"
            out.append(f"-/+ {where} {how}")
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("removed", "added", "rolled", "untouched"):
            data[key] = list(data[key])
        data["lines"] = self.lines()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolRollout:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**values)


@dataclass
class RolloutPlan:
    """What a provider says about its pools for one plan: per-pool lines and GPU headroom."""

    pools: list[PoolRollout] = field(default_factory=list)
    gpus_peak: int | None = None
    """Most GPUs the stack holds at any moment of the apply (surge replicas included)."""
    gpus_free: int | None = None
    """GPUs free now where the stack's workloads may run (``None``: the cluster did not say)."""

    def pool(self, name: str) -> PoolRollout | None:
        return next((p for p in self.pools if p.pool == name), None)

    def warnings(self) -> list[str]:
        return [
            f"{p.pool}: rolling its only replica without a surge leaves the pool with no ready replica during apply"
            + (f" ({p.no_surge_reason})" if p.no_surge_reason else "")
            for p in self.pools
            if p.no_ready and not p.together
        ]


def replace_together(
    plan: RolloutPlan, pools: Iterable[str], reason: str, gpus_before: int, gpus_after: int, room: int | None = None, not_beside: str | None = None
) -> RolloutPlan:
    """``plan`` with the rolls of ``pools`` made one step, together (``PoolRollout.together``).

    ``room``: how many more replicas fit on the cluster now. When every rolled replica of the
    pools fits beside the old ones, the new ones start first and the proxy switches from all old
    to all new at once (``surge`` = the rolled replicas: the stack holds both versions' GPUs for
    a moment); otherwise every old replica stops before any new one starts (no surge). Either
    way no replica of either pool serves for a moment, which the plan's warning says.
    ``not_beside``: why the target can never start them beside the old ones (then ``room`` is
    not asked)."""
    names = set(pools)
    rolled = sum(len(p.rolled) for p in plan.pools if p.pool in names)
    beside = not_beside is None and room is not None and rolled > 0 and room >= rolled
    changed = [
        replace(
            p,
            surge=len(p.rolled) if beside else 0,
            unavailable=0 if beside else max(1, len(p.rolled)),
            no_surge_reason=None if beside else (not_beside or _no_room_for_all(room, rolled)),
            no_ready=True,
            together=reason,
        )
        if p.pool in names and p.rolled
        else p
        for p in plan.pools
    ]
    if changed == plan.pools:
        return plan
    surge_gpus = sum(p.surge * p.gpus_per_replica for p in changed if p.together) + max((p.surge * p.gpus_per_replica for p in changed if not p.together), default=0)
    return RolloutPlan(pools=changed, gpus_peak=max(gpus_before, gpus_after) + surge_gpus, gpus_free=plan.gpus_free)


def _no_room_for_all(room: int | None, rolled: int) -> str:
    if room is None:
        return "the cluster's free GPUs are unknown"
    return f"room for {room} more replica(s) now, {rolled} needed to start both pools beside the old ones"


RoomFor = Callable[[int], "int | None"]
"""``room_for(gpus_per_replica)``: how many more replicas of that size fit on the cluster now
(each on nodes with that many free GPUs), ``None`` when the cluster did not say."""


def room_from_total(gpus_free: int | None) -> RoomFor:
    """Room counted from a total of free GPUs (a provider that knows only the total)."""
    return lambda per_replica: None if gpus_free is None else (gpus_free // per_replica if per_replica else 1 << 30)


def choose_strategy(pool: str, limits: RolloutSettings, replicas: int, rolled: int, gpus_per_replica: int, room: int | None, gpus_free: int | None = None) -> tuple[int, int, str | None, bool]:
    """``(surge, unavailable, no_surge_reason, no_ready)`` for rolling ``rolled`` of a pool's
    ``replicas`` (kept) replicas, with ``room`` more replicas fitting on the cluster now.

    Surge is preferred (no replica stops before its replacement is healthy), as far as the free
    GPUs allow; otherwise up to ``max_unavailable`` replicas go at once, but never the last
    ready one of a pool with more than one. A pool that can do neither is refused, in one
    sentence naming the setting to change.
    """
    if rolled <= 0:
        return 0, 0, None, False
    surge = min(limits.max_surge, rolled)
    reason = None
    if surge and gpus_per_replica:
        fits = room or 0
        if fits < surge:
            if room is None:
                reason = "the cluster's free GPUs are unknown"
            elif fits == 0:
                free = f"{gpus_free} GPU(s) free" if gpus_free is not None else "no free GPUs"
                reason = f"{free}, no node has {gpus_per_replica} free for a surge replica"
            surge = fits
    if surge:
        return surge, 0, None, False
    unavailable = min(limits.max_unavailable, max(replicas - 1, 0), rolled)
    if unavailable:
        return 0, unavailable, reason, False
    if replicas <= 1 and limits.max_unavailable > 0:
        return 0, 1, reason, True
    why = reason or "max_surge is 0"
    raise ProviderError(
        f"pool '{pool}' cannot roll: {why} and max_unavailable is {limits.max_unavailable}; "
        f"raise roles.{pool}.rollout.max_unavailable (or service.rollout.max_unavailable) or free GPUs for a surge replica"
    )


def replica_pools(
    changes: list[Any],
    desired: list[Any],
    limits: dict[str, RolloutSettings],
    gpus_free: int | None,
    gpus_before: int,
    gpus_after: int,
    room_for: RoomFor | None = None,
) -> RolloutPlan:
    """The ``RolloutPlan`` of a provider whose replicas are resources of their own
    (``Resource.replica`` set, ``Resource.role`` = the pool): creates are added replicas,
    deletes removed ones, replaces rolled ones; every other desired replica is untouched (an
    update in place, such as a new time limit, restarts nothing).

    Surge room is what is free now less what the plan's growth takes (a conservative bound:
    growth and rolls may happen in either order); the peak is the larger of the GPUs before and
    after, plus the largest surge batch."""
    room_for = room_from_total(gpus_free) if room_for is None else room_for
    growth = max(0, gpus_after - gpus_before)
    pools = []
    surge_gpus = 0
    for pool, entry in _replica_sets(changes, desired).items():
        if not (entry.rolled or entry.added or entry.removed):
            continue
        kept = len(entry.after - entry.added)
        room = room_for(entry.gpus)
        if room is not None and growth and entry.gpus:
            room = max(0, room - -(-growth // entry.gpus))  # replicas the plan adds take room first
        surge, unavailable, reason, no_ready = choose_strategy(pool, limits.get(pool, RolloutSettings()), kept, len(entry.rolled), entry.gpus, room, gpus_free)
        pools.append(
            PoolRollout(
                pool=pool,
                before=len((entry.after - entry.added) | entry.removed),
                after=len(entry.after),
                removed=tuple(sorted(entry.removed)),
                added=tuple(sorted(entry.added)),
                rolled=tuple(sorted(entry.rolled)),
                untouched=tuple(sorted(entry.after - entry.added - entry.rolled)),
                surge=surge,
                unavailable=unavailable,
                gpus_per_replica=entry.gpus,
                no_surge_reason=reason,
                no_ready=no_ready,
            )
        )
        surge_gpus = max(surge_gpus, surge * entry.gpus)
    if not pools:
        return RolloutPlan(gpus_free=gpus_free)
    return RolloutPlan(pools=pools, gpus_peak=max(gpus_before, gpus_after) + surge_gpus, gpus_free=gpus_free)


@dataclass
class _ReplicaSet:
    after: set[int] = field(default_factory=set)
    added: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    rolled: set[int] = field(default_factory=set)
    gpus: int = 0


def _replica_sets(changes: list[Any], desired: list[Any]) -> dict[str, _ReplicaSet]:
    found: dict[str, _ReplicaSet] = {}
    for resource in desired:
        if resource.replica is not None and resource.role is not None:
            entry = found.setdefault(resource.role, _ReplicaSet())
            entry.after.add(resource.replica)
            entry.gpus = resource.gpus
    for change in changes:
        resource = change.desired or change.current
        if resource is None or resource.replica is None or resource.role is None:
            continue
        entry = found.setdefault(resource.role, _ReplicaSet())
        entry.gpus = entry.gpus or resource.gpus
        if change.action == "create":
            entry.added.add(resource.replica)
        elif change.action == "delete":
            entry.removed.add(resource.replica)
        elif change.action == "replace":
            entry.rolled.add(resource.replica)
    return found
