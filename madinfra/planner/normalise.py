"""Bring a resource spec into the one shape that is compared, hashed and fingerprinted.

Desired specs come from a provider's pure ``desired``; live specs come back from the cluster with
defaults filled in, fields the server owns, lists in whatever order the API returns, and ``None``
where the desired spec simply has no key. Comparing raw dicts would show all of that as changes;
normalising first means a plan only lists what the user actually changed.

Rules:
- fields under a rule's ``server_owned`` paths are dropped;
- ``None`` values and empty mappings/lists are dropped (missing, ``None`` and ``{}`` mean the same);
- lists named ``env`` and lists under ``unordered_lists`` are order-free: lists of mappings with
  unique ``name`` keys become a mapping keyed ``"[<name>]"`` (so a diff names the variable, not
  an index), other such lists are sorted.

Paths in rules are dotted mapping keys without list indices (``spec.template.spec.containers``),
and a rule matches every field under it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

from madinfra.resources import UpdateRules

Path = tuple[Any, ...]
"""A field's location: mapping keys (str), list indices (int) and keyed list items ("[name]")."""

ORDER_FREE_KEYS = frozenset({"env"})


def is_item_key(component: Any) -> bool:
    """True for the ``"[name]"`` keys normalisation gives the items of order-free named lists."""
    return isinstance(component, str) and len(component) > 2 and component[0] == "[" and component[-1] == "]"


def rule_path(path: Iterable[Any]) -> tuple[str, ...]:
    """The part of a field path rules are written against: mapping keys only."""
    return tuple(c for c in path if isinstance(c, str) and not is_item_key(c))


def matches(path: Iterable[Any], rules: Iterable[str]) -> bool:
    """Whether a field is at or under one of the dotted rule paths."""
    keys = rule_path(path)
    for rule in rules:
        parts = tuple(rule.split("."))
        if keys[: len(parts)] == parts:
            return True
    return False


def overlaps(path: Iterable[Any], rules: Iterable[str]) -> bool:
    """Whether a changed field is under a rule path or contains one (a whole sub-tree changed)."""
    keys = rule_path(path)
    for rule in rules:
        parts = tuple(rule.split("."))
        n = min(len(parts), len(keys))
        if keys[:n] == parts[:n]:
            return True
    return False


def normalise(spec: dict[str, Any], rules: UpdateRules | None = None) -> dict[str, Any]:
    """The comparable form of a spec (a new structure; the input is not modified)."""
    rules = rules or UpdateRules()
    result = _walk(spec, (), rules)
    return result if isinstance(result, dict) else {}


def _walk(value: Any, keys: tuple[str, ...], rules: UpdateRules) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            child = keys + (key,) if isinstance(key, str) else keys + (str(key),)
            if rules.server_owned and matches(child, rules.server_owned):
                continue
            walked = _walk(item, child, rules)
            if not _is_empty(walked):
                out[key] = walked
        return out
    if isinstance(value, (list, tuple)):
        items = [_walk(item, keys, rules) for item in value]
        if _order_free(keys, rules):
            return _without_order(items)
        return items
    return value


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (dict, list)) and not value)


def _order_free(keys: tuple[str, ...], rules: UpdateRules) -> bool:
    if keys and keys[-1] in ORDER_FREE_KEYS:
        return True
    return bool(rules.unordered_lists) and any(tuple(r.split(".")) == keys for r in rules.unordered_lists)


def _without_order(items: list[Any]) -> Any:
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if items and len(names) == len(items) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
        return {f"[{name}]": item for name, item in sorted(zip(names, items, strict=True), key=lambda pair: pair[0])}
    return sorted(items, key=canonical_json)


def merge_shapes(first: Any, second: Any) -> Any:
    """The union of two normalised specs' fields (values are irrelevant, only where fields are)."""
    if isinstance(first, dict) and isinstance(second, dict):
        merged = dict(first)
        for key, value in second.items():
            merged[key] = merge_shapes(first[key], value) if key in first else value
        return merged
    if isinstance(first, list) and isinstance(second, list):
        longer, shorter = (first, second) if len(first) >= len(second) else (second, first)
        return [merge_shapes(a, b) for a, b in zip(longer, shorter)] + longer[len(shorter) :]
    return first if first is not None else second


def prune_to_shape(live: Any, shape: Any, whole: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> Any:
    """``live`` without the fields ``shape`` does not have.

    Mappings keep only the keys of ``shape`` (so labels or defaults the server added are not
    differences), except mappings at a ``whole`` path, which keep every key; lists of mappings
    are pruned item by item, and items beyond ``shape``'s length are kept whole, so an added item
    still shows; every other value is compared as it is.
    """
    if isinstance(live, dict) and isinstance(shape, dict):
        keep_all = any(tuple(w.split(".")) == keys for w in whole)
        out = {}
        for key, value in live.items():
            child = keys if is_item_key(key) else keys + (key,)
            if key in shape:
                out[key] = prune_to_shape(value, shape[key], whole, child)
            elif keep_all:
                out[key] = value
        return out
    if isinstance(live, list) and isinstance(shape, list) and any(isinstance(item, dict) for item in live):
        return [prune_to_shape(item, shape[i], whole, keys) if i < len(shape) else item for i, item in enumerate(live)]
    return live


def with_unset_fields(shape: Any, live: Any, paths: tuple[str, ...]) -> Any:
    """``shape`` plus the fields at ``paths`` that ``live`` has (through lists item by item)."""
    for path in paths:
        shape = _add_path(shape, live, path.split("."))
    return shape


def _add_path(shape: Any, live: Any, parts: list[str]) -> Any:
    if isinstance(shape, list) and isinstance(live, list):
        return [_add_path(s, l, parts) for s, l in zip(shape, live)] + shape[len(live) :]
    if not isinstance(shape, dict) or not isinstance(live, dict) or parts[0] not in live:
        return shape
    key = parts[0]
    if len(parts) == 1:
        return shape if key in shape else {**shape, key: live[key]}
    if key not in shape:
        return shape
    return {**shape, key: _add_path(shape[key], live[key], parts[1:])}


def comparable_live(live: dict[str, Any], desired: dict[str, Any], applied: dict[str, Any] | None, rules: UpdateRules) -> dict[str, Any]:
    """The normalised live spec as the planner compares it with the normalised ``desired``."""
    live_norm = normalise(live, rules)
    if not rules.managed_fields_only:
        return live_norm
    shape = normalise(desired, rules)
    if applied is not None:
        shape = merge_shapes(shape, normalise(applied, rules))
    shape = with_unset_fields(shape, live_norm, rules.compared_when_unset)
    pruned = prune_to_shape(live_norm, shape, rules.whole_fields)
    return pruned if isinstance(pruned, dict) else {}


def canonical_json(value: Any) -> str:
    """Deterministic JSON text (sorted keys, no spaces); non-JSON scalars fall back to ``str``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def sha256_label(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def spec_hash(spec: dict[str, Any], rules: UpdateRules | None = None) -> str:
    """Hash of the normalised spec: equal hashes mean the planner sees no difference."""
    return sha256_label(canonical_json(normalise(spec, rules)))
