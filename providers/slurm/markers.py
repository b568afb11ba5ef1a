"""End markers: how a finished training job stays visible after it leaves ``squeue``.

A training job runs to completion and then vanishes from ``squeue`` (after MinJobAge). Read as
"gone", the next plan would submit it again. So the job script of a training role traps its own
exit and writes ``<stack dir>/status/<role>.<job id>``::

    exit=<exit status of the script>
    end=<UTC time, ISO 8601>
    row=<the job's own squeue row, in fields.FORMAT, taken while it still runs>

The live read fetches these markers in the same round trip as ``squeue``; a marker for a role's
newest job makes that job live, COMPLETED (exit 0) or FAILED (exit code shown), with the spec its
row gives, so an unchanged stack plans no change. Apply removes a role's markers before it submits
the role again, so a marker always belongs to the newest submission madinfra made.

Only an end the script reaches by itself is recorded. A job cancelled (``scancel``), timed out or
preempted gets SIGTERM first; the trap notes that and records nothing, so such a job reads as gone
and the plan creates it again ("deleted outside madinfra"). Services get no marker at all: a
server that ends is down, and the next apply should start it again, as Kubernetes restarts a pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from providers.slurm.fields import FORMAT_SHELL

STATUS_DIR = "status"
_MARKER_NAME = re.compile(r"^(?P<role>[A-Za-z0-9_-]+)\.(?P<job>\d+)$")


def marker_glob(role: str) -> str:
    """The shell glob (relative to the stack directory) of every marker of a role."""
    return f"{STATUS_DIR}/{role}.*"


def trap_lines(role: str) -> list[str]:
    """Script lines (after ``cd "$MADINFRA_WORKDIR"``) that record the job's end.

    The marker's path is fixed when the trap is set, before the stack's environment is exported,
    so no value of the stack can move it. ``set +e`` first: the trap runs under the script's
    ``set -e``, and a failing ``squeue`` must not cut the marker short. The TERM/INT trap turns a
    signal into a flag, so a cancelled job exits without a marker.
    """
    if not _MARKER_NAME.match(f"{role}.0"):
        raise ValueError(f"role name {role!r} cannot name a status marker")
    return [
        "# Record how this job ended so madinfra plan sees it finished rather than vanished.",
        f'madinfra_status="$MADINFRA_WORKDIR"/{STATUS_DIR}',
        f'madinfra_marker="$madinfra_status"/{role}."$SLURM_JOB_ID"',
        "madinfra_end() {",
        "  set +e",
        '  [ -z "${madinfra_signalled:-}" ] || return 0',
        '  mkdir -p "$madinfra_status"',
        f"  {{ printf 'exit=%s\\nend=%s\\nrow=' \"$1\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\";"
        f" squeue -h -a -j \"$SLURM_JOB_ID\" -o {FORMAT_SHELL}; }} > \"$madinfra_marker.tmp\" 2>/dev/null",
        '  mv -f "$madinfra_marker.tmp" "$madinfra_marker"',
        "}",
        "trap 'madinfra_signalled=1; exit 143' TERM INT",
        "trap 'madinfra_end $?' EXIT",
    ]


@dataclass(frozen=True)
class EndMarker:
    """One parsed marker; ``row`` is the raw squeue line (empty when squeue failed in the trap)."""

    role: str
    job_id: str
    exit_code: int | None
    ended_at: str | None
    row: str

    @property
    def state(self) -> str:
        """``COMPLETED``, or ``FAILED (exit code N)``: the word ``show`` prints for the job."""
        if self.exit_code == 0:
            return "COMPLETED"
        code = "unknown" if self.exit_code is None else str(self.exit_code)
        return f"FAILED (exit code {code})"


def parse_marker(name: str, text: str) -> EndMarker | None:
    """A marker from its file name (``<role>.<job id>``) and text; ``None`` for anything else
    (a leftover ``.tmp`` file, a file someone put there)."""
    match = _MARKER_NAME.match(name)
    if not match:
        return None
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("exit", "end", "row") and key not in values:
            values[key] = value
    try:
        exit_code: int | None = int(values["exit"])
    except (KeyError, ValueError):
        exit_code = None
    return EndMarker(match["role"], match["job"], exit_code, values.get("end") or None, values.get("row", "").strip("\r\n"))


def parse_markers(files: Iterable[tuple[str, str]]) -> list[EndMarker]:
    """Markers among ``(path relative to the stack dir, text)`` pairs of a live read."""
    found = []
    prefix = f"{STATUS_DIR}/"
    for path, text in files:
        if path.startswith(prefix):
            marker = parse_marker(path[len(prefix):], text)
            if marker is not None:
                found.append(marker)
    return found
