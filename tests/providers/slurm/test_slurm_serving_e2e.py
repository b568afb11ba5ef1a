"""A persistent disaggregated serving stack on the SLURM sandbox, changed in place (issue 6).

SGLang cannot run here, so every role's command is the stand-in server next to this file
(``standin_server.py``, uploaded through ``model.scripts_dir``): the pools answer /health on a
port of their own, the proxy serves /endpoints from the endpoint files apply writes. With
``exclusive: false`` and one GPU per pool node, 1 proxy + 1 prefill + 3 decode allocations fit
on the sandbox's three nodes. Through the real CLI over real SSH:

1. apply 5 nodes; the endpoint is printed by ``madinfra output``;
2. decode 3 -> 2: only decode, its endpoint file and the topology change; prefill and proxy
   keep their job ids; the proxy serves exactly the new decode set;
3. prefill 1 -> 2: decode and proxy keep their job ids;
4. a new time limit: ``scontrol update`` on every job, no job id changes;
5. a new tensor parallel size: the pools are replaced one at a time (prefill ready before
   decode goes down), each forcing field named;
then destroy.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slurm

STANDIN = Path(__file__).with_name("standin_server.py")
POOLS = ("prefill", "decode")
HEALTH = (
    'd="$HOME/.madinfra/{stack}/standin"; n=$(squeue -h -j "$SLURM_JOB_ID" -o %D); [ -n "$n" ] || exit 1; i=0;'
    ' while [ "$i" -lt "$n" ]; do f="$d/$SLURM_JOB_ID.$i.port"; [ -s "$f" ] || exit 1;'
    ' curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$(cat "$f")/health" || exit 1; i=$((i+1)); done'
)
"""Healthy = every node of the job has a stand-in that answers /health (run inside the job)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


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

    def info(self, job_id: str, index: int = 0) -> dict[str, Any]:
        port = self.remote(f"standin/{job_id}.{index}.port").strip()
        return get(f"http://127.0.0.1:{port}/info")

    def check_endpoints(self, prefill: int, decode: int) -> None:
        addr = self.stack.sandbox.target["host"]
        expected = {"prefill": [f"http://{addr}:30000"] * prefill, "decode": [f"http://{addr}:30000"] * decode}
        ids = self.ids()
        for pool in POOLS:
            assert self.endpoint_file(pool) == expected[pool], pool
            assert f"job={ids[pool]}" in self.remote(f"endpoints/{pool}.source"), f"endpoints/{pool} must be written for the live {pool} job"
        assert self.served_endpoints() == expected, "the proxy serves exactly the pools' current endpoints"


