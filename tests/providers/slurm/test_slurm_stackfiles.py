"""``slurm/File`` resources (topology.env, endpoint files) and what a plan of a running
disaggregated stack touches when one pool is resized or the server flags change, replica by
replica, with the pools' rollout lines from the live read's free GPUs; the engine's own plan
pipeline prints them. No cluster involved."""

from __future__ import annotations

import pytest

from madinfra.engine.pipeline import compute_plan
from madinfra.errors import ProviderError
from madinfra.launchers import compile as compile_launch
from madinfra.render.human import plan_text
from madinfra.resources import Change, Resource
from madinfra_slurm import SlurmProvider, capacity, readout, scripts, squeue, stackfiles
from slurm_fakes import ok, provider_with, row_text

FREE = "debug*|node1|gpu:4|gpu:2|mixed|2/6/0/8|\ndebug*|node2|gpu:4|gpu:2|mixed|2/6/0/8|\ndebug*|node3|gpu:4|gpu:0|idle|0/8/0/8|\n"
"""sinfo with room: 8 GPUs free, node3 idle."""
FULL = "debug*|node1|gpu:4|gpu:4|mixed|2/6/0/8|\ndebug*|node2|gpu:4|gpu:4|mixed|2/6/0/8|\ndebug*|node3|gpu:4|gpu:4|mixed|1/7/0/8|\n"
"""sinfo of a full partition: every GPU in use."""


def stack(slurm_stack, nnodes: int = 5, prefill: int = 1, decode: int = 3, nproc: int = 1, **overrides):
    values = dict(
        slurm={"partition": "debug", "nodes": nnodes, "gpus_per_node": nproc, "time": "10", "exclusive": True},
        distributed={"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": nproc, "sglang_disagg": {"prefill_nodes": prefill, "decode_nodes": decode}},
        env_vars={"MODEL_PATH": "/m"},
        service={"health_check": {"http_path": "/health"}},
    )
    values.update(overrides)
    return slurm_stack(**values)


def job_ids(resources: list[Resource]) -> dict[str, str]:
    return {r.name: str(101 + i) for i, r in enumerate(r for r in resources if r.kind == scripts.KIND)}


def running(resources: list[Resource], sinfo: str | None = FREE) -> str:
    """The live read output of a stack whose desired resources all run as applied."""
    ids = job_ids(resources)
    rows = "".join(row_text(r, ids[r.name]) for r in resources if r.kind == scripts.KIND)
    out = rows + f"{readout.MARK} squeue-exit 0\n"
    if sinfo is not None:
        out += f"{readout.MARK} sinfo\n{sinfo}{readout.MARK} sinfo-exit 0\n"
    out += f"{readout.MARK} dir /home/u/.madinfra/demo\n"
    for r in resources:
        if r.kind != stackfiles.FILE_KIND:
            continue
        if r.name == "topology.env":
            out += f"{readout.MARK} file topology.env\n{r.spec['submit']['text']}"
            continue
        pool = r.spec["submit"]["pool"]
        urls = "".join(f"http://10.0.0.{i}:{r.spec['port']}\n" for i in range(r.spec["replicas"]))
        jobs = {i: ids[f"{pool}-{i}"] for i in range(r.spec["replicas"])}
        out += f"{readout.MARK} file {r.name}\n{urls}"
        out += f"{readout.MARK} file {r.name}.source\n{stackfiles.source_text(jobs, r.spec['replica_jobs'])}"
    return out


def plan_against(spec_before, spec_after, sinfo: str | None = FREE):
    before = SlurmProvider().desired(spec_before, compile_launch(spec_before))
    provider, conn = provider_with(lambda command, _: ok(running(before, sinfo)) if command.startswith("squeue") else ok())
    return compute_plan(spec_after, provider, None), conn


def touched(result) -> dict[str, str]:
    return {c.resource_id: c.action for c in result.changes}


def pool_lines(result) -> dict[str, list[str]]:
    return {pool.pool: pool.lines() for pool in result.rollouts}


