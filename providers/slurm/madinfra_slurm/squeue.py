"""Reading SLURM's answers: ``squeue`` rows, ``scontrol show`` records, host lists (pure).

The live read is one ``squeue -o`` call with ``|``-separated fields (``squeue --json`` in Slurm
22.05 ignores ``-j``/``-t``); the comment comes last because it is the only free-text field.
A job belongs to a stack by its name prefix ``madinfra.<stack>.``; its comment carries the
resource id, the script hash and which defaulted options madinfra asked for.

Finished jobs leave ``squeue`` (it lists them only with ``-t all``, and after MinJobAge not at
all). A training job that ended by itself left an end marker with the ``#SBATCH`` directives it
ended with (``markers.py``), which the same live read fetches: that job is live, COMPLETED or
FAILED, with the spec its directives give, so an unchanged stack plans no change for it. A job that ended without a
marker (cancelled by hand, timed out) reads as gone, and the plan creates it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from madinfra import naming
from madinfra.resources import Resource
from madinfra_slurm import scripts, units
from madinfra_slurm.fields import FIELDS, FORMAT_SHELL, LEGACY_FIELDS, LEGACY_SEPARATOR, SEPARATOR
from madinfra_slurm.markers import EndMarker, directive_options


RUNNING_STATES = frozenset({"RUNNING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT"})
"""States in which the job holds its nodes: only time limit, name and comment can change."""
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
ACTIVE_STATES = RUNNING_STATES | PENDING_STATES
FAILED_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"})
_NULLS = {"", "(null)", "N/A", "NONE", "(NULL)"}


def squeue_command(job_ids: Iterable[str] = (), *, ended_too: bool = False) -> str:
    """The one live-read command: every job of the connecting user (``--me``), all partitions.

    Filtering by stack happens client-side on the name prefix, so jobs of roles a stack no
    longer has (orphans) are found too. ``job_ids`` narrows it to a few jobs (after a submit);
    ``ended_too`` adds jobs in a terminal state (``-t all``), so apply can tell a job that ended
    (COMPLETED, FAILED, CANCELLED ...) from one squeue has never heard of.
    """
    ids = ",".join(job_ids)
    selector = f" --jobs={ids}" if ids else ""
    states = " -t all" if ended_too else ""
    return f"squeue -h -a --me{states}{selector} -o {FORMAT_SHELL}"


SINFO_COMMAND = "sinfo -h -a -N -O 'Partition:|,NodeList:|,Gres:|,GresUsed:|,StateLong:|,CPUsState:|'"
"""Every node of every partition (hidden ones too), one line each, ``|``-separated: partition
(the default one marked ``*``), node name, GRES, GRES in use, state, CPUs
allocated/idle/other/total (Slurm 22.05's ``-O`` fields). Part of the live read's single round
trip (``readout.py``): what a job can never fit (``fit_problem``) and how many surge replicas
fit now (``capacity.py``)."""


@dataclass(frozen=True)
class JobRow:
    job_id: str
    name: str
    state: str
    time: str
    nodes: str
    nodelist: str
    partition: str
    tres_per_node: str
    reason: str
    oversubscribe: str
    qos: str
    account: str
    constraint: str
    req_nodes: str
    exc_nodes: str
    reservation: str
    mem: str
    workdir: str
    comment: str
    elapsed: str = ""
    """Time the job has run (``%M``: ``M:SS``, ``H:MM:SS`` or ``D-HH:MM:SS``)."""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def hosts(self) -> list[str]:
        return expand_hostlist(self.nodelist) if _value(self.nodelist) else []


def parse_squeue(text: str) -> list[JobRow]:
    """Rows of ``squeue -h -o FORMAT`` output; blank lines and short lines are skipped.

    Fields are split on the unit separator, which no field can contain; a row with none is an
    end marker of an older madinfra, split on ``|`` with the comment last.
    """
    rows = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        separator, fields = (SEPARATOR, FIELDS) if SEPARATOR in line else (LEGACY_SEPARATOR, LEGACY_FIELDS)
        count = len(fields)
        parts = line.split(separator, count - 1)
        if len(parts) != count:
            continue
        values = {name: part.strip() if name != "comment" else part.rstrip("\r\n") for (name, _), part in zip(fields, parts)}
        values["state"] = values["state"].upper()
        rows.append(JobRow(**values))
    return rows


def stack_prefix(stack: str) -> str:
    return naming.slurm_job_name(stack, "")


def stack_rows(rows: Iterable[JobRow], stack: str) -> list[JobRow]:
    """The stack's active jobs (name prefix ``madinfra.<stack>.``), oldest first."""
    prefix = stack_prefix(stack)
    mine = [row for row in rows if row.name.startswith(prefix) and row.active]
    return sorted(mine, key=lambda row: job_number(row.job_id))


def job_number(job_id: str) -> tuple[int, str]:
    head = re.match(r"\d+", job_id)
    return (int(head.group()) if head else 0, job_id)


def _value(text: str) -> str | None:
    return None if text.strip().upper() in _NULLS else text.strip()


def live_spec(row: JobRow) -> dict[str, Any]:
    """The comparable spec of a live job, with the keys ``SlurmProvider.desired`` produces.

    Options a cluster fills by default (QOS, account, memory, exclusivity) are reported only when
    the comment says madinfra asked for them; otherwise a cluster default would look like drift.
    """
    comment = scripts.parse_comment(row.comment) or {}
    if "stack" in comment and "resource" in comment:
        base = f"{scripts.COMMENT_PREFIX}stack={comment['stack']};resource={comment['resource']}"
    else:
        base = row.comment
    spec: dict[str, Any] = {
        "name": row.name,
        "comment": base,
        "partition": row.partition,
        "nodes": _int(row.nodes),
        "gpus_per_node": units.gpus_from_tres(row.tres_per_node),
        "time": _time(row.time),
        "exclusive": (row.oversubscribe.upper() == "NO") if "exclusive" in comment else None,
        "qos": _asked(row.qos, comment, "qos"),
        "account": _asked(row.account, comment, "account"),
        "constraint": _value(row.constraint),
        "nodelist": _value(row.req_nodes),
        "exclude": _value(row.exc_nodes),
        "reservation": _value(row.reservation),
        "mem": _mem(row.mem) if "mem" in comment else None,
        "script_sha256": comment.get("script"),
        "image": comment.get("image"),
    }
    return spec


def _asked(text: str, comment: dict[str, str], name: str) -> str | None:
    """A defaulted option madinfra asked for: SLURM's value, or the recorded one where SLURM
    does not track it (``(null)`` without accounting); ``None`` when madinfra did not ask."""
    if name not in comment:
        return None
    return _value(text) or comment[name]


def _int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _time(text: str) -> str | None:
    if _value(text) is None or text.strip().upper() == "NOT_SET":
        return None
    try:
        return units.normalize_time(text)
    except ValueError:
        return text.strip()


def _mem(text: str) -> str | None:
    value = _value(text)
    if value is None:
        return None
    try:
        return units.normalize_mem(value)
    except ValueError:
        return value


def to_resources(rows: Iterable[JobRow], stack: str, markers: Iterable[EndMarker] = ()) -> list[Resource]:
    """Live resources of a stack: one per role; extra jobs of a role become orphans.

    A role's resource is its newest job, active in ``squeue`` or finished with an end marker. If
    two active jobs carry one role's name (a manual resubmission, an interrupted apply), each
    older one is reported as ``<role>#<job id>``, which no desired resource matches, so the plan
    deletes it. Markers of older jobs are history, not resources.
    """
    mine = stack_rows(rows, stack)
    prefix = stack_prefix(stack)
    newest: dict[str, JobRow] = {}
    for row in mine:
        newest[row.name[len(prefix):]] = row
    finished = finished_rows(markers, stack)
    resources = []
    for row in mine:
        role = row.name[len(prefix):]
        ended = finished.get(role)
        superseded = ended is not None and job_number(ended[0].job_id) > job_number(row.job_id)
        name = role if newest[role] is row and not superseded else f"{role}#{row.job_id}"
        resources.append(row_resource(row, name, role))
    for role, (marker, row) in sorted(finished.items()):
        active = newest.get(role)
        if active is None or job_number(marker.job_id) > job_number(active.job_id):
            resources.append(finished_resource(marker, row, role))
    return resources


def finished_rows(markers: Iterable[EndMarker], stack: str) -> dict[str, tuple[EndMarker, JobRow]]:
    """Per role, the newest end marker whose recorded row is this stack's job of that role."""
    prefix = stack_prefix(stack)
    found: dict[str, tuple[EndMarker, JobRow]] = {}
    for marker in markers:
        parsed = parse_squeue(marker.row) if marker.row else [row for row in (directive_row(marker),) if row is not None]
        if not parsed or parsed[0].name != prefix + marker.role or parsed[0].job_id != marker.job_id:
            continue
        best = found.get(marker.role)
        if best is None or job_number(marker.job_id) > job_number(best[0].job_id):
            found[marker.role] = (marker, parsed[0])
    return found


def directive_row(marker: EndMarker) -> JobRow | None:
    """The job row a marker's ``#SBATCH`` directives stand for (``None`` without a job name).

    The directives are the options madinfra submitted (or last updated in place), in the
    spelling ``scripts.option_lines`` writes; ``live_spec`` reads this row exactly as it reads a
    squeue row, so a finished job compares with the desired spec like a queued one.
    """
    options = directive_options(marker.directives)
    name = options.get("job-name")
    if not name:
        return None
    return JobRow(
        job_id=marker.job_id,
        name=name,
        state="COMPLETED" if marker.exit_code == 0 else "FAILED",
        time=options.get("time", ""),
        nodes=options.get("nodes", "1"),
        nodelist=marker.nodes,
        partition=options.get("partition", ""),
        tres_per_node=options.get("gres", "N/A"),
        reason="",
        oversubscribe="NO" if "exclusive" in options else "OK",
        qos=options.get("qos", ""),
        account=options.get("account", ""),
        constraint=options.get("constraint", ""),
        req_nodes=options.get("nodelist", ""),
        exc_nodes=options.get("exclude", ""),
        reservation=options.get("reservation", ""),
        mem=options.get("mem", ""),
        workdir=marker.workdir,
        comment=options.get("comment", ""),
    )


def finished_resource(marker: EndMarker, row: JobRow, role: str) -> Resource:
    """A job that ended by itself: its spec as its last row gives it; it holds no GPUs now."""
    resource = row_resource(row, role, role)
    resource.gpus = 0
    resource.status = {
        "state": marker.state,
        "running": False,
        "finished": True,
        "exit_code": marker.exit_code,
        "ended_at": marker.ended_at,
        "nodes": row.hosts,
        "job_id": row.job_id,
    }
    workdir = _value(row.workdir)
    if workdir:
        resource.status["workdir"] = workdir
    return resource


def _kv_layout(row: JobRow) -> str | None:
    """The KV cache layout a pool replica was submitted with (its comment's ``kv=``)."""
    fields = scripts.parse_comment(row.comment or "")
    return fields.get("kv") if fields else None


def row_resource(row: JobRow, name: str, role: str) -> Resource:
    """The live Resource of one job row; ``role`` is the job's role as its name gives it, so a
    pool replica's job (``decode-2``) is the resource with role ``decode`` and replica 2."""
    spec = live_spec(row)
    nodes = spec["nodes"] if isinstance(spec["nodes"], int) else 0
    role, replica = scripts.split_replica(role)
    return Resource(
        kind=scripts.KIND,
        name=name,
        spec=spec,
        gpus=nodes * spec["gpus_per_node"],
        workload=True,
        role=role,
        replica=replica,
        kv_layout=_kv_layout(row),
        provider_id=row.job_id,
        status=status_of(row),
    )


def status_of(row: JobRow) -> dict[str, Any]:
    status: dict[str, Any] = {"state": row.state, "running": row.running, "nodes": row.hosts, "job_id": row.job_id}
    reason = _value(row.reason)
    if reason:
        status["reason"] = reason
    workdir = _value(row.workdir)
    if workdir:
        status["workdir"] = workdir
    elapsed = units.elapsed_seconds(row.elapsed) if row.running else None
    if elapsed is not None:
        status["elapsed_seconds"] = elapsed
    return status


_BRACKET = re.compile(r"\[([^\]]*)\]")


def expand_hostlist(text: str) -> list[str]:
    """``node[1-3,5],gpu-a[01-02]`` -> every host name, zero padding kept (SLURM's hostlist)."""
    hosts: list[str] = []
    for item in _split_top_level(text.strip()):
        hosts.extend(_expand_item(item))
    return hosts


def _split_top_level(text: str) -> list[str]:
    items, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item for item in items if item]


