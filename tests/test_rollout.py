"""madinfra.rollout: what a plan says each serving pool goes through, replica by replica."""

from __future__ import annotations

import pytest

from madinfra.config.schema import RolloutSettings
from madinfra.errors import ProviderError
from madinfra.resources import Change, Resource
from madinfra.rollout import PoolRollout, RolloutPlan, choose_strategy, index_ranges, replica_pools, room_from_total

DEFAULTS = RolloutSettings()


def replica(pool: str, index: int, gpus: int = 4, image: str = "v1") -> Resource:
    return Resource("job", f"{pool}-{index}", {"image": image}, gpus=gpus, workload=True, role=pool, replica=index)


def test_index_ranges_collapse_consecutive_numbers() -> None:
    assert index_ranges([2, 0, 1]) == "0-2"
    assert index_ranges([0, 1, 3, 5, 6]) == "0-1,3,5-6"
    assert index_ranges([4]) == "4"
    assert index_ranges([]) == ""


def test_scale_in_names_the_removed_and_the_untouched_replicas() -> None:
    desired = [replica("decode", 0), replica("decode", 1)]
    changes = [Change("delete", "job/decode-2", None, replica("decode", 2))]
    plan = replica_pools(changes, desired, {}, gpus_free=0, gpus_before=12, gpus_after=8)
    (pool,) = plan.pools
    assert pool.lines() == ["~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)"]
    assert (pool.before, pool.after, pool.removed, pool.untouched) == (3, 2, (2,), (0, 1))
    assert plan.gpus_peak == 12 and plan.warnings() == []


def test_scale_out_names_the_added_replicas() -> None:
    desired = [replica("decode", i) for i in range(3)]
    changes = [Change("create", "job/decode-2", replica("decode", 2), None)]
    (pool,) = replica_pools(changes, desired, {}, gpus_free=100, gpus_before=8, gpus_after=12).pools
    assert pool.lines() == ["~ decode: 2 -> 3 replicas (replica 2 added; replicas 0-1 untouched)"]


def test_a_roll_surges_when_the_cluster_has_room_and_counts_the_peak() -> None:
    desired = [replica("decode", i, image="v2") for i in range(3)]
    changes = [Change("replace", f"job/decode-{i}", replica("decode", i, image="v2"), replica("decode", i)) for i in range(3)]
    plan = replica_pools(changes, desired, {}, gpus_free=8, gpus_before=12, gpus_after=12)
    (pool,) = plan.pools
    assert pool.lines() == ["-/+ decode[0..2] rolling, surge 1"]
    assert pool.batches() == [(0,), (1,), (2,)]
    assert plan.gpus_peak == 16 and plan.gpus_free == 8


def test_a_roll_without_room_goes_one_at_a_time_and_says_why() -> None:
    desired = [replica("decode", i, image="v2") for i in range(3)]
    changes = [Change("replace", f"job/decode-{i}", replica("decode", i, image="v2"), replica("decode", i)) for i in range(3)]
    (pool,) = replica_pools(changes, desired, {}, gpus_free=3, gpus_before=12, gpus_after=12).pools
    assert pool.surge == 0 and pool.unavailable == 1
    assert pool.lines() == ["-/+ decode[0..2] rolling, 1 at a time, no surge (3 GPU(s) free, no node has 4 free for a surge replica)"]


def test_room_counted_per_node_beats_the_total() -> None:
    """8 free GPUs spread 2 per node fit no 4-GPU replica: the provider's room_for says so."""
    desired = [replica("decode", i, image="v2") for i in range(2)]
    changes = [Change("replace", f"job/decode-{i}", replica("decode", i, image="v2"), replica("decode", i)) for i in range(2)]
    (pool,) = replica_pools(changes, desired, {}, gpus_free=8, gpus_before=8, gpus_after=8, room_for=lambda per: 0).pools
    assert pool.surge == 0 and pool.no_surge_reason == "8 GPU(s) free, no node has 4 free for a surge replica"


def test_growth_in_the_same_plan_takes_room_before_a_surge() -> None:
    desired = [replica("decode", i, image="v2") for i in range(3)]
    changes = [Change("replace", f"job/decode-{i}", replica("decode", i, image="v2"), replica("decode", i)) for i in range(2)]
    changes.append(Change("create", "job/decode-2", replica("decode", 2, image="v2"), None))
    (pool,) = replica_pools(changes, desired, {}, gpus_free=4, gpus_before=8, gpus_after=12).pools
    assert pool.surge == 0, "the one free slot goes to the new replica 2"
    assert pool.lines()[0] == "~ decode: 2 -> 3 replicas (replica 2 added; replicas 0-1 rolled)"


def test_the_only_replica_rolled_without_room_is_a_warning() -> None:
    desired = [replica("prefill", 0, image="v2")]
    changes = [Change("replace", "job/prefill-0", replica("prefill", 0, image="v2"), replica("prefill", 0))]
    plan = replica_pools(changes, desired, {}, gpus_free=0, gpus_before=4, gpus_after=4)
    assert plan.pools[0].no_ready
    assert plan.warnings() == [
        "prefill: rolling its only replica without a surge leaves the pool with no ready replica during apply (0 GPU(s) free, no node has 4 free for a surge replica)"
    ]


def test_max_surge_and_unavailable_set_the_batch_size() -> None:
    assert choose_strategy("decode", RolloutSettings(max_surge=2), 4, 4, 4, room=5) == (2, 0, None, False)
    assert choose_strategy("decode", RolloutSettings(max_surge=0, max_unavailable=2), 4, 4, 4, room=5) == (0, 2, None, False)
    pool = PoolRollout("decode", 4, 4, rolled=(0, 1, 2, 3), surge=2)
    assert pool.batches() == [(0, 1), (2, 3)]


def test_unavailable_never_takes_the_last_ready_replica_of_a_larger_pool() -> None:
    assert choose_strategy("decode", RolloutSettings(max_surge=0, max_unavailable=5), 3, 3, 4, room=0)[:2] == (0, 2)


def test_a_roll_that_can_neither_surge_nor_stop_a_replica_is_refused_with_the_setting_to_change() -> None:
    with pytest.raises(ProviderError, match=r"pool 'decode' cannot roll: .*max_unavailable is 0; raise roles\.decode\.rollout\.max_unavailable"):
        choose_strategy("decode", RolloutSettings(max_surge=1, max_unavailable=0), 2, 2, 4, room=0, gpus_free=0)


def test_unknown_free_gpus_mean_no_surge_and_say_so() -> None:
    assert choose_strategy("decode", DEFAULTS, 2, 2, 4, room=None)[2] == "the cluster's free GPUs are unknown"
    assert room_from_total(None)(4) is None and room_from_total(9)(4) == 2


def test_updates_in_place_are_not_rolls() -> None:
    desired = [replica("decode", i) for i in range(2)]
    changes = [Change("update", f"job/decode-{i}", replica("decode", i), replica("decode", i)) for i in range(2)]
    assert replica_pools(changes, desired, {}, gpus_free=0, gpus_before=8, gpus_after=8) == RolloutPlan(gpus_free=0)


def test_pool_json_round_trips_with_its_lines() -> None:
    pool = PoolRollout("decode", 3, 2, removed=(2,), untouched=(0, 1), gpus_per_replica=4)
    data = pool.to_json()
    assert data["lines"] == pool.lines() and data["removed"] == [2]
    assert PoolRollout.from_json(data) == pool