def test_an_unchanged_running_stack_plans_nothing_in_one_round_trip(slurm_stack) -> None:
    result, conn = plan_against(stack(slurm_stack), stack(slurm_stack))
    assert result.changes == [] and len(conn.commands) == 1 and result.rollouts == []
    files = {r.id: r for r in result.live if r.kind == stackfiles.FILE_KIND}
    desired = {r.id: r for r in result.desired}
    assert files["slurm/File/endpoints/decode"].spec == {"port": 30000, "replicas": 3, "replica_jobs": desired["slurm/File/endpoints/decode"].spec["replica_jobs"]}
    assert files["slurm/File/topology.env"].status == {"path": "/home/u/.madinfra/demo/topology.env"}
    replicas = [r for r in result.live if r.kind == scripts.KIND and r.role == "decode"]
    assert [(r.name, r.replica, r.gpus) for r in replicas] == [("decode-0", 0, 1), ("decode-1", 1, 1), ("decode-2", 2, 1)]


def test_scaling_decode_in_removes_only_the_highest_replica(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, nnodes=4, decode=2))
    assert touched(result) == {
        "slurm/Job/decode-2": "delete",
        "slurm/File/topology.env": "update",
        "slurm/File/endpoints/decode": "update",
    }
    endpoints = next(c for c in result.changes if c.resource_id == "slurm/File/endpoints/decode")
    assert {f.path: (f.before, f.after) for f in endpoints.fields}["replicas"] == (3, 2)
    topology = {f.path: (f.before, f.after) for f in next(c for c in result.changes if c.resource_id == "slurm/File/topology.env").fields}
    assert topology["variables.SGLANG_DISAGG_DECODE_NODES"] == ("3", "2") and topology["variables.NNODES"] == ("5", "4")
    assert pool_lines(result) == {"decode": ["~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)"]}
    assert result.warnings == []
    text = plan_text(result)
    assert "~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)" in text and "Warning" not in text
    assert (result.gpus_before, result.gpus_after) == (4, 3)


def test_scaling_out_adds_only_the_new_replicas(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack, nnodes=4, decode=2), stack(slurm_stack))
    assert touched(result) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/decode-2": "create",
        "slurm/File/endpoints/decode": "update",
    }
    assert pool_lines(result) == {"decode": ["~ decode: 2 -> 3 replicas (replica 2 added; replicas 0-1 untouched)"]}


def test_growing_a_one_replica_pool_leaves_its_replica_alone(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack, nnodes=4, decode=2), stack(slurm_stack, nnodes=5, prefill=2, decode=2))
    assert touched(result) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/prefill-1": "create",
        "slurm/File/endpoints/prefill": "update",
    }
    topology = {f.path: (f.before, f.after) for f in result.changes[0].fields}
    assert topology["variables.MADINFRA_FIRST_RANK_DECODE"] == ("2", "3")


def test_new_server_flags_roll_every_replica_with_surge_where_there_is_room(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, model={"args": ["--chunked-prefill-size", "4096"]}))
    assert [(c.resource_id, c.action) for c in result.changes] == [
        ("slurm/Job/prefill-0", "replace"),
        ("slurm/File/endpoints/prefill", "update"),
        ("slurm/Job/decode-0", "replace"),
        ("slurm/Job/decode-1", "replace"),
        ("slurm/Job/decode-2", "replace"),
        ("slurm/File/endpoints/decode", "update"),
    ]
    assert [f.path for f in result.changes[1].fields] == ["replica_jobs"], "new jobs get their endpoints written again"
    assert pool_lines(result) == {"prefill": ["-/+ prefill[0] rolling, surge 1"], "decode": ["-/+ decode[0..2] rolling, surge 1"]}
    assert (result.gpus_peak, result.gpus_free) == (5, 8)
    assert result.warnings == [], "no pool is ever without a ready replica"
    assert "GPUs: 4 -> 4 (peak 5 during apply; 8 free now)" in plan_text(result)


