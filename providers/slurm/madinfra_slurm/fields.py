"""The ``squeue -o`` format madinfra reads jobs with.

Used by the live read and by apply (``squeue.py``). End markers written by older madinfra
versions carry the job's own ``squeue`` row in this format (current ones carry its ``#SBATCH``
directives instead, ``markers.py``), so such a job still reads back as it did while queued.
"""

from __future__ import annotations

FIELDS: tuple[tuple[str, str], ...] = (
    ("job_id", "%i"),
    ("name", "%j"),
    ("state", "%T"),
    ("time", "%l"),
    ("nodes", "%D"),
    ("nodelist", "%N"),
    ("partition", "%P"),
    ("tres_per_node", "%b"),
    ("reason", "%r"),
    ("oversubscribe", "%h"),
    ("qos", "%q"),
    ("account", "%a"),
    ("constraint", "%f"),
    ("req_nodes", "%n"),
    ("exc_nodes", "%x"),
    ("reservation", "%v"),
    ("mem", "%m"),
    ("workdir", "%Z"),
    ("elapsed", "%M"),
    ("comment", "%k"),
)
LEGACY_FIELDS = tuple(field for field in FIELDS if field[0] != "elapsed")
"""The fields of an older madinfra's end marker row (``|``-separated, no elapsed time)."""
SEPARATOR = "\x1f"
"""ASCII unit separator between fields. ``|`` was used first, but it is legal inside a field
(Slurm's OR constraint ``a|b``, a path, a comment) and shifted every field after it."""
LEGACY_SEPARATOR = "|"
"""End markers written by older madinfra versions still use it; the comment is then last."""
FORMAT = SEPARATOR.join(code for _, code in FIELDS)
FORMAT_SHELL = "\"$(printf '" + FORMAT.replace("%", "%%").replace(SEPARATOR, "\\037") + "')\""
"""FORMAT as one shell word: printf turns ``\037`` into the separator in any POSIX shell, and
job scripts and SSH commands stay printable."""
