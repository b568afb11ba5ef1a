"""One canonical spelling for SLURM values that can be written several ways.

A stack says ``time: "24:00:00"`` and ``squeue`` answers ``1-00:00:00``; a stack says
``mem: 64G`` and ``squeue`` answers ``64G`` or ``65536M``. Desired and live specs both pass
through these functions, so the planner only sees a change when the value really differs.
"""

from __future__ import annotations

import math
import re

UNLIMITED = "UNLIMITED"

_TIME_FORMS = (
    # (regex, names of the captured groups in order) following sbatch's --time grammar.
    (re.compile(r"^(?P<m>\d+)$"), "m"),
    (re.compile(r"^(?P<m>\d+):(?P<s>\d+)$"), "ms"),
    (re.compile(r"^(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"), "hms"),
    (re.compile(r"^(?P<d>\d+)-(?P<h>\d+)$"), "dh"),
    (re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)$"), "dhm"),
    (re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"), "dhms"),
)


def time_minutes(value: str) -> int | None:
    """Minutes of a SLURM time limit, ``None`` for unlimited; seconds round up as SLURM does."""
    text = value.strip().upper()
    if text in (UNLIMITED, "INFINITE"):
        return None
    for pattern, _ in _TIME_FORMS:
        match = pattern.match(text)
        if match:
            parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
            seconds = parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
            return math.ceil(seconds / 60)
    raise ValueError(f"'{value}' is not a SLURM time limit")


def elapsed_seconds(value: str) -> int | None:
    """Seconds of ``squeue``'s elapsed time (``%M``: ``0:05``, ``1:02:03``, ``2-01:02:03``);
    ``None`` when it says nothing usable."""
    text = (value or "").strip()
    for pattern, _ in _TIME_FORMS[1:]:
        match = pattern.match(text)
        if match:
            parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
            return parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    return None


def format_minutes(minutes: int | None) -> str:
    """``squeue``'s own spelling: ``HH:MM:SS``, or ``D-HH:MM:SS`` from one day on."""
    if minutes is None:
        return UNLIMITED
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{mins:02d}:00"
    return f"{hours:02d}:{mins:02d}:00"


def normalize_time(value: str) -> str:
    return format_minutes(time_minutes(value))


_MEM_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<u>[KMGT]?)B?$", re.IGNORECASE)
_MEM_FACTOR = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def mem_megabytes(value: str) -> int:
    """Megabytes of a SLURM memory size (no unit means megabytes, as for ``--mem``)."""
    match = _MEM_RE.match(value.strip())
    if not match:
        raise ValueError(f"'{value}' is not a SLURM memory size; use a number with an optional K, M, G or T suffix")
    return math.ceil(float(match["n"]) * _MEM_FACTOR[match["u"].upper()])


def format_megabytes(megabytes: int) -> str:
    """The largest unit that divides evenly: ``65536`` -> ``64G``, ``1500`` -> ``1500M``."""
    for unit, factor in (("T", 1024 * 1024), ("G", 1024)):
        if megabytes and megabytes % factor == 0:
            return f"{megabytes // factor}{unit}"
    return f"{megabytes}M"


def normalize_mem(value: str) -> str:
    return format_megabytes(mem_megabytes(value))


_GPU_RE = re.compile(r"(?:^|[,\s])(?:gres[:/])?gpu(?::[^:,=\s]+)?[:=](?P<n>\d+)", re.IGNORECASE)


def gpus_from_tres(text: str) -> int:
    """GPUs per node from ``squeue``'s TRES-per-node column (``gres:gpu:4``, ``gres/gpu:a100:2``)."""
    match = _GPU_RE.search(text or "")
    return int(match["n"]) if match else 0


_GRES_GPU_RE = re.compile(r"(?:^|,)gpu(?::[^:,(\s]+)?:(?P<n>\d+)", re.IGNORECASE)


def gpus_from_gres(text: str) -> int:
    """GPUs of one node from ``sinfo``'s GRES column, every GPU type counted: ``gpu:4``,
    ``gpu:a100:4(S:0-1)``, ``gpu:a100:2,gpu:v100:2`` (4); ``(null)`` is 0."""
    return sum(int(match["n"]) for match in _GRES_GPU_RE.finditer((text or "").strip()))