def test_a_full_partition_rolls_without_surge_and_says_why(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, model={"args": ["--x"]}), sinfo=FULL)
    lines = pool_lines(result)
    assert lines["decode"] == ["-/+ decode[0..2] rolling, 1 at a time, no surge (0 GPU(s) free, no node has 1 free for a surge replica)"]
    assert result.warnings == [
        "prefill: rolling its only replica without a surge leaves the pool with no ready replica during apply (0 GPU(s) free, no node has 1 free for a surge replica)"
    ]


def test_without_sinfo_the_plan_does_not_promise_a_surge(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, model={"args": ["--x"]}), sinfo=None)
    assert pool_lines(result)["decode"] == ["-/+ decode[0..2] rolling, 1 at a time, no surge (the cluster's free GPUs are unknown)"]


def test_pool_rollout_settings_shape_the_batches(slurm_stack) -> None:
    spec = stack(slurm_stack, model={"args": ["--x"]}, roles={"decode": {"rollout": {"max_surge": 2, "max_unavailable": 1}}})
    idle = "".join(f"debug*|node{i}|gpu:4|gpu:0|idle|0/8/0/8|\n" for i in range(1, 4))
    result, _ = plan_against(stack(slurm_stack), spec, sinfo=idle)
    decode = next(p for p in result.rollouts if p.pool == "decode")
    assert decode.surge == 2 and decode.batches() == [(0, 1), (2,)]


def test_a_new_tensor_parallel_size_names_the_forcing_fields(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, nproc=2))
    changes = {c.resource_id: c for c in result.changes}
    for role in ("prefill-0", "decode-0", "decode-2"):
        forced = [f.path for f in changes[f"slurm/Job/{role}"].fields if f.forces_replace]
        assert forced == ["gpus_per_node", "script_sha256"], role
    assert (result.gpus_before, result.gpus_after) == (4, 8)


def test_an_endpoint_file_written_for_other_jobs_is_rewritten() -> None:
    files = [
        ("endpoints/decode", "http://10.0.0.1:30000\nhttp://10.0.0.2:30000\n"),
        ("endpoints/decode.source", "replica.0=90\nreplica.1=91\nreplica_jobs=sha256:abc\n"),
        ("endpoints/prefill", ""),
        ("topology.env", "export B='x y'\nexport A=1\n"),
        ("endpoints/README.txt", "not an endpoint file"),
    ]
    found = {r.name: r for r in stackfiles.live_files(files, "/d", {"decode": {0: "90", 1: "92"}})}
    assert set(found) == {"endpoints/decode", "endpoints/prefill", "topology.env"}
    assert found["endpoints/decode"].spec == {"port": 30000, "replicas": 2, "replica_jobs": None}
    assert found["endpoints/decode"].status == {
        "path": "/d/endpoints/decode",
        "urls": ["http://10.0.0.1:30000", "http://10.0.0.2:30000"],
        "written_for": {"0": "90", "1": "91"},
    }
    assert found["endpoints/prefill"].spec == {"port": None, "replicas": 0, "replica_jobs": None}
    assert found["topology.env"].spec == {"variables": {"A": "1", "B": "x y"}}
    current = {r.name: r for r in stackfiles.live_files(files, "/d", {"decode": {0: "90", 1: "91"}})}
    assert current["endpoints/decode"].spec["replica_jobs"] == "sha256:abc"
    extra = {r.name: r for r in stackfiles.live_files(files, "/d", {"decode": {0: "90", 1: "91", 2: "93"}})}
    assert extra["endpoints/decode"].spec["replica_jobs"] is None, "a running replica the file does not list makes it stale"
    unfinished = [("endpoints/decode", files[0][1]), ("endpoints/decode.source", "replica.0=90\nreplica.1=91\n")]
    assert stackfiles.live_files(unfinished, "/d", {"decode": {0: "90", 1: "91"}})[0].spec["replica_jobs"] is None, "an apply that stopped mid-pool"


