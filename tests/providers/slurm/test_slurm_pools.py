"""``pools.py`` against a scripted cluster: the order of endpoint writes, proxy acknowledgements,
submissions and cancellations for scale-in, scale-out, rolling with and without surge, and
rollback. No cluster involved (the same behaviours run for real in test_slurm_rollout_e2e.py)."""

from __future__ import annotations

import re

import pytest

from madinfra.launchers import compile as compile_launch
from madinfra.resources import Change, ProviderOptions, Resource
from madinfra.rollout import PoolRollout, RolloutPlan
from madinfra_slurm import SlurmProvider, pools, squeue, stackfiles
from madinfra_slurm.connection import CommandResult
from slurm_fakes import FakeConnection, ok, row_text

SCRIPT_RE = re.compile(r"sbatch --parsable (\S+)")


class Cluster(FakeConnection):
    """A tiny Slurm: sbatch runs the resource whose script was last uploaded under that name,
    scancel ends a job, squeue lists jobs; ``failing`` job names never become ready. ``events``
    interleaves commands and file writes in the order they happened."""

    def __init__(self, resources: list[Resource], failing: set[str] = frozenset()):
        super().__init__(self.answer)
        self.by_script = {r.spec["submit"]["script_file"]: r for r in resources if r.kind == "slurm/Job"}
        self.by_text = {r.spec["submit"]["script"]: r for r in resources if r.kind == "slurm/Job"}
        self.previous: dict[str, Resource] = {}
        self.jobs: dict[str, tuple[Resource, str]] = {}
        self.failing = set(failing)
        self.next_id = 100
        self.events: list[str] = []

    def start(self, resource: Resource) -> str:
        self.next_id += 1
        job = str(self.next_id)
        state = "FAILED" if resource.spec["script_sha256"] in self.failing else "RUNNING"
        self.jobs[job] = (resource, state)
        return job

    def write_text(self, path: str, text: str, *, mode: int = 0o644, what: str) -> None:
        super().write_text(path, text, mode=mode, what=what)
        name = path.rsplit("/", 1)[1]
        if name.endswith(".sbatch"):
            self.by_script[name] = self.by_text[text]
        self.events.append(f"write {name}: {' '.join(text.split())}" if "endpoints" in path else f"write {name}")

    def answer(self, command: str, idempotent: bool) -> CommandResult:
        self.events.append(command)
        if "sbatch --parsable" in command:
            job = self.start(self.by_script[SCRIPT_RE.search(command).group(1)])
            self.events[-1] = f"sbatch {self.jobs[job][0].name} -> {job}"
            return ok(job + "\n")
        if command.startswith("scancel"):
            job = command.split()[1]
            self.jobs[job] = (self.jobs[job][0], "CANCELLED")
            self.events[-1] = f"scancel {job}"
            return ok()
        if command.startswith("squeue"):
            ids = command.split("--jobs=")[1].split()[0].split(",") if "--jobs=" in command else list(self.jobs)
            ended_too = " -t all" in command
            rows = [row_text(self.jobs[j][0], j, self.jobs[j][1]) for j in ids if j in self.jobs and (ended_too or self.jobs[j][1] == "RUNNING")]
            return ok("".join(rows))
        if command.startswith("scontrol show node"):
            return ok("NodeName=node1 NodeAddr=10.0.0.1\n")
        if ".previous" in command and "cp -p" in command:
            self.events[-1] = "keep previous"
            return ok()
        if ".previous" in command and "mv -f" in command:
            script = re.search(r"mv -f (\S+)\.previous (\S+)", command).group(2)
            self.by_script[script] = self.previous[script]
            self.events[-1] = "restore previous"
            return ok()
        if "proxy-seen" in command:
            self.events[-1] = "wait for the proxy"
            return ok()
        return ok()

    def running(self, resource: Resource) -> Resource:
        """``resource`` as a running live job (submitted now)."""
        job = self.start(resource)
        live = squeue.row_resource(squeue.parse_squeue(row_text(resource, job))[0], resource.name, resource.name)
        self.previous[resource.spec["submit"]["script_file"]] = resource
        return live

    def story(self) -> list[str]:
        """The events that matter for ordering (no mkdir, uploads of scripts, node reads)."""
        keep = ("write decode", "write prefill", "sbatch", "scancel", "wait for", "keep previous", "restore previous")
        return [e for e in self.events if e.startswith(keep) and not e.endswith(".sbatch")]


def stack(slurm_stack, decode: int = 3, **overrides):
    nnodes = 2 + decode
    values = dict(
        slurm={"partition": "debug", "nodes": nnodes, "gpus_per_node": 1, "time": "10", "exclusive": True},
        distributed={"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": 1, "sglang_disagg": {"prefill_nodes": 1, "decode_nodes": decode}},
        env_vars={"MODEL_PATH": "/m"},
        service={"port": 8000, "health_check": {"http_path": None}},
    )
    values.update(overrides)
    return slurm_stack(**values)


