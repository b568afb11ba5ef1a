"""``slurm/File`` resources (topology.env, endpoint files) and what a plan of a running
disaggregated stack touches when one pool is resized or the server flags change; the engine's
own plan pipeline prints the provider's warnings. No cluster involved."""

from __future__ import annotations

from madinfra.engine.pipeline import compute_plan
from madinfra.launchers import compile as compile_launch
from madinfra.render.human import plan_text
from madinfra.resources import Change, Resource
from madinfra_slurm import SlurmProvider, readout, scripts, stackfiles
from slurm_fakes import ok, provider_with, row_text

JOB_IDS = {"prefill": "101", "decode": "102", "proxy": "103"}


def stack(slurm_stack, nnodes: int = 5, prefill: int = 1, decode: int = 3, nproc: int = 1, **overrides):
    values = dict(
        slurm={"partition": "debug", "nodes": nnodes, "gpus_per_node": nproc, "time": "10", "exclusive": False},
        distributed={"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": nproc, "sglang_disagg": {"prefill_nodes": prefill, "decode_nodes": decode}},
        env_vars={"MODEL_PATH": "/m"},
        service={"health_check": {"http_path": "/health"}},
    )
    values.update(overrides)
    return slurm_stack(**values)


def running(resources: list[Resource]) -> str:
    """The live read output of a stack whose desired resources all run as applied."""
    rows = "".join(row_text(r, JOB_IDS[r.name]) for r in resources if r.kind == scripts.KIND)
    out = rows + f"{readout.MARK} squeue-exit 0\n{readout.MARK} dir /home/u/.madinfra/demo\n"
    for r in resources:
        if r.kind != stackfiles.FILE_KIND:
            continue
        if r.name == "topology.env":
            out += f"{readout.MARK} file topology.env\n{r.spec['submit']['text']}"
            continue
        pool = r.spec["submit"]["pool"]
        urls = "".join(f"http://10.0.0.{i}:{r.spec['port']}\n" for i in range(r.spec["nodes"]))
        out += f"{readout.MARK} file {r.name}\n{urls}"
        out += f"{readout.MARK} file {r.name}.source\n{stackfiles.source_text(JOB_IDS[pool], r.spec['pool_job'])}"
    return out


def plan_against(spec_before, spec_after):
    before = SlurmProvider().desired(spec_before, compile_launch(spec_before))
    provider, conn = provider_with(lambda command, _: ok(running(before)) if command.startswith("squeue") else ok())
    return compute_plan(spec_after, provider, None), conn


def touched(result) -> dict[str, str]:
    return {c.resource_id: c.action for c in result.changes}


def test_an_unchanged_running_stack_plans_nothing_in_one_round_trip(slurm_stack) -> None:
    result, conn = plan_against(stack(slurm_stack), stack(slurm_stack))
    assert result.changes == [] and len(conn.commands) == 1
    files = {r.id: r for r in result.live if r.kind == stackfiles.FILE_KIND}
    assert files["slurm/File/endpoints/decode"].spec == {"port": 30000, "nodes": 3, "pool_job": result.desired[4].spec["pool_job"]}
    assert files["slurm/File/topology.env"].status == {"path": "/home/u/.madinfra/demo/topology.env"}


def test_resizing_decode_touches_only_decode_its_endpoints_and_the_topology(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, nnodes=4, decode=2))
    assert touched(result) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/decode": "replace",
        "slurm/File/endpoints/decode": "update",
    }
    changes = {c.resource_id: c for c in result.changes}
    decode = changes["slurm/Job/decode"]
    assert [(f.path, f.before, f.after, f.forces_replace) for f in decode.fields] == [("nodes", 3, 2, True)]
    assert decode.reasons == ["nodes forces replacement because the resource is running"]
    endpoints = changes["slurm/File/endpoints/decode"]
    assert [(f.path, f.before, f.after) for f in endpoints.fields][0] == ("nodes", 3, 2)
    assert [f.path for f in endpoints.fields] == ["nodes", "pool_job"], "written again for the new decode job"
    topology = {f.path: (f.before, f.after) for f in changes["slurm/File/topology.env"].fields}
    assert topology["variables.SGLANG_DISAGG_DECODE_NODES"] == ("3", "2") and topology["variables.NNODES"] == ("5", "4")
    assert [c.resource_id for c in result.changes] == ["slurm/File/topology.env", "slurm/Job/decode", "slurm/File/endpoints/decode"]
    text = plan_text(result)
    assert "Warning: decode: all 3 node(s) restart; the stack will have no ready decode replica during apply" in text
    assert "Workloads that will restart: slurm/Job/decode (replaced)" in text


