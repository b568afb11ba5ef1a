"""``madinfra logs`` on SLURM: the output files of a stack's jobs, per role and rank, in time order.

Where the lines are: every job writes ``logs/<job name>_<job id>.out|.err`` in the stack's
directory, each line stamped with the time and labelled with the task that wrote it
(``logformat.py``); files of jobs submitted by an older madinfra are read too, unstamped.

Which job of a resource: its newest, whether squeue still lists it (pending, running) or it has
ended and only its files are left (a finished training run): the larger of the newest active
job id squeue lists under the resource's job name and the newest id among its log files. A pool
replica (``decode-1``) is a job of its own, so its rank is the replica index; in any other job
the rank is srun's task id (one task per node, so the node rank).

Round trips: reading is one remote command (squeue, then each resource's newest files).
``follow`` then polls, one command per interval: squeue plus the bytes each followed file gained
since the last poll (``tail -c +N | head -c``), until none of the followed jobs is pending or
running; the bytes read in that same command, after squeue said so, are the last ones.

Bytes, not text: the output is decoded as latin-1 (one character per byte), so offsets count
bytes exactly and a UTF-8 character split between two reads is whole again when its line is
decoded; the files are separated by a marker that is random per command, so no program output
can forge it. Every value in the commands is ``shlex.quote``d.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from madinfra.config.schema import StackSpec
from madinfra.errors import ProviderError
from madinfra.logs import LogLine, LogQuery, merge, select
from madinfra.resources import Resource
from madinfra_slurm import logformat, rules, scripts, squeue
from madinfra_slurm.connection import SlurmConnection

ENCODING = "latin-1"
"""How the remote output is decoded: byte for byte (see the module docstring)."""
SUFFIXES = (("out", "stdout"), ("err", "stderr"))
"""File suffix and the stream it holds, in the order a tie between them is broken."""

GroupKey = tuple[str, int]
"""``(role, rank)``: one stream of lines as ``--tail`` counts them."""


@dataclass(frozen=True)
class Source:
    """One desired job whose output is wanted: its role, replica index (pools) and job name."""

    role: str
    replica: int | None
    job_name: str
    first_rank: int = 0
    """The role's rank of this job's task 0: a Ray cluster's workers job starts at 1 (the head is 0)."""


def sources(desired: Iterable[Resource], query: LogQuery) -> list[Source]:
    """The stack's jobs the query asks for, in the stack's order (a pool replica outside
    ``--rank`` is not read at all)."""
    found = []
    for resource in desired:
        if resource.kind != scripts.KIND:
            continue
        role = resource.role or resource.name
        if query.role is not None and role != query.role:
            continue
        if resource.replica is not None and query.rank is not None and resource.replica != query.rank:
            continue
        first_rank = int(resource.spec.get(rules.SUBMIT_KEY, {}).get("first_rank") or 0) if resource.replica is None else 0
        found.append(Source(role, resource.replica, str(resource.spec["name"]), first_rank))
    return found


@dataclass
class OutputFile:
    """One of a job's two files and how far it has been read."""

    source: Source
    job_id: str
    suffix: str
    stream: str
    offset: int = 0
    reader: logformat.Reader = field(default_factory=logformat.Reader)

    @property
    def name(self) -> str:
        return f"{self.source.job_name}_{self.job_id}.{self.suffix}"

    def feed(self, start: int, data: bytes, final: bool) -> list[LogLine]:
        """The lines ``data`` (the file's bytes from ``start``) completes; a file that shrank
        (was truncated) is read again from its start."""
        if start < self.offset:
            self.reader = logformat.Reader()
        self.offset = start + len(data)
        source = self.source
        return [
            LogLine(source.role, source.replica if source.replica is not None else source.first_rank + (raw.task or 0), raw.text, raw.time, self.stream)
            for raw in self.reader.feed(data, final)
        ]


@dataclass
class Reading:
    """What one remote command returned: squeue's rows (``None`` when squeue failed) and the
    chunks of files, ``(file name, first byte, bytes)``."""

    rows: list[squeue.JobRow] | None
    squeue_error: str = ""
    chunks: list[tuple[str, int, bytes]] = field(default_factory=list)


def _marker() -> str:
    return f"@@madinfra-logs-{secrets.token_hex(8)}"