def resources(spec) -> dict[str, Resource]:
    return {r.name: r for r in SlurmProvider().desired(spec, compile_launch(spec))}


def run(cluster: Cluster, changes: list[Change], rollout: PoolRollout | None = None, rollback: bool = True) -> dict[str, tuple[str | None, Exception | None]]:
    provider = SlurmProvider(ProviderOptions(rollback=rollback), connection=cluster, sleep=lambda s: None, clock=iter(range(100_000)).__next__)
    provider._read_stack = "demo"
    provider._rollouts = RolloutPlan(pools=[rollout] if rollout else [])
    outcomes: dict[str, tuple[str | None, Exception | None]] = {}
    provider.apply(changes, lambda rid, message: None, lambda change, live, error: outcomes.__setitem__(change.resource_id, (live.provider_id if live else None, error)))
    return outcomes


def file_change(before: dict[str, Resource], after: dict[str, Resource]) -> Change:
    return Change("update", "slurm/File/endpoints/decode", after["endpoints/decode"], before["endpoints/decode"])


def test_scale_in_drains_waits_for_the_proxy_then_cancels(slurm_stack) -> None:
    before, after = resources(stack(slurm_stack, 3)), resources(stack(slurm_stack, 2))
    cluster = Cluster(list(before.values()) + list(after.values()))
    live = {name: cluster.running(before[name]) for name in ("proxy", "decode-0", "decode-1", "decode-2")}
    outcomes = run(cluster, [Change("delete", "slurm/Job/decode-2", None, live["decode-2"]), file_change(before, after)])
    assert outcomes == {"slurm/Job/decode-2": (None, None), "slurm/File/endpoints/decode": (None, None)}
    ids = [live[f"decode-{i}"].provider_id for i in range(3)]
    story = cluster.story()
    assert story[:3] == [
        "write decode: http://10.0.0.1:30000 http://10.0.0.1:30000",
        f"write decode.source: replica.0={ids[0]} replica.1={ids[1]}",
        "wait for the proxy",
    ]
    assert story[3] == f"scancel {ids[2]}", "cancelled only after the proxy dropped it"
    assert story[-3].startswith("write decode: ") and f"replica_jobs={after['endpoints/decode'].spec['replica_jobs']}" in story[-2]
    assert cluster.jobs[ids[0]][1] == cluster.jobs[ids[1]][1] == "RUNNING"


def test_scale_out_adds_a_replica_to_the_file_once_it_runs(slurm_stack) -> None:
    before, after = resources(stack(slurm_stack, 2)), resources(stack(slurm_stack, 3))
    cluster = Cluster(list(before.values()) + list(after.values()))
    live = {name: cluster.running(before[name]) for name in ("proxy", "decode-0", "decode-1")}
    outcomes = run(cluster, [Change("create", "slurm/Job/decode-2", after["decode-2"], None), file_change(before, after)])
    new = outcomes["slurm/Job/decode-2"][0]
    assert new is not None and outcomes["slurm/File/endpoints/decode"] == (None, None)
    story = cluster.story()
    assert story[0] == f"sbatch decode-2 -> {new}"
    assert story[2] == f"write decode.source: replica.0={live['decode-0'].provider_id} replica.1={live['decode-1'].provider_id} replica.2={new}"
    assert not any(e.startswith("scancel") for e in story)


def roll(slurm_stack, surge: int, failing: bool = False, rollback: bool = True):
    before = resources(stack(slurm_stack, 2))
    after = resources(stack(slurm_stack, 2, roles={"decode": {"env": {"V": "2"}}}))
    cluster = Cluster(list(before.values()) + list(after.values()), failing={after["decode-0"].spec["script_sha256"]} if failing else set())
    live = {name: cluster.running(before[name]) for name in ("proxy", "decode-0", "decode-1")}
    changes = [Change("replace", f"slurm/Job/decode-{i}", after[f"decode-{i}"], live[f"decode-{i}"]) for i in range(2)] + [file_change(before, after)]
    rollout = PoolRollout("decode", 2, 2, rolled=(0, 1), surge=surge, unavailable=0 if surge else 1, gpus_per_replica=1)
    return cluster, live, run(cluster, changes, rollout, rollback)


def test_surge_starts_the_new_job_before_the_old_one_stops(slurm_stack) -> None:
    cluster, live, outcomes = roll(slurm_stack, surge=1)
    old0, old1 = live["decode-0"].provider_id, live["decode-1"].provider_id
    new0, new1 = outcomes["slurm/Job/decode-0"][0], outcomes["slurm/Job/decode-1"][0]
    assert all(error is None for _, error in outcomes.values())
    story = cluster.story()
    assert story[:5] == [
        f"sbatch decode-0 -> {new0}",
        "write decode: http://10.0.0.1:30000 http://10.0.0.1:30000",
        f"write decode.source: replica.0={new0} replica.1={old1}",
        "wait for the proxy",
        f"scancel {old0}",
    ], "the old job stops only after the new one serves and the proxy switched"
    assert story[5] == f"sbatch decode-1 -> {new1}", "one batch of surge 1 at a time"


