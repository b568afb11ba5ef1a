"""Parsing squeue / scontrol output into live resources (outputs captured from Slurm 22.05)."""

from __future__ import annotations

import pytest

from madinfra_slurm import squeue

COMMENT = "madinfra:stack=demo;resource=slurm/Job/worker;script=abc123"


def line(job_id="17", name="madinfra.demo.worker", state="RUNNING", time="10:00", nodes="2", nodelist="node[1-2]",
         partition="debug", tres="gres:gpu:4", reason="None", oversub="OK", qos="(null)", account="(null)",
         constraint="(null)", req="", exc="", resv="(null)", mem="0", workdir="/root/.madinfra/demo", elapsed="1:02:03", comment=COMMENT) -> str:
    return squeue.SEPARATOR.join([job_id, name, state, time, nodes, nodelist, partition, tres, reason, oversub, qos, account,
                     constraint, req, exc, resv, mem, workdir, elapsed, comment])


def test_the_live_read_is_one_squeue_call_with_every_field() -> None:
    command = squeue.squeue_command()
    assert command.startswith("squeue -h -a --me -o \"$(printf '")
    assert command.count("\\037") == len(squeue.FIELDS) - 1
    assert command.endswith("\\037%%k')\""), "the comment must come last: it is the only free-text field"
    assert "--jobs=5,6" in squeue.squeue_command(["5", "6"])


def test_rows_are_parsed_and_a_comment_may_contain_separators() -> None:
    rows = squeue.parse_squeue(line(comment="free|text|comment") + "\n\n" + line(job_id="18", state="pending") + "\ngarbage\n")
    assert [r.job_id for r in rows] == ["17", "18"]
    assert rows[0].comment == "free|text|comment"
    assert rows[1].state == "PENDING" and rows[1].pending and not rows[1].running
    assert rows[0].hosts == ["node1", "node2"]


def test_live_spec_matches_the_desired_shape() -> None:
    (row,) = squeue.parse_squeue(line())
    assert squeue.live_spec(row) == {
        "name": "madinfra.demo.worker",
        "comment": "madinfra:stack=demo;resource=slurm/Job/worker",
        "partition": "debug",
        "nodes": 2,
        "gpus_per_node": 4,
        "time": "00:10:00",
        "exclusive": None,
        "qos": None,
        "account": None,
        "constraint": None,
        "nodelist": None,
        "exclude": None,
        "reservation": None,
        "mem": None,
        "script_sha256": "abc123",
        "image": None,
    }


def test_the_container_image_is_read_back_from_the_comment() -> None:
    (row,) = squeue.parse_squeue(line(comment=COMMENT + ";image=registry.example/sglang:v0.5"))
    assert squeue.live_spec(row)["image"] == "registry.example/sglang:v0.5"


def test_cluster_defaults_are_reported_only_when_madinfra_asked_for_them() -> None:
    plain = squeue.live_spec(squeue.parse_squeue(line(qos="normal", account="root", mem="4000M", oversub="NO"))[0])
    assert (plain["qos"], plain["account"], plain["mem"], plain["exclusive"]) == (None, None, None, None)
    asked = COMMENT + ";exclusive=1;qos=high;account=proj;mem=64G"
    row = squeue.parse_squeue(line(qos="high", account="(null)", mem="65536M", oversub="NO", comment=asked))[0]
    spec = squeue.live_spec(row)
    # account shows (null) on a cluster without accounting: the recorded value stands in for it.
    assert (spec["qos"], spec["account"], spec["mem"], spec["exclusive"]) == ("high", "proj", "64G", True)
    changed = squeue.live_spec(squeue.parse_squeue(line(qos="low", oversub="OK", comment=asked))[0])
    assert (changed["qos"], changed["exclusive"]) == ("low", False)


def test_requested_nodes_and_constraints_are_read() -> None:
    spec = squeue.live_spec(squeue.parse_squeue(line(constraint="mi300x", req="node[1-2]", exc="node3", resv="maint"))[0])
    assert (spec["constraint"], spec["nodelist"], spec["exclude"], spec["reservation"]) == ("mi300x", "node[1-2]", "node3", "maint")


def test_only_active_jobs_of_the_stack_become_resources() -> None:
    text = "\n".join([
        line(job_id="10"),
        line(job_id="11", name="madinfra.demo-other.worker"),
        line(job_id="12", name="madinfra.demo.old", state="COMPLETED"),
        line(job_id="13", name="madinfra.demo.gone", state="CANCELLED"),
        line(job_id="14", name="madinfra.demo.ending", state="COMPLETING"),
        line(job_id="15", name="someone-elses-job"),
        line(job_id="16", name="madinfra.demo.prefill", state="PENDING", nodelist="", reason="Resources", workdir="(null)"),
    ])
    resources = squeue.to_resources(squeue.parse_squeue(text), "demo")
    assert [(r.id, r.provider_id) for r in resources] == [("slurm/Job/worker", "10"), ("slurm/Job/prefill", "16")]
    worker, prefill = resources
    assert worker.status == {"state": "RUNNING", "running": True, "nodes": ["node1", "node2"], "job_id": "10", "workdir": "/root/.madinfra/demo", "elapsed_seconds": 3723}
    assert worker.gpus == 8 and worker.workload and worker.role == "worker"
    assert prefill.status == {"state": "PENDING", "running": False, "nodes": [], "job_id": "16", "reason": "Resources"}


