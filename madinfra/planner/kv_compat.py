"""A change of the disaggregated pools' KV cache layout: both pools are replaced together.

Rolling prefill and then decode (or replica by replica) is right for a change both versions
can serve through, but not when the KV cache layout changes (``launchers.kv_layout``): between
the two rolls an old prefill replica would hand its KV cache to a new decode replica, which
SGLang only notices when decode connects. So when any live replica of a pool was started with
another layout than the stack asks for, the plan:

- marks every pool's roll as one step together (``together``: the providers stop every old
  replica of both pools before any new one serves, so the proxy never routes across versions);
- says why, with the fields that change;
- refuses an ``--only`` that selects one pool's changes without the other's.

A replica whose layout is not known (started before madinfra recorded it) is not a reason:
the plan cannot tell, and rolls as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from madinfra.errors import MadinfraError
from madinfra.launchers import kv_layout
from madinfra.resources import Change


@dataclass(frozen=True)
class Together:
    """Why the pools are replaced together, and which changes that covers."""

    reason: str
    """``decode: --page-size 16 -> 32``: the layout fields that change, per pool."""
    change_ids: frozenset[str]
    """Every change that starts a pool replica (replaced, updated or added): they all happen in one step."""
    pools: tuple[str, ...]

    def sentence(self) -> str:
        return (
            f"prefill and decode are replaced together because their KV cache layout changes ({self.reason}): "
            "an old replica of one pool cannot hand KV cache to a new replica of the other, so the proxy stops routing "
            "while it switches from the old replicas to the new ones (the Pools lines say whether the new ones start "
            "beside the old, or only after the old ones stopped)"
        )


def together(changes: Iterable[Change]) -> Together | None:
    """The pools' ``Together``, or ``None`` when no pool's layout changes (or none is known)."""
    changes = list(changes)
    pool_changes = [c for c in changes if _pool(c) is not None]
    reasons: dict[str, str] = {}
    for change in pool_changes:
        before = kv_layout.decode(change.current.kv_layout) if change.current is not None else None
        after = kv_layout.decode(change.desired.kv_layout) if change.desired is not None else None
        if before is None or after is None or before == after:
            continue
        pool = _pool(change)
        assert pool is not None
        reasons.setdefault(pool, ", ".join(kv_layout.differences(before, after)))
    if not reasons:
        return None
    ids = frozenset(c.resource_id for c in pool_changes if c.action in ("create", "update", "replace"))
    pools = tuple(p for p in kv_layout.POOLS if any(_pool(c) == p for c in pool_changes))
    reason = "; ".join(f"{pool}: {reasons[pool]}" for pool in kv_layout.POOLS if pool in reasons)
    return Together(reason, ids, pools)


def _pool(change: Change) -> str | None:
    resource = change.desired or change.current
    if resource is None or resource.role not in kv_layout.POOLS:
        return None
    if resource.kv_layout is None and (change.current is None or change.current.kv_layout is None):
        return None
    return resource.role


def check_only(found: Together, kept_ids: set[str], only: tuple[str, ...]) -> None:
    """``--only`` may take both pools' changes or neither, never one pool without the other."""
    chosen = found.change_ids & kept_ids
    if chosen and chosen != found.change_ids:
        missing = sorted(found.change_ids - chosen)
        raise MadinfraError(
            f"--only {' '.join(only)} would change one disaggregated pool without the other, but {found.reason} changes "
            "their KV cache layout, so prefill and decode must be replaced together; drop --only or also select "
            f"{', '.join(missing)}"
        )
