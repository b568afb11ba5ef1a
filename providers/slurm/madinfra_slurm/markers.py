"""End markers: how a finished training job stays visible after it leaves ``squeue``.

A training job runs to completion and then vanishes from ``squeue`` (even before MinJobAge,
``squeue`` lists a finished job only with ``-t all``). Read as "gone", the next plan would submit
it again. So the job script of a training role traps its own exit and writes
``<stack dir>/status/<role>.<job id>``::

    exit=<exit status of the script>
    end=<UTC time, ISO 8601>
    nodes=<SLURM_JOB_NODELIST>
    workdir=<the stack directory, absolute>
    sbatch=<one #SBATCH directive of <stack dir>/<role>.sbatch, without "#SBATCH ">
    ...

The trap makes no controller round trip: everything comes from the job's environment and from
the role's script in the stack directory, which apply rewrites on every in-place ``scontrol
update`` (so its directives are the options the job ended with). A controller that is down or
slow when the job ends, or a job whose ``PATH`` has no ``squeue``, still leaves a complete marker.
Only shell builtins and ``command -p`` (the default system ``PATH``) are used.

The live read fetches these markers in the same round trip as ``squeue``; a marker for a role's
newest job makes that job live, COMPLETED (exit 0) or FAILED (exit code shown), with the spec its
directives give (``squeue.directive_row``), so an unchanged stack plans no change. Markers of older
madinfra versions carry the job's own squeue row instead (``row=``), which is still read. Apply
removes a role's markers before it submits the role again, so a marker always belongs to the
newest submission madinfra made; apply itself reads the marker of a job that ended while it
waited, to tell a crash from a success.

Only an end the script reaches by itself is recorded. A job cancelled (``scancel``), timed out or
preempted gets SIGTERM first; the trap notes that and records nothing, so such a job reads as gone
and the plan creates it again ("deleted outside madinfra"). Services get no marker at all: a
server that ends is down, and the next apply should start it again, as Kubernetes restarts a pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

STATUS_DIR = "status"
_MARKER_NAME = re.compile(r"^(?P<role>[A-Za-z0-9_-]+)\.(?P<job>\d+)$")
_SINGLE_KEYS = ("exit", "end", "row", "nodes", "workdir")
DIRECTIVE_KEY = "sbatch"

_TRAP_TEMPLATE = r"""# Record how this job ended so madinfra plan sees it finished rather than vanished.
madinfra_status="$MADINFRA_WORKDIR"/@STATUS@
madinfra_marker="$madinfra_status"/@ROLE@."$SLURM_JOB_ID"
madinfra_script="$MADINFRA_WORKDIR"/@ROLE@.sbatch
madinfra_workdir="$PWD"
madinfra_end() {
  set +e
  [ -z "${madinfra_signalled:-}" ] || return 0
  local madinfra_line
  command -p mkdir -p "$madinfra_status"
  {
    printf 'exit=%s\n' "$1"
    TZ=UTC printf 'end=%(%Y-%m-%dT%H:%M:%SZ)T\n' -1
    printf 'nodes=%s\nworkdir=%s\n' "${SLURM_JOB_NODELIST:-}" "$madinfra_workdir"
    while IFS= read -r madinfra_line || [ -n "$madinfra_line" ]; do
      case "$madinfra_line" in '#SBATCH '*) printf 'sbatch=%s\n' "${madinfra_line#'#SBATCH '}" ;; esac
    done < "$madinfra_script"
  } > "$madinfra_marker.tmp" 2>/dev/null
  command -p mv -f "$madinfra_marker.tmp" "$madinfra_marker"
}
trap 'madinfra_signalled=1; exit 143' TERM INT
trap 'madinfra_end $?' EXIT"""


def marker_glob(role: str) -> str:
    """The shell glob (relative to the stack directory) of every marker of a role."""
    return f"{STATUS_DIR}/{role}.*"


def marker_path(role: str, job_id: str) -> str:
    """The marker of one job, relative to the stack directory (apply reads it after a job ends)."""
    if not _MARKER_NAME.match(f"{role}.{job_id}"):
        raise ValueError(f"role {role!r} and job id {job_id!r} cannot name a status marker")
    return f"{STATUS_DIR}/{role}.{job_id}"


def trap_lines(role: str) -> list[str]:
    """Script lines (after ``cd "$MADINFRA_WORKDIR"``) that record the job's end.

    The marker's and the script's paths are fixed when the trap is set, before the stack's
    environment is exported, so no value of the stack can move them. ``set +e`` first: the trap
    runs under the script's ``set -e``, and nothing in it may cut the marker short. The TERM/INT
    trap turns a signal into a flag, so a cancelled job exits without a marker.
    """
    if not _MARKER_NAME.match(f"{role}.0"):
        raise ValueError(f"role name {role!r} cannot name a status marker")
    return _TRAP_TEMPLATE.replace("@STATUS@", STATUS_DIR).replace("@ROLE@", role).split("\n")


@dataclass(frozen=True)
class EndMarker:
    """One parsed marker.

    ``directives`` are the ``#SBATCH`` options of the job's script (current markers); ``row`` is
    the raw squeue line a marker of an older madinfra carries (empty otherwise)."""

    role: str
    job_id: str
    exit_code: int | None
    ended_at: str | None
    row: str
    nodes: str = ""
    workdir: str = ""
    directives: tuple[str, ...] = ()

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
    directives: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == DIRECTIVE_KEY:
            directives.append(value.rstrip("\r"))
        elif key in _SINGLE_KEYS and key not in values:
            values[key] = value
    try:
        exit_code: int | None = int(values["exit"])
    except (KeyError, ValueError):
        exit_code = None
    return EndMarker(
        match["role"],
        match["job"],
        exit_code,
        values.get("end") or None,
        values.get("row", "").strip("\r\n"),
        nodes=values.get("nodes", "").strip(),
        workdir=values.get("workdir", "").strip("\r\n"),
        directives=tuple(directives),
    )


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


def directive_options(directives: Iterable[str]) -> dict[str, str]:
    """``--key=value`` (or a bare ``--flag``, as ``""``) per option, the first one winning, as
    sbatch reads them; anything else in the script header is ignored."""
    options: dict[str, str] = {}
    for directive in directives:
        word = directive.strip()
        if not word.startswith("--"):
            continue
        key, _, value = word[2:].partition("=")
        options.setdefault(key, value)
    return options
