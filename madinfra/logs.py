"""What ``madinfra logs`` asks a provider for and gets back: lines of a role's processes, each
with the role and rank that wrote it and (where the target records one) when.

The contract is small on purpose, so both targets answer the same question the same way:

- a provider's optional ``logs(stack, desired, query)`` returns an iterator of ``LogLine``
  already in time order (``merge`` does that for finished output; with ``follow`` the provider
  yields lines as they arrive and stops when every process it follows has ended);
- ``rank`` is the node rank a launcher gives that node's processes within its role (for a
  pool of independent replicas, the replica index), so ``--rank`` means the same on SLURM and
  Kubernetes;
- ``tail`` is per (role, rank) stream, like ``kubectl logs --tail`` per pod, applied before the
  streams are merged; ``since`` is a point in time (Unix seconds).

Everything here is pure; reading files over SSH or the pod log API is the providers' job.
"""

from __future__ import annotations

import heapq
import re
import time as _time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator

from madinfra.errors import MadinfraError


@dataclass(frozen=True)
class LogQuery:
    """Which lines the user asked for (``madinfra logs`` options)."""

    role: str | None = None
    """Only this role (``None``: every role of the stack)."""
    rank: int | None = None
    """Only this node rank / replica index (``None``: every rank)."""
    tail: int | None = None
    """At most the last N lines of each (role, rank) stream (``None``: all)."""
    since: float | None = None
    """Only lines written at or after this Unix time (``None``: from the start)."""
    follow: bool = False
    """Keep reading while the processes run; stop when they have all ended."""

    def wants(self, role: str, rank: int) -> bool:
        return (self.role is None or self.role == role) and (self.rank is None or self.rank == rank)


@dataclass(frozen=True)
class LogLine:
    """One line of output of one process group (a role's rank)."""

    role: str
    rank: int
    text: str
    time: float | None = None
    """Unix seconds the line was written, when the target records it."""
    stream: str = "stdout"
    """``stdout`` or ``stderr`` (where the target keeps them apart)."""

    @property
    def source(self) -> str:
        """``decode[1]``: how the line is prefixed on screen."""
        return f"{self.role}[{self.rank}]"

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "rank": self.rank,
            "time": self.time,
            "timestamp": format_time(self.time) if self.time is not None else None,
            "stream": self.stream,
            "text": self.text,
        }


def format_time(when: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-28T01:02:03.456Z``."""
    return datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``) or an RFC 3339 /
    ISO 8601 time (``2026-11-28T01:00:00Z``; without a zone it is UTC). Unix seconds."""
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        return (_time.time() if now is None else now) - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MadinfraError(
            f"--since {text!r} is neither a duration (90s, 10m, 2h, 1d) nor a time (2026-11-28T01:00:00Z); give one of those"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def select(lines: Iterable[LogLine], query: LogQuery) -> list[LogLine]:
    """One stream's lines (in the order written) after ``since`` and ``tail``.

    A line without a time is kept by ``since`` only when a later line of the same stream is
    kept (it was written before that one, but cannot be placed more exactly)."""
    kept = list(lines)
    if query.since is not None:
        first = next((i for i, line in enumerate(kept) if line.time is not None and line.time >= query.since), len(kept))
        kept = kept[first:]
    if query.tail is not None:
        kept = kept[-query.tail:] if query.tail > 0 else []
    return kept


def merge(streams: Iterable[Iterable[LogLine]]) -> Iterator[LogLine]:
    """Streams that are each in time order, merged into one (stable: a line without a time stays
    right after the line before it in its own stream, and ties keep role/rank order)."""
    keyed = []
    for order, stream in enumerate(streams):
        keyed.append(_keyed(stream, order))
    for _, _, _, line in heapq.merge(*keyed):
        yield line


def _keyed(stream: Iterable[LogLine], order: int) -> Iterator[tuple[float, int, int, LogLine]]:
    last = float("-inf")
    for position, line in enumerate(stream):
        if line.time is not None:
            last = line.time
        yield (last, order, position, line)
