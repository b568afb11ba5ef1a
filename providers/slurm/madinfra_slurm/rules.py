"""How a SLURM job's fields may change, for the planner and for apply.

A batch job cannot be edited freely: once it runs, only its time limit, name and comment can
change (``scontrol update``); its nodes, GPUs, partition and the like only while it is pending;
and its script never (slurmctld keeps a copy from submission). The planner reads ``JOB_RULES``;
apply turns the differing fields into ``scontrol update`` assignments with ``assignments``.
"""

from __future__ import annotations

from typing import Any, Iterable

from madinfra.resources import UpdateRules
from madinfra_slurm import units

SUBMIT_KEY = "submit"
"""``Resource.spec[SUBMIT_KEY]`` holds what apply needs but the planner must not diff: the script
text (covered by ``script_sha256``), the files to upload, endpoint and readiness settings."""

JOB_RULES = UpdateRules(
    force_replace=("script_sha256", "exclusive", "image"),
    server_owned=(SUBMIT_KEY,),
    explained_by=(("script_sha256", f"{SUBMIT_KEY}.script"),),
    replace_when_running=(
        "partition",
        "nodes",
        "gpus_per_node",
        "qos",
        "account",
        "constraint",
        "nodelist",
        "exclude",
        "reservation",
        "mem",
    ),
)

ALWAYS_UPDATABLE = {"time": "TimeLimit", "name": "JobName", "comment": "Comment"}
"""Fields ``scontrol update`` changes on a running job. Raising a running job's TimeLimit needs a
Slurm operator; for anyone else the provider's ``not_in_place`` makes the plan a replacement."""

PENDING_UPDATABLE = {
    "partition": "Partition",
    "nodes": "NumNodes",
    "gpus_per_node": "Gres",
    "qos": "QOS",
    "account": "Account",
    "constraint": "Features",
    "nodelist": "ReqNodeList",
    "exclude": "ExcNodeList",
    "reservation": "Reservation",
    "mem": "MinMemoryNode",
}
"""Fields ``scontrol update`` changes only while the job is pending."""

CLEARABLE = {"constraint", "nodelist", "exclude", "reservation"}
"""Optional fields SLURM clears with an empty assignment; the others cannot go back to the
cluster default in place (the job is resubmitted instead)."""


class NotInPlace(Exception):
    """A field cannot be changed with ``scontrol update`` in the job's current state."""

    def __init__(self, field: str, running: bool):
        self.field = field
        self.running = running
        when = "a running job" if running else "a pending job"
        super().__init__(f"{field} cannot be changed in place on {when}")


def _value(field: str, value: Any) -> str:
    if value is None:
        return ""
    if field == "gpus_per_node":
        return f"gpu:{value}" if int(value) > 0 else ""
    if field == "mem":
        # scontrol takes MinMemoryNode in megabytes only ("100M" is rejected).
        return str(units.mem_megabytes(str(value)))
    if field == "nodes":
        # sbatch --nodes=N sets min = max = N; a bare NumNodes=M > N is rejected as invalid.
        return f"{value}-{value}"
    return str(value)


def assignments(desired: dict[str, Any], fields: Iterable[str], running: bool, comment: str) -> list[str]:
    """``Key=value`` words for ``scontrol update JobId=<id>`` (values not yet shell-quoted).

    ``fields`` are the top-level spec keys that differ; the full comment (with the script hash
    and asked-for defaults) is always rewritten so it matches the job's options afterwards.
    Raises NotInPlace when one of them cannot change in the job's state.
    """
    words: list[str] = []
    for field in sorted(set(fields)):
        if field == "comment":
            continue
        if field in ALWAYS_UPDATABLE:
            words.append(f"{ALWAYS_UPDATABLE[field]}={_value(field, desired.get(field))}")
        elif field in PENDING_UPDATABLE and not running:
            value = desired.get(field)
            if value is None and field not in CLEARABLE:
                raise NotInPlace(field, running)
            words.append(f"{PENDING_UPDATABLE[field]}={_value(field, value)}")
        else:
            raise NotInPlace(field, running)
    words.append(f"Comment={comment}")
    return words


def top_level(path: str) -> str:
    """``FieldChange.path`` -> the spec key it belongs to (``submit.script`` -> ``submit``)."""
    for index, char in enumerate(path):
        if char in ".[":
            return path[:index]
    return path