def _expand_item(item: str) -> list[str]:
    match = _BRACKET.search(item)
    if not match:
        return [item]
    head, tail = item[: match.start()], item[match.end():]
    expanded = []
    for part in match.group(1).split(","):
        low, sep, high = part.partition("-")
        if sep:
            width = len(low)
            for number in range(int(low), int(high) + 1):
                expanded.extend(_expand_item(f"{head}{number:0{width}d}{tail}"))
        else:
            expanded.extend(_expand_item(f"{head}{part}{tail}"))
    return expanded


_RECORD_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/.]*)=")


def parse_record(line: str) -> dict[str, str]:
    """One ``scontrol show ... -o`` line (``Key=value Key2=value with spaces``) as a mapping."""
    matches = list(_RECORD_KEY.finditer(line))
    record = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
        record[match.group(1)] = line[match.end():end].strip()
    return record


def node_addresses(text: str) -> dict[str, str]:
    """``NodeName -> NodeAddr`` from ``scontrol show node -o`` output (one node per line)."""
    addresses = {}
    for line in text.splitlines():
        record = parse_record(line)
        if "NodeName" in record:
            addresses[record["NodeName"]] = record.get("NodeAddr") or record["NodeName"]
    return addresses


@dataclass(frozen=True)
class NodeUse:
    """What one node has free now, as ``sinfo`` says: GPUs, idle CPUs and its state."""

    gpus_free: int
    cpus_idle: int
    state: str


