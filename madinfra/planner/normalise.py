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
