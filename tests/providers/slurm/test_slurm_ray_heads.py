"""Ray heads as resources on SLURM, without a cluster: the two jobs ``desired`` makes, what the
plan says about the head, the head's status read into the live job, and apply's readiness."""

from __future__ import annotations

from madinfra.launchers import compile as compile_launch
from madinfra.resources import Change, ProviderOptions, Resource
from madinfra_slurm import SlurmProvider, ray_heads, rules
from slurm_fakes import apply_changes, ok, provider_with, row_text

STATUS = "address=10.0.0.1:6379\ndashboard=http://10.0.0.1:8265\nengine={engine}\nengine_restarts=0\ngcs=up\njob={job}\nnodes_alive={alive}\nnodes_expected={expected}\nupdated=1000\n"


def vllm(slurm_stack, nnodes: int, **overrides):
    spec = slurm_stack(
        slurm={"partition": "debug", "nodes": nnodes, "gpus_per_node": 4, "time": "1:00:00"},
        distributed={"launcher": "vllm", "nnodes": nnodes, "nproc_per_node": 4},
        model={"model_path": "/m"},
        **overrides,
    )
    return SlurmProvider(ProviderOptions()).desired(spec, compile_launch(spec))


def jobs(resources: list[Resource]) -> dict[str, Resource]:
    return {r.name: r for r in resources if r.kind == "slurm/Job"}


def test_a_multi_node_vllm_stack_is_a_head_job_and_a_workers_job(slurm_stack) -> None:
    found = jobs(vllm(slurm_stack, 3))
    head, workers = found["server"], found["server-workers"]
    assert (head.spec["nodes"], workers.spec["nodes"], head.gpus, workers.gpus) == (1, 2, 4, 8)
    assert head.role == workers.role == "server", "one role, as users name it (logs, roles.server)"
    assert workers.depends_on == ("slurm/File/topology.env", "slurm/Job/server")
    assert head.spec[rules.SUBMIT_KEY]["ray"] == {
        "cluster": "server", "part": "head", "nodes": 3, "status_file": "ray/server.status", "port": 6379, "dashboard_port": 8265, "http_port": 8000,
    }
    assert workers.spec[rules.SUBMIT_KEY]["ray"]["part"] == "workers" and workers.spec[rules.SUBMIT_KEY]["first_rank"] == 1


def test_resizing_changes_the_workers_job_and_not_the_heads(slurm_stack) -> None:
    two, three = jobs(vllm(slurm_stack, 2)), jobs(vllm(slurm_stack, 3))
    compared = lambda r: {k: v for k, v in r.spec.items() if k != rules.SUBMIT_KEY}  # noqa: E731 - submit is never diffed
    assert compared(two["server"]) == compared(three["server"])
    assert compared(two["server-workers"]) != compared(three["server-workers"])


def change(action: str, desired: Resource | None, current: Resource | None) -> Change:
    return Change(action, (desired or current).id, desired, current)  # type: ignore[union-attr]


def live(resource: Resource, nodes: int | None = None, address: str | None = "10.0.0.1:6379") -> Resource:
    spec = {**resource.spec, "nodes": nodes if nodes is not None else resource.spec["nodes"]}
    status = {"state": "RUNNING", "running": True}
    if address:
        status["ray"] = {"address": address}
    return Resource(resource.kind, resource.name, spec, role=resource.role, provider_id="9", status=status)


def test_the_plan_says_the_head_keeps_running_when_only_workers_change(slurm_stack) -> None:
    before, after = jobs(vllm(slurm_stack, 2)), jobs(vllm(slurm_stack, 3))
    changes = [change("replace", after["server-workers"], live(before["server-workers"]))]
    assert ray_heads.plan_warnings(changes) == [
        "server: the Ray head keeps running (GCS and dashboard stay up); the engine on it stops, and the stack serves nothing, "
        "until the workers' new job has joined (2 -> 3 nodes, pipeline stages with them)"
    ]
    in_place = [change("update", after["server-workers"], live(before["server-workers"]))]
    assert ray_heads.plan_warnings(in_place) == [], "a time limit changed in place restarts nothing"


def test_the_plan_says_when_the_head_restarts_and_what_the_workers_do(slurm_stack) -> None:
    resources = jobs(vllm(slurm_stack, 2))
    head = change("replace", resources["server"], live(resources["server"]))
    (alone,) = ray_heads.plan_warnings([head])
    assert alone.startswith("server: the Ray head at 10.0.0.1:6379 restarts (GCS, dashboard and the engine on it) because its own job is replaced")
    assert "its workers keep their job and join the new head" in alone
    (both,) = ray_heads.plan_warnings([head, change("replace", resources["server-workers"], live(resources["server-workers"]))])
    assert "its workers' job is replaced too" in both
    (gone,) = ray_heads.plan_warnings([change("delete", None, live(resources["server"]))])
    assert gone == "server: the Ray head at 10.0.0.1:6379 stops (GCS, dashboard and the engine on it)"