def changes_of(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {change["address"]: change for change in plan["changes"]}


def actions(plan: dict[str, Any]) -> dict[str, str]:
    return {change["address"]: change["action"] for change in plan["changes"]}


def test_a_disaggregated_stack_is_resized_retimed_and_rolled_in_place(new_sandbox_stack) -> None:
    stack = new_sandbox_stack()
    (stack.workdir / "scripts").mkdir()
    shutil.copy(STANDIN, stack.workdir / "scripts" / "standin_server.py")
    svc = Serving(stack, free_port())

    # 1. Five nodes: 1 proxy + 1 prefill + 3 decode, plus the topology and two endpoint files.
    svc.write(5, 1, 3)
    assert actions(svc.plan()) == {
        "slurm/File/topology.env": "create",
        "slurm/Job/prefill": "create",
        "slurm/File/endpoints/prefill": "create",
        "slurm/Job/decode": "create",
        "slurm/File/endpoints/decode": "create",
        "slurm/Job/proxy": "create",
    }
    applied = svc.apply()
    assert "Resources: 6 added" in applied
    first = svc.ids()
    assert set(first) == {"proxy", "prefill", "decode"}
    svc.check_endpoints(1, 3)
    assert "SGLANG_DISAGG_DECODE_NODES=3" in svc.remote("topology.env")
    decode_info = svc.info(first["decode"], 2)
    assert (decode_info["SGLANG_DISAGG_DECODE_NODES"], decode_info["NODE_RANK"]) == ("3", "4"), "every task sources topology.env"
    endpoint = stack.cli("output", str(stack.path), "endpoint").stdout.strip()
    assert endpoint == f"http://{stack.sandbox.target['host']}:{svc.port}/v1"
    assert get(endpoint + "/models")["data"][0]["owned_by"] == "proxy"
    assert f"endpoint = {endpoint}" in stack.cli("output", str(stack.path)).stdout
    assert svc.plan()["changes"] == []

    # 2. decode 3 -> 2: decode is replaced (nodes of a running job), the files updated in place.
    svc.write(4, 1, 2)
    plan = svc.plan()
    assert actions(plan) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/decode": "replace",
        "slurm/File/endpoints/decode": "update",
    }
    assert changes_of(plan)["slurm/Job/decode"]["replace_paths"] == ["nodes"]
    assert plan["warnings"] == ["decode: all 3 node(s) restart; the stack will have no ready decode replica during apply"]
    text = svc.plan_text()
    assert "nodes: 3 -> 2  # forces replacement" in text
    assert "Warning: decode: all 3 node(s) restart; the stack will have no ready decode replica during apply" in text
    svc.apply()
    second = svc.ids()
    assert (second["prefill"], second["proxy"]) == (first["prefill"], first["proxy"]), "prefill and proxy keep running"
    assert second["decode"] != first["decode"]
    svc.check_endpoints(1, 2)
    assert svc.info(second["decode"], 1)["SGLANG_DISAGG_DECODE_NODES"] == "2"

    # 3. prefill 1 -> 2 (5 nodes again): decode and proxy keep running.
    svc.write(5, 2, 2)
    assert actions(svc.plan()) == {
        "slurm/File/topology.env": "update",
        "slurm/Job/prefill": "replace",
        "slurm/File/endpoints/prefill": "update",
    }
    svc.apply()
    third = svc.ids()
    assert (third["decode"], third["proxy"]) == (second["decode"], second["proxy"])
    assert third["prefill"] != second["prefill"]
    svc.check_endpoints(2, 2)
    assert "MADINFRA_FIRST_RANK_DECODE=3" in svc.remote("topology.env")

    # 4. A new time limit: scontrol update on every running job, nothing resubmitted.
    svc.write(5, 2, 2, time_limit="12")
    plan = svc.plan()
    assert actions(plan) == {f"slurm/Job/{r}": "update" for r in ("prefill", "decode", "proxy")}
    assert plan["warnings"] == [] and plan["restarts"] == []
    applied = svc.apply()
    assert svc.ids() == third
    for role, job_id in third.items():
        assert f"slurm/Job/{role}: updated job {job_id} in place with scontrol update (time)" in applied
        assert stack.sandbox.scontrol_job(job_id)["TimeLimit"] == "00:12:00"

    # 5. Tensor parallel size 1 -> 2: the pools roll one at a time, each forcing field named.
    svc.write(5, 2, 2, tp=2, time_limit="12")
    plan = svc.plan()
    changes = changes_of(plan)
    for pool in POOLS:
        assert changes[f"slurm/Job/{pool}"]["action"] == "replace"
        assert changes[f"slurm/Job/{pool}"]["replace_paths"] == ["gpus_per_node", "script_sha256"], pool
        assert changes[f"slurm/File/endpoints/{pool}"]["action"] == "update"
    assert plan["gpus"] == {"before": 4, "after": 8}
    assert [address for address in changes if address.startswith("slurm/Job/")][:2] == ["slurm/Job/prefill", "slurm/Job/decode"]
    # The launcher also exports the TP size (NPROC_PER_NODE, SGLANG_TP_SIZE) to the proxy, so its
    # script changes too; it is then replaced last.
    assert "slurm/Job/proxy" not in changes or list(changes)[-1] == "slurm/Job/proxy"
    applied = svc.apply()
    fifth = svc.ids()
    assert int(third["decode"]) < int(fifth["prefill"]) < int(fifth["decode"]), "prefill is submitted before decode"
    assert applied.index("slurm/Job/prefill: replaced") < applied.index("slurm/Job/decode: replacing: destroying the old one"), (
        "decode goes down only once the new prefill job is ready"
    )
    if "slurm/Job/proxy" in changes:
        assert int(fifth["decode"]) < int(fifth["proxy"]), "the proxy goes last"
    svc.check_endpoints(2, 2)
    assert svc.plan()["changes"] == []

    destroyed = stack.cli("destroy", str(stack.path), "--yes").stdout
    assert "Destroy complete! Resources: 6 destroyed." in destroyed
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