def _preamble(mark: str) -> list[str]:
    """Shell setting the marker and ``c FILE OFFSET``: print the file's bytes from OFFSET (from
    0 when the file is shorter, i.e. was truncated) under a ``file`` marker line."""
    return [
        f"M={shlex.quote(mark)}",
        'c() { if [ -f "$1" ]; then z=$(($(wc -c < "$1"))); o=$2; [ "$z" -ge "$o" ] || o=0;'
        ' printf \'%s file %s %s\\n\' "$M" "$1" "$o"; tail -c +$((o + 1)) "$1" | head -c $((z - o)); echo; fi; }',
        squeue.squeue_command(),
        "rc=$?",
        'printf \'%s squeue-exit %s\\n\' "$M" "$rc"',
    ]


def _logs_dir(spec: StackSpec) -> str:
    return f"{scripts.shell_path(scripts.remote_dir(spec))}/{scripts.LOG_DIR}"


def first_command(spec: StackSpec, job_names: Iterable[str], mark: str) -> str:
    """squeue, then the newest ``.out`` and ``.err`` among each job name's files, whole."""
    names = " ".join(shlex.quote(name) for name in job_names)
    newest = (
        f"for n in {names}; do b=;"
        ' for f in "$n"_*.out "$n"_*.err; do [ -f "$f" ] || continue; i=${f#"$n"_}; i=${i%.*};'
        " case $i in ''|*[!0-9]*) continue ;; esac;"
        ' if [ -z "$b" ] || [ "$i" -gt "$b" ]; then b=$i; fi; done;'
        ' [ -n "$b" ] || continue; c "$n"_"$b".out 0; c "$n"_"$b".err 0; done'
    )
    return "; ".join(
        [*_preamble(mark), f"if cd {_logs_dir(spec)} 2>/dev/null; then {newest}; fi", 'printf \'%s end\\n\' "$M"', 'exit "$rc"']
    )


def poll_command(spec: StackSpec, files: Iterable[OutputFile], mark: str) -> str:
    """squeue, then what each followed file gained since its offset."""
    reads = " ".join(f"c {shlex.quote(f.name)} {f.offset};" for f in files)
    return "; ".join([*_preamble(mark), f"if cd {_logs_dir(spec)} 2>/dev/null; then {reads} true; fi", 'printf \'%s end\\n\' "$M"', 'exit "$rc"'])


def parse_output(stdout: str, stderr: str, mark: str) -> Reading:
    """Split a command's latin-1 output at its markers (see ``_preamble``)."""
    pieces = ("\n" + stdout).split(f"\n{mark} ")
    reading = Reading(rows=None)
    squeue_text = pieces[0]
    for piece in pieces[1:]:
        head, _, body = piece.partition("\n")
        words = head.split(" ")
        if words[0] == "squeue-exit":
            if words[1:] == ["0"]:
                reading.rows = squeue.parse_squeue(squeue_text)
            else:
                reading.squeue_error = stderr.strip().replace("\n", "; ") or f"exit status {' '.join(words[1:])}"
        elif words[0] == "file" and len(words) == 3 and words[2].isdigit():
            reading.chunks.append((words[1], int(words[2]), body.encode(ENCODING)))
    return reading


def _job_id(file_name: str, job_name: str) -> str | None:
    """The job id in ``<job name>_<id>.<suffix>``, if the file is that job name's."""
    stem = file_name.rsplit(".", 1)[0]
    head, sep, job_id = stem.rpartition("_")
    return job_id if sep and head == job_name and job_id.isdigit() else None


@dataclass
class Job:
    """The job of a source whose output is shown, and its two files."""

    source: Source
    job_id: str
    active: bool
    files: list[OutputFile]


def choose_jobs(found: list[Source], reading: Reading) -> list[Job]:
    """Each source's newest job: the larger of its newest active job in squeue and its newest
    log files (see the module docstring)."""
    active: dict[str, str] = {}
    for row in reading.rows or []:
        if row.active and (row.name not in active or squeue.job_number(row.job_id) > squeue.job_number(active[row.name])):
            active[row.name] = row.job_id
    jobs = []
    for source in found:
        ids = [job_id for name, _, _ in reading.chunks if (job_id := _job_id(name, source.job_name))]
        candidates = ids + ([active[source.job_name]] if source.job_name in active else [])
        if not candidates:
            continue
        job_id = max(candidates, key=squeue.job_number)
        files = [OutputFile(source, job_id, suffix, stream) for suffix, stream in SUFFIXES]
        jobs.append(Job(source, job_id, active.get(source.job_name) == job_id, files))
    return jobs