def test_resizing_prefill_leaves_decode_and_the_proxy_alone(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack, nnodes=4, decode=2), stack(slurm_stack, nnodes=5, prefill=2, decode=2))
    assert touched(result) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/prefill": "replace",
        "slurm/File/endpoints/prefill": "update",
    }
    topology = {f.path: (f.before, f.after) for f in result.changes[0].fields}
    assert topology["variables.MADINFRA_FIRST_RANK_DECODE"] == ("2", "3")


def test_new_server_flags_roll_the_pools_one_at_a_time_and_rewrite_their_endpoints(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, model={"args": ["--chunked-prefill-size", "4096"]}))
    assert [(c.resource_id, c.action) for c in result.changes] == [
        ("slurm/Job/prefill", "replace"),
        ("slurm/File/endpoints/prefill", "update"),
        ("slurm/Job/decode", "replace"),
        ("slurm/File/endpoints/decode", "update"),
    ]
    assert [f.path for f in result.changes[1].fields] == ["pool_job"], "a new job gets its endpoints written again"
    assert result.warnings == [
        "prefill: all 1 node(s) restart; the stack will have no ready prefill replica during apply",
        "decode: all 3 node(s) restart; the stack will have no ready decode replica during apply",
    ]


def test_a_new_tensor_parallel_size_names_the_forcing_fields(slurm_stack) -> None:
    result, _ = plan_against(stack(slurm_stack), stack(slurm_stack, nproc=2))
    changes = {c.resource_id: c for c in result.changes}
    for pool in ("prefill", "decode"):
        forced = [f.path for f in changes[f"slurm/Job/{pool}"].fields if f.forces_replace]
        assert forced == ["gpus_per_node", "script_sha256"], pool
    assert (result.gpus_before, result.gpus_after) == (4, 8)


def test_an_endpoint_file_written_for_another_job_is_rewritten(slurm_stack) -> None:
    files = [
        ("endpoints/decode", "http://10.0.0.1:30000\n"),
        ("endpoints/decode.source", "job=90\npool_job=sha256:abc\n"),
        ("endpoints/prefill", ""),
        ("topology.env", "export B='x y'\nexport A=1\n"),
        ("endpoints/README.txt", "not an endpoint file"),
    ]
    found = {r.name: r for r in stackfiles.live_files(files, "/d", {"decode": "91"})}
    assert set(found) == {"endpoints/decode", "endpoints/prefill", "topology.env"}
    assert found["endpoints/decode"].spec == {"port": 30000, "nodes": 1, "pool_job": None}
    assert found["endpoints/decode"].status == {"path": "/d/endpoints/decode", "urls": ["http://10.0.0.1:30000"], "written_for_job": "90"}
    assert found["endpoints/prefill"].spec == {"port": None, "nodes": 0, "pool_job": None}
    assert found["topology.env"].spec == {"variables": {"A": "1", "B": "x y"}}
    current = stackfiles.live_files(files, "/d", {"decode": "90"})[0]
    assert current.spec["pool_job"] == "sha256:abc"


def test_only_replacing_changes_of_a_pool_move_its_pool_job_digest(slurm_stack) -> None:
    (_, prefill, *_rest) = SlurmProvider().desired(stack(slurm_stack), compile_launch(stack(slurm_stack)))
    digest = stackfiles.pool_job_digest(prefill.spec)
    assert stackfiles.pool_job_digest({**prefill.spec, "time": "99:00:00", "comment": "x"}) == digest
    assert stackfiles.pool_job_digest({**prefill.spec, "nodes": 2}) != digest
    assert stackfiles.pool_job_digest({**prefill.spec, "script_sha256": "other"}) != digest


def test_warnings_are_only_for_replaced_services(slurm_stack) -> None:
    resources = {r.id: r for r in SlurmProvider().desired(stack(slurm_stack), compile_launch(stack(slurm_stack)))}
    decode = resources["slurm/Job/decode"]
    train = SlurmProvider().desired(slurm_stack(), compile_launch(slurm_stack()))[0]
    provider = SlurmProvider()
    assert provider.plan_warnings([Change("update", decode.id, decode, decode)]) == []
    assert provider.plan_warnings([Change("replace", train.id, train, train)]) == []
    assert provider.plan_warnings([Change("create", decode.id, decode, None), Change("delete", decode.id, None, decode)]) == []
    assert provider.plan_warnings([Change("replace", decode.id, decode, decode)]) == [
        "decode: all 3 node(s) restart; the stack will have no ready decode replica during apply"
    ]
    assert not provider.restarts_on_update(Change("update", decode.id, decode, decode)), "scontrol update restarts nothing"
