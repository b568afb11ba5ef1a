"""A KV cache layout change replaces both disaggregated pools together (issue 14 part 3)."""

from __future__ import annotations

import pytest

from madinfra.errors import MadinfraError
from madinfra.launchers import kv_layout
from madinfra.planner import plan
from madinfra.resources import Resource, UpdateRules
from madinfra.rollout import PoolRollout, RolloutPlan, replace_together


def layout(page_size: str) -> str:
    return kv_layout.encode({**kv_layout.DEFAULTS, "model": "/m", "tp": "8", "page_size": page_size})


def replica(pool: str, index: int, page_size: str | None, image: str = "v1") -> Resource:
    return Resource(
        "slurm/Job", f"{pool}-{index}", {"image": image, "page": page_size}, gpus=8, workload=True, role=pool, replica=index,
        kv_layout=layout(page_size) if page_size is not None else None,
    )


def stack(page_size: str | None, image: str = "v1", decode: int = 2) -> list[Resource]:
    proxy = Resource("slurm/Job", "proxy", {"image": image}, workload=True, role="proxy")
    return [replica("prefill", 0, page_size, image)] + [replica("decode", i, page_size, image) for i in range(decode)] + [proxy]


def rules(_: str) -> UpdateRules:
    return UpdateRules(force_replace=("image", "page"))


def test_a_layout_change_replaces_both_pools_together_and_says_why() -> None:
    result = plan(stack("32"), stack("16"), None, rules)
    assert result.warnings == [
        "prefill and decode are replaced together because their KV cache layout changes (prefill: --page-size 16 -> 32; "
        "decode: --page-size 16 -> 32): an old replica of one pool cannot hand KV cache to a new replica of the other, "
        "so the proxy stops routing while it switches from the old replicas to the new ones (the Pools lines say "
        "whether the new ones start beside the old, or only after the old ones stopped)"
    ]


def test_a_change_that_keeps_the_layout_rolls_as_before() -> None:
    assert plan(stack("16", image="v2"), stack("16"), None, rules).warnings == []


def test_an_unknown_live_layout_is_no_reason() -> None:
    """Replicas started before madinfra recorded layouts: the plan cannot tell, so rolls as before."""
    assert plan(stack("32"), stack(None), None, rules).warnings == []


def test_only_may_not_split_the_pools() -> None:
    with pytest.raises(MadinfraError) as info:
        plan(stack("32"), stack("16"), None, rules, only=["decode-0", "decode-1"])
    message = str(info.value)
    assert message.startswith("--only decode-0 decode-1 would change one disaggregated pool without the other")
    assert "also select slurm/Job/prefill-0" in message
    both = plan(stack("32"), stack("16"), None, rules, only=["decode-0", "decode-1", "prefill-0"])
    assert {c.resource_id for c in both.changes} == {"slurm/Job/decode-0", "slurm/Job/decode-1", "slurm/Job/prefill-0"}
    neither = plan(stack("32", image="v2"), stack("16"), None, rules, only=["proxy"])
    assert [c.resource_id for c in neither.changes] == ["slurm/Job/proxy"] and neither.warnings == []


def pools() -> RolloutPlan:
    return RolloutPlan(
        pools=[
            PoolRollout("prefill", 1, 1, rolled=(0,), surge=1, gpus_per_replica=8),
            PoolRollout("decode", 3, 3, rolled=(0, 1, 2), surge=1, gpus_per_replica=8),
        ],
        gpus_peak=40,
        gpus_free=16,
    )


def test_without_room_for_both_pools_beside_the_old_ones_the_old_ones_stop_first() -> None:
    together = replace_together(pools(), ("prefill", "decode"), "decode: --page-size 16 -> 32", 32, 32, room=3)
    decode = together.pool("decode")
    assert decode is not None
    assert (decode.surge, decode.unavailable, decode.batches()) == (0, 3, [(0, 1, 2)])
    assert decode.lines() == [
        "-/+ decode[0..2] replaced together with the other pool (decode: --page-size 16 -> 32); old replicas stop first: "
        "room for 3 more replica(s) now, 4 needed to start both pools beside the old ones"
    ]
    assert together.gpus_peak == 32 and together.gpus_free == 16
    assert together.warnings() == []  # the plan's own warning says it, once


def test_with_room_for_every_new_replica_they_start_beside_the_old_ones() -> None:
    together = replace_together(pools(), ("prefill", "decode"), "r", 32, 32, room=4)
    assert [(p.surge, p.unavailable, p.batches()) for p in together.pools] == [(1, 0, [(0,)]), (3, 0, [(0, 1, 2)])]
    assert together.gpus_peak == 64, "both versions' GPUs for a moment"
    assert together.pool("decode").lines() == ["-/+ decode[0..2] replaced together with the other pool (r); new replicas start beside the old ones, then the proxy switches"]
    never = replace_together(pools(), ("prefill", "decode"), "r", 32, 32, room=100, not_beside="names are reused")
    assert all(p.surge == 0 and p.no_surge_reason == "names are reused" for p in never.pools)