@dataclass
class Partition:
    """A partition's nodes with the GPUs each has, as ``sinfo`` lists them, and (from the
    ``-O`` form) what each has free now."""

    name: str
    default: bool = False
    node_gpus: dict[str, int] = field(default_factory=dict)
    node_use: dict[str, NodeUse] = field(default_factory=dict)

    @property
    def gres_known(self) -> bool:
        """Whether any node reports GPUs: if none does, the cluster may not track them in GRES
        at all, and a GPU request cannot be judged from sinfo."""
        return any(self.node_gpus.values())


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from ``SINFO_COMMAND`` output (or the older ``%P %N %G`` form, which says
    nothing of what is free); malformed lines are skipped."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        use = None
        if "|" in line:
            parts = [part.strip() for part in line.split("|")]
            if len(parts) < 6:
                continue
            name, node, gres, used, state, cpus = parts[:6]
            use = NodeUse(max(0, units.gpus_from_gres(gres) - units.gpus_from_gres(used)), _idle_cpus(cpus), state.lower())
        else:
            parts = line.split()
            if len(parts) != 3:
                continue
            name, node, gres = parts
        if not name or not node:
            continue
        default = name.endswith("*")
        name = name.rstrip("*")
        partition = partitions.setdefault(name, Partition(name))
        partition.default = partition.default or default
        partition.node_gpus[node] = max(partition.node_gpus.get(node, 0), units.gpus_from_gres(gres))
        if use is not None:
            partition.node_use[node] = use
    return partitions


