"""Planning: compare desired resources with live ones (and state, for drift) into a Plan. Pure."""

from madinfra.planner.diff import FieldDiff, diff_specs, format_path
from madinfra.planner.normalise import canonical_json, normalise, sha256_label, spec_hash
from madinfra.planner.order import order_changes, select, topological
from madinfra.planner.plan import (
    CHANGED_OUTSIDE,
    DELETED_OUTSIDE,
    SYMBOLS,
    Plan,
    Restart,
    is_running,
    live_fingerprint,
    plan,
)

__all__ = [
    "CHANGED_OUTSIDE",
    "DELETED_OUTSIDE",
    "SYMBOLS",
    "FieldDiff",
    "Plan",
    "Restart",
    "canonical_json",
    "diff_specs",
    "format_path",
    "is_running",
    "live_fingerprint",
    "normalise",
    "order_changes",
    "plan",
    "select",
    "sha256_label",
    "spec_hash",
    "topological",
]
