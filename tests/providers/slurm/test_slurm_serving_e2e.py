"""A persistent disaggregated serving stack on the SLURM sandbox, changed in place (issues 6, 13).

SGLang cannot run here, so every role's command is the stand-in server next to this file
(``standin_server.py``, uploaded through ``model.scripts_dir``): the pool replicas answer
/health on a port of their own, and the proxy is a command of the user's own
(``roles.proxy.command``) that serves /endpoints from the endpoint files apply writes, so the
file write is the drain point (``test_slurm_rollout_e2e.py`` covers madinfra's own proxy and its
acknowledgements). Each pool replica is its own one-node job. With ``exclusive: false`` and one
GPU per replica, 1 proxy + 1 prefill + 3 decode fit on the sandbox's three nodes. Through the
real CLI over real SSH:

1. apply 5 nodes; the endpoint is printed by ``madinfra output``;
2. decode 3 -> 2: only ``decode-2`` goes (after leaving the endpoint file), the topology and the
   file change; every other job keeps its id;
3. prefill 1 -> 2: ``prefill-1`` is added; nothing else restarts;
4. a new time limit: ``scontrol update`` on every job, no job id changes;
5. a new tensor parallel size: every replica is rolled (prefill before decode), each forcing
   field named, and the plan says how each pool rolls;
then destroy.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from serving_support import HEALTH, POOLS, free_port, get, install_standins

pytestmark = pytest.mark.slurm


def command(role: str, port: int) -> str:
    where = '--port-dir "$MADINFRA_WORKDIR/standin"'
    if role == "proxy":
        return f'exec python3 standin_server.py --role proxy --port {port} {where} --endpoints "$MADINFRA_WORKDIR/endpoints"'
    return f"exec python3 standin_server.py --role {role} --port 0 {where} --ready-after 1"


def serving(stack_name: str, port: int, nnodes: int, prefill: int, decode: int, *, tp: int = 1, time_limit: str = "10") -> dict[str, Any]:
    return {
        "slurm": {"partition": "debug", "nodes": nnodes, "gpus_per_node": tp, "time": time_limit, "exclusive": False, "ready_timeout": 60},
        "distributed": {
            "launcher": "sglang-disagg",
            "nnodes": nnodes,
            "nproc_per_node": tp,
            "sglang_disagg": {"prefill_nodes": prefill, "decode_nodes": decode},
        },
        "model": {"scripts_dir": "scripts"},
        "env_vars": {"MODEL_PATH": "/models/none"},
        "service": {"port": port, "health_check": {"http_path": None, "command": HEALTH.format(stack=stack_name)}},
        "roles": {role: {"command": command(role, port)} for role in ("proxy", "prefill", "decode")},
    }


class Serving:
    """The stack under test plus what the checks need to read back."""

    def __init__(self, stack, port: int):
        self.stack = stack
        self.port = port

    def write(self, nnodes: int, prefill: int, decode: int, **kwargs: Any) -> None:
        self.stack.write(serving(self.stack.name, self.port, nnodes, prefill, decode, **kwargs))

    def plan(self) -> dict[str, Any]:
        return json.loads(self.stack.cli("plan", str(self.stack.path), "--json").stdout)

    def plan_text(self) -> str:
        return self.stack.cli("plan", str(self.stack.path)).stdout

    def apply(self) -> str:
        return self.stack.cli("apply", str(self.stack.path), "--yes").stdout

    def ids(self) -> dict[str, str]:
        return {job["name"].rsplit(".", 1)[1]: job["id"] for job in self.stack.jobs() if job["state"] == "RUNNING"}

    def remote(self, path: str) -> str:
        return self.stack.sandbox.check(f"cat {self.stack.remote_dir()}/{path}")

    def endpoint_file(self, pool: str) -> list[str]:
        return self.remote(f"endpoints/{pool}").split()

    def served_endpoints(self) -> dict[str, list[str]]:
        return get(f"http://127.0.0.1:{self.port}/endpoints")

    def info(self, job_id: str) -> dict[str, Any]:
        port = self.remote(f"standin/{job_id}.0.port").strip()
        return get(f"http://127.0.0.1:{port}/info")

    def check_endpoints(self, prefill: int, decode: int) -> None:
        addr = self.stack.sandbox.target["host"]
        expected = {"prefill": [f"http://{addr}:30000"] * prefill, "decode": [f"http://{addr}:30000"] * decode}
        ids = self.ids()
        for pool, count in (("prefill", prefill), ("decode", decode)):
            assert self.endpoint_file(pool) == expected[pool], pool
            written = [line for line in self.remote(f"endpoints/{pool}.source").splitlines() if line.startswith("replica.")]
            assert written == [f"replica.{i}={ids[f'{pool}-{i}']}" for i in range(count)], f"endpoints/{pool} must be written for the live {pool} replicas"
        assert self.served_endpoints() == expected, "the proxy serves exactly the pools' current endpoints"


def changes_of(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {change["address"]: change for change in plan["changes"]}


def actions(plan: dict[str, Any]) -> dict[str, str]:
    return {change["address"]: change["action"] for change in plan["changes"]}


def test_a_disaggregated_stack_is_resized_retimed_and_rolled_in_place(new_sandbox_stack) -> None:
    stack = new_sandbox_stack()
    install_standins(stack.workdir)
    svc = Serving(stack, free_port())

    # 1. Five nodes: 1 proxy + 1 prefill + 3 decode replicas, the topology and two endpoint files.
    svc.write(5, 1, 3)
    assert actions(svc.plan()) == {
        "slurm/File/topology.env": "create",
        "slurm/Job/prefill-0": "create",
        "slurm/File/endpoints/prefill": "create",
        "slurm/Job/decode-0": "create",
        "slurm/Job/decode-1": "create",
        "slurm/Job/decode-2": "create",
        "slurm/File/endpoints/decode": "create",
        "slurm/Job/proxy": "create",
    }
    applied = svc.apply()
    assert "Resources: 8 added" in applied
    first = svc.ids()
    assert set(first) == {"proxy", "prefill-0", "decode-0", "decode-1", "decode-2"}
    svc.check_endpoints(1, 3)
    assert "SGLANG_DISAGG_DECODE_NODES=3" in svc.remote("topology.env")
    decode_info = svc.info(first["decode-2"])
    assert (decode_info["SGLANG_DISAGG_DECODE_NODES"], decode_info["NODE_RANK"]) == ("3", "4"), "every task sources topology.env"
    ips = decode_info["SGLANG_NODE_IPS"].split(",")
    assert len(ips) == 5 and ips[4] == stack.sandbox.target["host"], "the replica finds itself at its global rank"
    endpoint = stack.cli("output", str(stack.path), "endpoint").stdout.strip()
    assert endpoint == f"http://{stack.sandbox.target['host']}:{svc.port}/v1"
    assert get(endpoint + "/models")["data"][0]["owned_by"] == "proxy"
    assert f"endpoint = {endpoint}" in stack.cli("output", str(stack.path)).stdout
    assert svc.plan()["changes"] == []

    # 2. decode 3 -> 2: replica 2 leaves the endpoint file, then its job is cancelled.
    svc.write(4, 1, 2)
    plan = svc.plan()
    assert actions(plan) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/decode-2": "delete",
        "slurm/File/endpoints/decode": "update",
    }
    assert plan["warnings"] == []
    assert [p["lines"] for p in plan["rollouts"]] == [["~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)"]]
    text = svc.plan_text()
    assert "- slurm/Job/decode-2" in text and "Warning" not in text
    applied = svc.apply()
    assert applied.index("wrote endpoints/decode") < applied.index("slurm/Job/decode-2: cancelled job"), "drained before cancelled"
    second = svc.ids()
    assert second == {k: v for k, v in first.items() if k != "decode-2"}, "every other job keeps running"
    svc.check_endpoints(1, 2)

    # 3. prefill 1 -> 2 (5 nodes again): only prefill-1 is new.
    svc.write(5, 2, 2)
    assert actions(svc.plan()) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/prefill-1": "create",
        "slurm/File/endpoints/prefill": "update",
    }
    svc.apply()
    third = svc.ids()
    assert {k: third[k] for k in second} == second
    svc.check_endpoints(2, 2)
    assert "MADINFRA_FIRST_RANK_DECODE=3" in svc.remote("topology.env")
    assert svc.info(third["prefill-1"])["NODE_RANK"] == "2"

    # 4. A new time limit: scontrol update on every running job, nothing resubmitted.
    svc.write(5, 2, 2, time_limit="12")
    plan = svc.plan()
    assert actions(plan) == {f"slurm/Job/{r}": "update" for r in third}
    assert plan["warnings"] == [] and plan["restarts"] == [] and plan["rollouts"] == []
    applied = svc.apply()
    assert svc.ids() == third
    for role, job_id in third.items():
        assert f"slurm/Job/{role}: updated job {job_id} in place with scontrol update (time)" in applied
        assert stack.sandbox.scontrol_job(job_id)["TimeLimit"] == "00:12:00"

    # 5. Tensor parallel size 1 -> 2: every replica rolls, prefill before decode.
    svc.write(5, 2, 2, tp=2, time_limit="12")
    plan = svc.plan()
    changes = changes_of(plan)
    for role in ("prefill-0", "prefill-1", "decode-0", "decode-1"):
        assert changes[f"slurm/Job/{role}"]["action"] == "replace"
        assert changes[f"slurm/Job/{role}"]["replace_paths"] == ["gpus_per_node", "script_sha256"], role
    for pool in POOLS:
        assert changes[f"slurm/File/endpoints/{pool}"]["action"] == "update"
    assert plan["gpus"]["before"] == 4 and plan["gpus"]["after"] == 8
    assert [p["pool"] for p in plan["rollouts"]] == ["prefill", "decode"]
    for pool in plan["rollouts"]:
        assert pool["lines"][0].startswith(f"-/+ {pool['pool']}[0..1] rolling"), pool["lines"]
    applied = svc.apply()
    fifth = svc.ids()
    assert all(fifth[r] != third[r] for r in ("prefill-0", "prefill-1", "decode-0", "decode-1"))
    assert max(int(fifth[f"prefill-{i}"]) for i in range(2)) < min(int(fifth[f"decode-{i}"]) for i in range(2)), "prefill rolls first"
    svc.check_endpoints(2, 2)
    assert svc.plan()["changes"] == []

    destroyed = stack.cli("destroy", str(stack.path), "--yes").stdout
    assert "Destroy complete! Resources: 8 destroyed." in destroyed
    assert stack.jobs() == []
    assert stack.sandbox.ssh(f"test -e {stack.remote_dir()}/topology.env || test -e {stack.remote_dir()}/endpoints/decode").returncode != 0


def test_a_finished_training_job_stays_finished_until_the_stack_changes(sandbox_stack) -> None:
    stack = sandbox_stack

    def training(command: str, time_limit: str = "5") -> dict[str, Any]:
        return {
            "slurm": {"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": time_limit, "exclusive": False, "ready_timeout": 60},
            "distributed": {"launcher": "torchrun", "nnodes": 1, "nproc_per_node": 1},
            "roles": {"worker": {"command": command}},
        }

    def wait_finished() -> None:
        deadline = time.monotonic() + 60
        while any(job["state"] in ("RUNNING", "PENDING", "COMPLETING") for job in stack.jobs()) and time.monotonic() < deadline:
            time.sleep(1)

    # The sleep keeps the job RUNNING while apply waits for it, so apply itself always succeeds.
    stack.write(training("sleep 8"))
    stack.cli("apply", str(stack.path), "--yes")
    first = stack.state_job_id("worker")
    wait_finished()
    assert "No changes" in stack.cli("plan", str(stack.path)).stdout, "a completed job is not submitted again"
    shown = json.loads(stack.cli("show", str(stack.path), "--json").stdout)
    (row,) = shown["resources"]
    assert row["live"]["provider_id"] == first and row["live"]["status"]["state"] == "COMPLETED"
    assert row["live"]["status"]["exit_code"] == 0 and row["sync"] == "in sync"

    stack.write(training("sleep 8; exit 3"))
    planned = stack.cli("plan", str(stack.path)).stdout
    assert "-/+ slurm/Job/worker" in planned and "script_sha256" in planned
    assert "worker: job " in planned and "has finished: COMPLETED; applying this change submits it again" in planned
    stack.cli("apply", str(stack.path), "--yes")
    second = stack.state_job_id("worker")
    assert second != first
    wait_finished()
    assert "No changes" in stack.cli("plan", str(stack.path)).stdout, "a failed job is shown, not retried"
    assert "FAILED (exit code 3)" in stack.cli("show", str(stack.path)).stdout

    # Terraform's -replace: run the unchanged, finished job again.
    planned = stack.cli("plan", str(stack.path), "--replace", "worker").stdout
    assert "-/+ slurm/Job/worker" in planned and "replacement requested with --replace" in planned
    stack.cli("apply", str(stack.path), "--yes", "--replace", "worker")
    rerun = stack.state_job_id("worker")
    assert rerun not in (first, second)
    wait_finished()
    assert "FAILED (exit code 3)" in stack.cli("show", str(stack.path)).stdout
    second = rerun

    stack.write(training("sleep 8; exit 3", time_limit="6"))
    planned = stack.cli("plan", str(stack.path)).stdout
    assert "~ slurm/Job/worker" in planned and "Workloads that will restart: slurm/Job/worker (restarted by the update)" in planned
    applied = stack.cli("apply", str(stack.path), "--yes").stdout
    assert f"job {second} has finished: FAILED (exit code 3); submitting it again" in applied
    assert stack.state_job_id("worker") not in (first, second)

    stack.cli("destroy", str(stack.path), "--yes")
    assert "1 to add" in stack.cli("plan", str(stack.path)).stdout, "destroy removes the end marker too"
