"""Field-level differences between two normalised specs, computed with deepdiff.

deepdiff reports list length changes item by item (``[2] added``); for a plan that is noise, so a
list whose length changed is reported once, as the whole list before and after. Everything else is
reported at the deepest field that differs, which is what ``~ spec.replicas: 2 -> 4`` needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


from madinfra.planner.normalise import Path, canonical_json, is_item_key

_SIMPLE_KEY = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_LIST_REPORTS = ("iterable_item_added", "iterable_item_removed")


@dataclass(frozen=True)
class FieldDiff:
    """One differing field; ``ABSENT`` marks a side where the field does not exist."""

    path: Path
    before: Any
    after: Any


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def diff_specs(before: dict[str, Any], after: dict[str, Any]) -> list[FieldDiff]:
    """Differences from ``before`` to ``after`` (both already normalised), sorted by path text."""
    if canonical_json(before) == canonical_json(after):
        return []
    from deepdiff import DeepDiff  # ~150 ms to import: only plans that diff pay for it

    tree = DeepDiff(before, after, view="tree", verbose_level=2)
    whole_lists: set[Path] = set()
    for report in _LIST_REPORTS:
        for level in tree.get(report, ()):
            whole_lists.add(tuple(level.path(output_format="list"))[:-1])
    diffs: dict[Path, FieldDiff] = {}
    for path in whole_lists:
        diffs[path] = FieldDiff(path, _get(before, path), _get(after, path))
    for report, levels in tree.items():
        if report in _LIST_REPORTS:
            continue
        for level in levels:
            path = tuple(level.path(output_format="list"))
            if any(path[: len(lp)] == lp for lp in whole_lists):
                continue
            diffs[path] = FieldDiff(path, _side(level.t1), _side(level.t2))
    return sorted(diffs.values(), key=lambda d: format_path(d.path))


def flatten(spec: dict[str, Any], prefix: Path = ()) -> list[FieldDiff]:
    """Every leaf of a spec as an added field (how a create lists its attributes)."""
    out: list[FieldDiff] = []
    for key, value in spec.items():
        if key == "name" and prefix and is_item_key(prefix[-1]):
            continue  # the item key already says it: env[HF_HOME].name would repeat it
        path = prefix + (key,)
        if isinstance(value, dict) and value:
            out.extend(flatten(value, path))
        elif isinstance(value, list) and value and all(isinstance(item, dict) and item for item in value):
            for index, item in enumerate(value):  # containers[0].image, not one JSON line per list
                out.extend(flatten(item, path + (index,)))
        else:
            out.append(FieldDiff(path, ABSENT, value))
    return out


def format_path(path: Path) -> str:
    """``spec.containers[0].env[HF_HOME].value``; keys that are not plain words are quoted."""
    text = ""
    for component in path:
        if isinstance(component, int):
            text += f"[{component}]"
        elif is_item_key(component):
            text += component
        elif isinstance(component, str) and component and set(component) <= _SIMPLE_KEY:
            text += f".{component}" if text else component
        else:
            text += f"[{json.dumps(str(component))}]"
    return text


def _side(value: Any) -> Any:
    from deepdiff.helper import NotPresent

    return ABSENT if isinstance(value, NotPresent) or value is NotPresent else value


def _get(data: Any, path: Path) -> Any:
    for component in path:
        try:
            data = data[component]
        except (KeyError, IndexError, TypeError):
            return ABSENT
    return data
