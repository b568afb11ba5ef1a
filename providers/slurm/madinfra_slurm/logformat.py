"""How a job's output files are written (the job script's lines) and read back (pure).

Every job step runs as ``madinfra_step srun --label ...``. srun's ``--label`` puts the task id
before each line (``0: ``; one task per node, so the node's rank within the job), and
``madinfra_step`` passes the step's stdout and stderr, each on its own, through
``madinfra_stamp``, a bash loop in the batch script that puts the UTC time before the line. The
files sbatch writes (``logs/<job name>_<job id>.out|.err``) then read::

    # madinfra log format 1: <UTC time> <task>: <line of that task>; `madinfra logs` merges them by time
    2026-11-28T01:02:03.456789Z 0: step 1 loss 2.31
    2026-11-28T01:02:03.470112Z 1: step 1 loss 2.29
    2026-11-28T01:02:04.002931Z srun: error: node2: task 1: Exited with exit code 3

Why it is done this way:

- The stamp is taken where srun collects the tasks' output (the batch step), so every rank's
  lines are timed by one clock: merging them never depends on how far the nodes' clocks drift.
  Nothing runs inside the tasks or their container images, and the step's exit status is
  srun's (``pipefail``), so ``set -e``, ``--kill-on-bad-exit`` and the end marker see what they
  saw before.
- Only bash builtins: ``$EPOCHREALTIME`` (bash 5) for microseconds and ``TZ=UTC printf
  '%(...)T'`` for the date (no ``export`` line, so the plan's script diff does not read it as a
  change of the job's environment); an older bash stamps whole seconds. No python, gawk or
  moreutils on nodes.
- The header line says which format the file is in, so the reader never guesses from what a
  program printed: in a file without it (a job of an older madinfra) every line is the
  program's own text, with no time and rank 0.
- A line with the stamp but no label is srun's own message (or the batch script's); srun names
  the task in ``task N:`` when it has one, else it is counted as rank 0, the batch step's node.

The loop reads byte by byte (bash ``read`` on a pipe): about 15,000 lines (1.5 MB) a second on
the 2-core development machine, plenty for training and serving logs. A program that writes
faster is slowed to that pace, and a line is stamped when the loop reads it, so under such a
burst its time can be late by the backlog.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

STEP = "madinfra_step"
"""The batch-script function every job step (``srun``) runs under."""
HEADER = "# madinfra log format 1: <UTC time> <task>: <line of that task>; `madinfra logs` merges them by time"
HEADER_PREFIX = "# madinfra log format 1:"

_SCRIPT = r"""# Output of every step: "<UTC time> <task>: <line>" (madinfra_slurm/logformat.py; madinfra logs reads it).
madinfra_stamp() {
  while IFS= read -r madinfra_line || [ -n "$madinfra_line" ]; do
    madinfra_now=${EPOCHREALTIME:-}
    if [ -n "$madinfra_now" ]; then
      TZ=UTC printf '%(%Y-%m-%dT%H:%M:%S)T.%sZ %s\n' "${madinfra_now%[.,]*}" "${madinfra_now#*[.,]}" "$madinfra_line"
    else
      TZ=UTC printf '%(%Y-%m-%dT%H:%M:%S)TZ %s\n' -1 "$madinfra_line"
    fi
  done
}
madinfra_step() {
  { "$@" 2>&1 1>&3 3>&- | madinfra_stamp >&2 3>&-; } 3>&1 | madinfra_stamp
}
printf '%s\n' '@HEADER@'
printf '%s\n' '@HEADER@' >&2"""


def script_lines() -> list[str]:
    """The batch-script lines that define ``madinfra_step`` and write the header to both files
    (before the first step; part of ``script_sha256`` like the rest of the body)."""
    return _SCRIPT.replace("@HEADER@", HEADER).split("\n")


@dataclass(frozen=True)
class RawLine:
    """One line of an output file: the task that wrote it (``None``: no label, see the module
    docstring), when (``None``: not stamped), and the program's text."""

    task: int | None
    time: float | None
    text: str


_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?Z ")
_LABEL = re.compile(r" *(\d+): ?")
_SRUN_TASK = re.compile(r"srun: .*?\btasks? (\d+)\b")


def is_header(line: str) -> bool:
    return line.startswith(HEADER_PREFIX)


def parse_line(line: str, stamped: bool) -> RawLine:
    """One line (without its newline) of a file with (``stamped``) or without the header."""
    if not stamped:
        return RawLine(None, None, line)
    match = _STAMP.match(line)
    if match is None:
        return RawLine(None, None, line)
    year, month, day, hour, minute, second, fraction = match.groups()
    when = float(calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0)))
    if fraction:
        when += int(fraction) / 10 ** len(fraction)
    rest = line[match.end():]
    label = _LABEL.match(rest)
    if label is not None:
        return RawLine(int(label.group(1)), when, rest[label.end():])
    srun = _SRUN_TASK.match(rest)
    return RawLine(int(srun.group(1)) if srun else None, when, rest)


class Reader:
    """One output file's bytes, fed as they arrive, back as lines.

    Only complete lines come out until ``final`` (the job has ended, or the file is read once,
    as it is): a line still being written is kept until its newline arrives. Lines are decoded
    whole, so a UTF-8 character split between two reads is never broken. Whether the file has
    the header is decided by its first line."""

    def __init__(self) -> None:
        self.pending = b""
        self.stamped: bool | None = None

    def feed(self, data: bytes, final: bool = False) -> list[RawLine]:
        data = self.pending + data
        cut = len(data) if final else data.rfind(b"\n") + 1
        complete, self.pending = data[:cut], data[cut:]
        texts = complete.decode("utf-8", "replace").split("\n")
        if texts[-1] == "":
            texts.pop()
        lines = []
        for text in texts:
            if self.stamped is None:
                self.stamped = is_header(text)
                if self.stamped:
                    continue
            lines.append(parse_line(text, self.stamped))
        return lines
