"""What each replica of a serving pool goes through in one plan (pure): the ``RolloutPlan``.

On Kubernetes a pool is one workload object: the disaggregated prefill/decode StatefulSets and
the multi-node vLLM Deployment (``madinfra.config.pool_roles``). Replica *i* is pod ordinal *i*
(StatefulSet) or one of the Deployment's interchangeable pods. For an in-place update of a pool:

- ``spec.replicas`` N -> M < N removes replicas M..N-1 (a StatefulSet removes its highest
  ordinals), N -> M > N adds N..M-1; replicas below min(N, M) are kept;
- a pod-template change (image, flags, env) rolls the kept replicas; otherwise they are untouched.

Surge and unavailability come from ``madinfra.rollout.choose_strategy`` with the stack's limits
(``limits_for``) and the room the cluster has now (``gpu_room``), less the replicas this plan adds
(they take free GPUs first). Apply starts added replicas and drains removed ones before the kept
ones roll, so the replicas serving during the roll are the final ``spec.replicas``. A created, deleted or replaced pool is not rolled replica by replica:
the plan's change lines and ``rollout.warnings`` describe those.
"""

from __future__ import annotations

from madinfra.config import pool_roles
from madinfra.config.schema import StackSpec
from madinfra.resources import Change
from madinfra.planner import kv_compat
from madinfra.rollout import PoolRollout, RolloutPlan, RoomFor, choose_strategy, limits_for, replace_together
from madinfra_kubernetes.objects import gpus_per_pod
from madinfra_kubernetes.rollout import is_rolling, replicas, restarts_pods


NOT_BESIDE = "a StatefulSet's new pods take the old pods' names"
"""Why both pools' new pods cannot start beside the old ones on Kubernetes (pool_together.py)."""


def pool_change(changes: list[Change], pools: tuple[str, ...]) -> dict[str, Change]:
    """Pool name -> its workload's in-place update in this plan."""
    found = {}
    for change in changes:
        resource = change.desired or change.current
        if change.action == "update" and is_rolling(change) and resource is not None and resource.role in pools:
            found[resource.role] = change
    return found


def plan_pools(spec: StackSpec, changes: list[Change], room_for: RoomFor | None, gpus_free: int | None, gpus_before: int, gpus_after: int) -> RolloutPlan:
    """The per-pool plan; ``room_for`` None means the cluster did not say (no surge)."""
    growth = max(0, gpus_after - gpus_before)
    rollouts: list[PoolRollout] = []
    surge_gpus = 0
    for pool, change in pool_change(changes, pool_roles(spec)).items():
        assert change.desired is not None
        before, after = replicas(change.current), replicas(change.desired)
        kept = min(before, after)
        rolled = tuple(range(kept)) if restarts_pods(change) else ()
        if before == after and not rolled:
            continue
        per_replica = gpus_per_pod(change.desired.spec)
        room = room_for(per_replica) if room_for is not None else None
        free = gpus_free
        if room is not None and growth and per_replica:
            room = max(0, room - -(-growth // per_replica))
            free = max(0, (gpus_free or 0) - growth)
        # Replicas serving while the kept ones roll: added ones are ready before the roll starts,
        # removed ones are drained first, so that is the final size.
        surge, unavailable, reason, no_ready = choose_strategy(pool, limits_for(spec, pool), after, len(rolled), per_replica, room, free)
        rollouts.append(
            PoolRollout(
                pool=pool,
                before=before,
                after=after,
                removed=tuple(range(after, before)),
                added=tuple(range(before, after)),
                rolled=rolled,
                untouched=tuple(i for i in range(kept) if i not in rolled),
                surge=surge,
                unavailable=unavailable,
                gpus_per_replica=per_replica,
                no_surge_reason=reason,
                no_ready=no_ready,
            )
        )
        surge_gpus = max(surge_gpus, surge * per_replica)
    if not rollouts:
        return RolloutPlan(gpus_free=gpus_free)
    planned = RolloutPlan(pools=rollouts, gpus_peak=max(gpus_before, gpus_after) + surge_gpus, gpus_free=gpus_free)
    found = kv_compat.together(changes)
    if found is None:
        return planned
    return replace_together(planned, found.pools, found.reason, gpus_before, gpus_after, not_beside=NOT_BESIDE)
