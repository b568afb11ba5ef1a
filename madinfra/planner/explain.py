"""What changed inside a text that the plan compares by its digest (an sbatch script).

A SLURM job's script is compared by ``script_sha256``: the text itself is not on the cluster in a
form madinfra can read back, and diffing the whole script field by field would bury the plan. But
``script_sha256: sha256:1a… -> sha256:9f…  # forces replacement`` alone does not tell a user that
it is their ``NCCL_DEBUG`` edit that restarts training. The text madinfra last applied is in the
state; when the live job still runs that text, the plan shows the lines that differ, with
``export NAME=value`` lines spelled as environment changes. Pure: text in, lines out.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Mapping

MAX_DETAIL_LINES = 20
"""Beyond this the plan says how many more lines differ and points at ``madinfra render``."""

_EXPORT = re.compile(r"(?:^|[\s'])export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
UNKNOWN_BEFORE = "the text this resource runs now is not in the state, so its differences cannot be shown; `madinfra render` prints the new one"


def text_at(spec: Mapping[str, Any], path: str) -> str | None:
    """The string at a dotted path of a spec (``submit.script``), or None."""
    value: Any = spec
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, str) else None


def text_differences(before: str, after: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human lines for what differs between two versions of a script.

    ``export`` lines become ``env NAME: old -> new`` (or ``env NAME = new`` / ``env NAME removed``);
    other lines are shown ``- old`` / ``+ new``. Lines containing any of ``ignore`` (the digests
    themselves, which a script may carry in a comment) are not differences worth showing.
    """
    old_lines = [line for line in before.splitlines() if not _contains_any(line, ignore)]
    new_lines = [line for line in after.splitlines() if not _contains_any(line, ignore)]
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed.extend(old_lines[i1:i2])
        if tag in ("replace", "insert"):
            added.extend(new_lines[j1:j2])
    old_env = _exports(removed)
    new_env = _exports(added)
    lines: list[str] = []
    for name in sorted(set(old_env) | set(new_env)):
        if old_env.get(name) == new_env.get(name):
            continue  # a line that only moved
        if name in old_env and name in new_env:
            lines.append(f"env {name}: {old_env[name]} -> {new_env[name]}")
        elif name in new_env:
            lines.append(f"env {name} = {new_env[name]}")
        else:
            lines.append(f"env {name} removed (was {old_env[name]})")
    lines += [f"- {line.strip()}" for line in removed if _export_name(line) is None and line.strip()]
    lines += [f"+ {line.strip()}" for line in added if _export_name(line) is None and line.strip()]
    if len(lines) > MAX_DETAIL_LINES:
        more = len(lines) - MAX_DETAIL_LINES
        lines = lines[:MAX_DETAIL_LINES] + [f"... and {more} more differing line(s); `madinfra render` prints the whole new text"]
    return lines


def _contains_any(line: str, needles: tuple[str, ...]) -> bool:
    return any(needle and needle in line for needle in needles)


def _export_name(line: str) -> str | None:
    match = _EXPORT.search(line)
    return match.group(1) if match else None


def _exports(lines: list[str]) -> dict[str, str]:
    """NAME -> value as written (shell-quoted) for the ``export`` lines among ``lines``."""
    found: dict[str, str] = {}
    for line in lines:
        match = _EXPORT.search(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found