def test_without_surge_a_replica_is_drained_its_script_kept_then_replaced(slurm_stack) -> None:
    cluster, live, outcomes = roll(slurm_stack, surge=0)
    old0, old1 = live["decode-0"].provider_id, live["decode-1"].provider_id
    new0 = outcomes["slurm/Job/decode-0"][0]
    assert cluster.story()[:7] == [
        "write decode: http://10.0.0.1:30000",
        f"write decode.source: replica.1={old1}",
        "wait for the proxy",
        "keep previous",
        f"scancel {old0}",
        f"sbatch decode-0 -> {new0}",
        "write decode: http://10.0.0.1:30000 http://10.0.0.1:30000",
    ], "decode-1 keeps serving while decode-0 is replaced"


def test_a_failed_surge_replica_is_cancelled_and_the_old_one_keeps_serving(slurm_stack) -> None:
    cluster, live, outcomes = roll(slurm_stack, surge=1, failing=True)
    old0 = live["decode-0"].provider_id
    kept, error = outcomes["slurm/Job/decode-0"]
    assert kept == old0 and isinstance(error, pools.RolledBack)
    assert "rolled back" in str(error) and f"job {old0} (the previous version) kept serving" in str(error)
    assert isinstance(outcomes["slurm/Job/decode-1"][1], Exception) and "skipped" in str(outcomes["slurm/Job/decode-1"][1])
    assert "skipped" in str(outcomes["slurm/File/endpoints/decode"][1])
    assert cluster.jobs[old0][1] == "RUNNING"
    assert not any(e.startswith("write decode") for e in cluster.story()), "the file never listed the failed job"


def test_a_failed_replacement_without_surge_resubmits_the_previous_script(slurm_stack) -> None:
    cluster, live, outcomes = roll(slurm_stack, surge=0, failing=True)
    resubmitted, error = outcomes["slurm/Job/decode-0"]
    assert isinstance(error, pools.RolledBack) and "the previous version serves again" in str(error)
    assert resubmitted not in (None, live["decode-0"].provider_id)
    resource, state = cluster.jobs[resubmitted]
    assert state == "RUNNING" and resource.spec["script_sha256"] == live["decode-0"].spec["script_sha256"]
    story = cluster.story()
    assert story.index("restore previous") < story.index(f"sbatch decode-0 -> {resubmitted}")
    assert story[-2:] == [f"write decode.source: replica.0={resubmitted} replica.1={live['decode-1'].provider_id}", "wait for the proxy"], (
        "apply ends once the proxy routes to the resubmitted replica again"
    )


def test_no_rollback_leaves_the_failed_replica_where_it_stopped(slurm_stack) -> None:
    cluster, live, outcomes = roll(slurm_stack, surge=1, failing=True, rollback=False)
    _, error = outcomes["slurm/Job/decode-0"]
    assert isinstance(error, pools.ReplicaFailed) and "--no-rollback" in str(error)
    assert not any(e.startswith("scancel") for e in cluster.story())


@pytest.mark.parametrize("surge", [0, 1])
def test_the_plans_strategy_is_what_apply_does(slurm_stack, surge: int) -> None:
    cluster, _, _ = roll(slurm_stack, surge=surge)
    assert ("keep previous" in cluster.story()) == (surge == 0)


def test_source_text_round_trips() -> None:
    text = stackfiles.source_text({2: "9", 0: "7"}, "sha256:x")
    assert text == "replica.0=7\nreplica.2=9\nreplica_jobs=sha256:x\n"
    assert stackfiles.source_jobs(text) == {0: "7", 2: "9"}


def test_destroy_removes_the_proxy_and_the_endpoint_file_before_the_replicas(slurm_stack) -> None:
    before = resources(stack(slurm_stack, 2))
    cluster = Cluster(list(before.values()))
    live = {name: cluster.running(before[name]) for name in ("prefill-0", "decode-0", "decode-1", "proxy")}
    files = [
        Resource("slurm/File", name, {}, status={"path": f"/home/u/.madinfra/demo/{name}"})
        for name in ("topology.env", "endpoints/prefill", "endpoints/decode")
    ]
    changes = [Change("delete", r.id, None, r) for r in list(live.values()) + files]
    outcomes = run(cluster, changes)
    assert all(error is None for _, error in outcomes.values())
    events = cluster.events
    first_decode_cancel = min(events.index(f"scancel {live[f'decode-{i}'].provider_id}") for i in range(2))
    assert any(e.startswith("rm -f /home/u/.madinfra/demo/endpoints/decode") for e in events[:first_decode_cancel]), "drained first"
    assert "rm -rf" in events[-1], "the stack directory goes after the last delete"