def test_only_replacing_changes_of_a_replica_move_the_pool_digest(slurm_stack) -> None:
    resources = SlurmProvider().desired(stack(slurm_stack), compile_launch(stack(slurm_stack)))
    prefill = next(r for r in resources if r.name == "prefill-0")
    digest = stackfiles.pool_job_digest(prefill.spec)
    assert stackfiles.pool_job_digest({**prefill.spec, "time": "99:00:00", "comment": "x"}) == digest
    assert stackfiles.pool_job_digest({**prefill.spec, "nodes": 2}) != digest
    assert stackfiles.pool_job_digest({**prefill.spec, "script_sha256": "other"}) != digest


def test_warnings_are_only_for_replaced_services_that_are_not_pool_replicas(slurm_stack) -> None:
    resources = {r.id: r for r in SlurmProvider().desired(stack(slurm_stack), compile_launch(stack(slurm_stack)))}
    decode, proxy = resources["slurm/Job/decode-1"], resources["slurm/Job/proxy"]
    train = SlurmProvider().desired(slurm_stack(), compile_launch(slurm_stack()))[0]
    provider = SlurmProvider()
    assert provider.plan_warnings([Change("update", decode.id, decode, decode)]) == []
    assert provider.plan_warnings([Change("replace", train.id, train, train)]) == []
    assert provider.plan_warnings([Change("replace", decode.id, decode, decode)]) == [], "replicas roll (plan_rollouts)"
    assert provider.plan_warnings([Change("replace", proxy.id, proxy, proxy)]) == [
        "proxy: all 1 node(s) restart; the stack will have no ready proxy replica during apply"
    ]
    assert not provider.restarts_on_update(Change("update", decode.id, decode, decode)), "scontrol update restarts nothing"


def test_sinfo_says_what_each_node_has_free() -> None:
    text = "debug*|node1|gpu:4|gpu:2|mixed|1/7/0/8|\ndebug*|node2|gpu:4|gpu:4|allocated|8/0/0/8|\ndebug*|node3|gpu:4|gpu:0|idle|0/8/0/8|\nother|node4|gpu:8|gpu:0|drained|0/8/0/8|\n"
    partitions = squeue.parse_sinfo(text)
    debug = partitions["debug"]
    assert debug.default and debug.node_gpus == {"node1": 4, "node2": 4, "node3": 4}
    assert debug.node_use["node1"] == squeue.NodeUse(2, 7, "mixed")
    assert capacity.gpus_free(debug) == 6
    assert capacity.room(debug, 1, exclusive=False) == 6
    assert capacity.room(debug, 2, exclusive=False) == 3
    assert capacity.room(debug, 4, exclusive=False) == 1
    assert capacity.room(debug, 2, exclusive=True) == 1, "an exclusive replica needs an idle node"
    assert capacity.room(partitions["other"], 1, exclusive=False) == 0, "a drained node takes no job"
    assert capacity.room(squeue.parse_sinfo("debug* node1 gpu:4\n")["debug"], 1, False) is None, "the old form says nothing of what is free"


@pytest.mark.parametrize("state", ["down", "drained", "draining", "idle*", "reserved", "allocated"])
def test_a_node_that_takes_no_job_has_no_room(state: str) -> None:
    assert capacity.replicas_on(squeue.NodeUse(4, 8, state), 1, exclusive=False) == 0


def test_a_replica_is_a_one_node_job_of_its_own(slurm_stack) -> None:
    resources = {r.id: r for r in SlurmProvider().desired(stack(slurm_stack), compile_launch(stack(slurm_stack)))}
    decode = resources["slurm/Job/decode-2"]
    assert (decode.role, decode.replica, decode.gpus, decode.spec["nodes"]) == ("decode", 2, 1, 1)
    assert decode.spec["name"] == "madinfra.demo.decode-2"
    script = decode.spec["submit"]["script"]
    assert "export MADINFRA_REPLICA_INDEX=2" in script
    assert decode.spec["submit"]["script_file"] == "decode-2.sbatch"
    assert decode.spec["submit"]["rollout"] == {"max_surge": 1, "max_unavailable": 1}
    assert decode.spec["submit"]["endpoints"]["file"] == "endpoints/decode"
    with pytest.raises(ProviderError):
        SlurmProvider()._write_file(resources["slurm/File/endpoints/decode"])