def _idle_cpus(text: str) -> int:
    """Idle CPUs from sinfo's ``CPUsState`` (allocated/idle/other/total); 0 when unreadable."""
    parts = text.split("/")
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else 0


def fit_problem(rid: str, spec: dict[str, Any], partitions: dict[str, Partition]) -> str | None:
    """Why a job with this spec can never start in its partition, or ``None`` if it can (or if
    sinfo does not say: an unknown partition is left to sbatch, which names it).

    Only what no amount of waiting changes is judged: more nodes than the partition has, or
    than it has nodes with the GPUs asked per node. Busy, drained or down nodes still count, as
    they may come back; ``nodelist``, ``exclude`` and ``constraint`` are left to SLURM.
    """
    name = spec.get("partition") or next((p.name for p in partitions.values() if p.default), None)
    partition = partitions.get(name or "")
    nodes, gpus = spec.get("nodes"), spec.get("gpus_per_node") or 0
    if partition is None or not isinstance(nodes, int) or not isinstance(gpus, int):
        return None
    total = len(partition.node_gpus)
    judged_gpus = gpus if partition.gres_known else 0
    fitting = sum(1 for count in partition.node_gpus.values() if count >= judged_gpus)
    if nodes <= fitting:
        return None
    asked = f"{nodes} node(s)" + (f" with {gpus} GPU(s) each" if judged_gpus else "")
    have = f"{total} node(s)"
    if judged_gpus and fitting < total:
        most = max(partition.node_gpus.values())
        have += f", {fitting} of them with {gpus} or more GPUs (the most any node has is {most})"
    return (
        f"{rid} can never start in partition '{partition.name}': it asks for {asked} and the partition has {have}; "
        "lower distributed.nnodes, slurm.nodes or slurm.gpus_per_node, or choose another slurm.partition"
    )