class Grouper:
    """Lines into ``(role, rank)`` streams in a stable order, with ``--since`` applied to lines
    that arrive while following (a stream starts at its first line at or after ``since``)."""

    def __init__(self, query: LogQuery, roles: list[str]):
        self.query = query
        self.roles = {role: index for index, role in enumerate(dict.fromkeys(roles))}
        self.started: set[GroupKey] = set()

    def group(self, per_file: Iterable[list[LogLine]]) -> dict[GroupKey, list[list[LogLine]]]:
        """Per stream, the lines of each file (each list in the order written)."""
        groups: dict[GroupKey, list[list[LogLine]]] = {}
        for lines in per_file:
            split: dict[GroupKey, list[LogLine]] = {}
            for line in lines:
                if self.query.wants(line.role, line.rank):
                    split.setdefault((line.role, line.rank), []).append(line)
            for key, kept in split.items():
                groups.setdefault(key, []).append(kept)
        return groups

    def ordered(self, groups: dict[GroupKey, list[list[LogLine]]]) -> list[tuple[GroupKey, list[LogLine]]]:
        keys = sorted(groups, key=lambda key: (self.roles.get(key[0], len(self.roles)), key[0], key[1]))
        return [(key, list(merge(groups[key]))) for key in keys]

    def first(self, per_file: Iterable[list[LogLine]]) -> Iterator[LogLine]:
        """What was written before ``follow`` started: ``select`` per stream, then merged."""
        selected = []
        since = self.query.since
        for key, lines in self.ordered(self.group(per_file)):
            if since is None or any(line.time is not None and line.time >= since for line in lines):
                self.started.add(key)
            selected.append(select(lines, self.query))
        return merge(selected)

    def more(self, per_file: Iterable[list[LogLine]]) -> Iterator[LogLine]:
        """Lines that arrived while following, merged, each stream from its first line at or
        after ``since``."""
        kept = []
        since = self.query.since
        for key, lines in self.ordered(self.group(per_file)):
            if key not in self.started:
                start = next((i for i, line in enumerate(lines) if since is None or (line.time is not None and line.time >= since)), None)
                if start is None:
                    continue
                lines = lines[start:]
                self.started.add(key)
            kept.append(lines)
        return merge(kept)


def read_logs(
    connection: SlurmConnection,
    spec: StackSpec,
    desired: list[Resource],
    query: LogQuery,
    *,
    sleep: Callable[[float], None],
    poll_interval: float = 1.0,
) -> Iterator[LogLine]:
    """The ``logs`` of the provider contract (``madinfra.logs``) for a SLURM stack."""
    found = sources(desired, query)
    if not found:
        return
    what = f"Reading the output of stack '{spec.name}'"
    mark = _marker()
    result = connection.run(first_command(spec, dict.fromkeys(s.job_name for s in found), mark), what=what, encoding=ENCODING)
    reading = parse_output(result.stdout, result.stderr, mark)
    if reading.rows is None and query.follow:
        raise ProviderError(f"{what}: squeue failed ({reading.squeue_error}), so it cannot tell when the jobs end; run it again without --follow to see what they wrote")
    jobs = choose_jobs(found, reading)
    if not jobs:
        wanted = f"role '{query.role}' of stack '{spec.name}'" if query.role else f"stack '{spec.name}'"
        raise ProviderError(
            f"No job of {wanted} is queued and {scripts.remote_dir(spec)}/{scripts.LOG_DIR} holds no output of one; "
            "run `madinfra apply` first (destroy removes the output with the stack's directory)"
        )
    files = {f.name: f for job in jobs for f in job.files}
    followed = [job for job in jobs if job.active] if query.follow else []
    following = {f.name for job in followed for f in job.files}
    grouper = Grouper(query, [s.role for s in found])
    yield from grouper.first(
        files[name].feed(start, data, final=name not in following) for name, start, data in reading.chunks if name in files
    )
    while followed:
        sleep(poll_interval)
        mark = _marker()
        watched = [f for job in followed for f in job.files]
        result = connection.run(poll_command(spec, watched, mark), what=what, encoding=ENCODING)
        reading = parse_output(result.stdout, result.stderr, mark)
        if reading.rows is None:
            raise ProviderError(f"{what}: squeue failed ({reading.squeue_error}) while following; run it again when squeue answers")
        running = {row.job_id for row in reading.rows if row.active}
        ended = {job.job_id for job in followed if job.job_id not in running}
        per_file = [files[name].feed(start, data, final=files[name].job_id in ended) for name, start, data in reading.chunks if name in files]
        grown = {name for name, _, _ in reading.chunks}
        # A job that ended: its last line without a newline, in a file this poll did not find grown.
        per_file += [f.feed(f.offset, b"", final=True) for f in watched if f.job_id in ended and f.name not in grown]
        yield from grouper.more(per_file)
        followed = [job for job in followed if job.job_id not in ended]