def test_the_provider_warns_in_the_heads_words_not_the_generic_restart(slurm_stack) -> None:
    resources = jobs(vllm(slurm_stack, 2))
    provider = SlurmProvider(ProviderOptions())
    warnings = provider.plan_warnings([change("replace", resources["server"], live(resources["server"]))])
    assert len(warnings) == 1 and "the Ray head at 10.0.0.1:6379 restarts" in warnings[0]


def test_the_head_job_carries_its_cluster_while_the_status_is_fresh_and_its_own() -> None:
    text = STATUS.format(engine="running", job="9", alive=2, expected=2)
    head = Resource("slurm/Job", "server", {}, role="server", provider_id="9", status={"running": True})
    workers = Resource("slurm/Job", "server-workers", {}, role="server-workers", provider_id="10", status={"running": True})
    ray_heads.attach([head, workers], [("ray/server.status", text), ("ray/other.txt", "x")], now=1010)
    assert head.status["ray"] == {
        "address": "10.0.0.1:6379", "dashboard": "http://10.0.0.1:8265", "gcs": "up", "nodes": "2/2", "engine": "running",
        "engine_restarts": 0, "health": "GCS up, 2/2 nodes, engine running",
    }
    assert workers.role == "server" and "ray" not in workers.status
    stale = ray_heads.live_status(ray_heads.parse_status(text), "9", now=1000 + ray_heads.STALE_SECONDS + 1)
    assert stale["health"] == f"unknown (the status file is not updated for {ray_heads.STALE_SECONDS + 1} s)"
    other = ray_heads.live_status(ray_heads.parse_status(text), "8", now=1001)
    assert other["health"] == "unknown (the status file is an earlier head job's)"
    assert ray_heads.parse_status("job=1\n") is None


def readiness_handler(resource: Resource, statuses: list[str]):
    """sbatch answers job 55, squeue says it runs, the status file reads ``statuses`` in turn."""
    seen: list[str] = []

    def handler(command: str, idempotent: bool):
        if "sbatch" in command:
            return ok("55\n")
        if "squeue" in command:
            return ok(row_text(resource, "55"))
        if "ray/server.status" in command and command.startswith("cat "):
            seen.append(command)
            return ok(statuses[min(len(seen), len(statuses)) - 1])
        return ok()

    return handler, seen


def test_new_workers_are_ready_once_every_node_joined_and_the_engine_answers(slurm_stack) -> None:
    workers = jobs(vllm(slurm_stack, 3))["server-workers"]
    statuses = [STATUS.format(engine="waiting", job="40", alive=2, expected=3), STATUS.format(engine="running", job="40", alive=3, expected=3)]
    handler, seen = readiness_handler(workers, statuses)
    provider, conn = provider_with(handler)
    (outcome,) = apply_changes(provider, [change("create", workers, None)])
    assert outcome[2] is None and outcome[1] == "55"
    assert len(seen) == 2, "not ready while a node was missing"
    assert any(c.startswith("curl -fsS -o /dev/null --max-time 5 http://10.0.0.1:8000/health") for c in conn.commands)


def test_a_new_head_needs_only_its_gcs_when_new_workers_follow(slurm_stack) -> None:
    resources = jobs(vllm(slurm_stack, 2))
    head = resources["server"]
    statuses = [STATUS.format(engine="waiting", job="40", alive=1, expected=2), STATUS.format(engine="waiting", job="55", alive=1, expected=2)]
    handler, seen = readiness_handler(head, statuses)
    provider, conn = provider_with(handler)
    provider._ray_new_workers = {"server"}
    assert provider._ray_ready(head, _row(head), head.spec[rules.SUBMIT_KEY]["ray"]) is False, "an earlier head's status"
    assert provider._ray_ready(head, _row(head), head.spec[rules.SUBMIT_KEY]["ray"]) is True
    provider._ray_new_workers = set()
    assert provider._ray_ready(head, _row(head), head.spec[rules.SUBMIT_KEY]["ray"]) is False, "alone, the head waits for the whole cluster"


def _row(resource: Resource):
    from madinfra_slurm import squeue

    return squeue.parse_squeue(row_text(resource, "55"))[0]


def test_the_plan_notes_where_a_new_head_listens(slurm_stack) -> None:
    resources = jobs(vllm(slurm_stack, 3))
    (note,) = SlurmProvider(ProviderOptions()).plan_notes([change("create", r, None) for r in resources.values()])
    assert note == (
        "server: slurm/Job/server is the Ray head: GCS on port 6379, dashboard on port 8265 and the engine on its node; "
        "2 worker node(s) join it (`madinfra output` gives its address once it runs)"
    )