def test_duplicate_jobs_of_one_role_leave_the_newest_as_the_resource_and_the_rest_as_orphans() -> None:
    text = "\n".join([line(job_id="31"), line(job_id="9"), line(job_id="30")])
    resources = squeue.to_resources(squeue.parse_squeue(text), "demo")
    assert sorted((r.name, r.provider_id) for r in resources) == [("worker", "31"), ("worker#30", "30"), ("worker#9", "9")]
    assert all(r.role == "worker" for r in resources)


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("node[1-2,5],gpu-a[08-10]", ["node1", "node2", "node5", "gpu-a08", "gpu-a09", "gpu-a10"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("a,b", ["a", "b"]),
    ],
)
def test_host_lists_expand_like_slurm(text: str, hosts: list[str]) -> None:
    assert squeue.expand_hostlist(text) == hosts


SCONTROL_NODES = (
    "NodeName=node1 Arch=x86_64 CoresPerSocket=8  CPUAlloc=0 Gres=gpu:4 NodeAddr=10.1.0.7 NodeHostName=node1 Version=22.05.8 "
    "OS=Linux 6.1 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=4000 State=IDLE Partitions=debug  Reason=being fixed [root@2026]\n"
    "NodeName=node2 Arch=x86_64 NodeAddr=10.1.0.8 NodeHostName=node2 State=MIXED\n"
)


def test_node_addresses_come_from_scontrol_show_node() -> None:
    assert squeue.node_addresses(SCONTROL_NODES) == {"node1": "10.1.0.7", "node2": "10.1.0.8"}


def test_scontrol_records_keep_values_with_spaces() -> None:
    record = squeue.parse_record(SCONTROL_NODES.splitlines()[0])
    assert record["OS"] == "Linux 6.1 #1 SMP PREEMPT_DYNAMIC @0"
    assert record["Reason"] == "being fixed [root@2026]"
    assert record["Gres"] == "gpu:4"



def test_a_slurm_or_constraint_does_not_shift_the_fields_after_it() -> None:
    """``a|b`` is Slurm's OR syntax for a constraint: with ``|`` as the separator every later
    field moved one to the right and the job looked changed on every plan."""
    (row,) = squeue.parse_squeue(line(constraint="mi300x|mi250", comment="madinfra:stack=demo"))
    assert row.constraint == "mi300x|mi250" and row.comment == "madinfra:stack=demo"


def test_end_markers_of_an_older_madinfra_still_parse() -> None:
    # An older madinfra's row: ``|``-separated and without the elapsed field (index 18).
    legacy = "|".join(part for i, part in enumerate(line(comment="a|b").split(squeue.SEPARATOR)) if i != 18)
    (row,) = squeue.parse_squeue(legacy)
    assert row.job_id == "17" and row.comment == "a|b"


def test_the_format_reaches_squeue_as_one_word_in_a_posix_shell() -> None:
    import subprocess

    printed = subprocess.run(["sh", "-c", f"printf '%s' {squeue.FORMAT_SHELL}"], capture_output=True, text=True, check=True).stdout
    assert printed == squeue.SEPARATOR.join(code for _, code in squeue.FIELDS)


def test_a_running_jobs_elapsed_time_is_its_status_and_an_older_markers_row_still_parses() -> None:
    (row,) = squeue.parse_squeue(line(elapsed="1-02:03:04"))
    assert squeue.status_of(row)["elapsed_seconds"] == 93784
    (row,) = squeue.parse_squeue(line(elapsed="0:07"))
    assert squeue.status_of(row)["elapsed_seconds"] == 7
    (pending,) = squeue.parse_squeue(line(state="PENDING", elapsed="0:00"))
    assert "elapsed_seconds" not in squeue.status_of(pending)
    legacy = "|".join(["17", "madinfra.demo.worker", "RUNNING", "10:00", "2", "node[1-2]", "debug", "gres:gpu:4", "None", "OK", "(null)", "(null)",
                       "(null)", "", "", "(null)", "0", "/root/.madinfra/demo", COMMENT])
    (old,) = squeue.parse_squeue(legacy)
    assert (old.job_id, old.comment, old.elapsed) == ("17", COMMENT, "")
