"""The Ray head as a resource of its own: multi-node vLLM on the SLURM sandbox, with real Ray.

vLLM cannot run here, so the engine is ``standin_ray_engine.py`` (the user's ``model.script``),
which joins the Ray cluster, needs TP x PP GPUs and places a pipeline stage on every node; the
Ray head, its supervisor, the workers' joins, the GCS and the dashboard are all real (the
sandbox's Ray venv, first on PATH). Every sandbox node is 127.0.0.1, so the stack pins
``VLLM_HOST_IP`` there. Through the real CLI over real SSH:

1. apply 2 nodes: a head job (``server``) and a workers job (``server-workers``); ``output``
   and ``show`` give the head's address, dashboard and health (2/2 nodes, engine running);
2. 2 -> 3 nodes: the plan says the head keeps running; only the workers' job is replaced, the
   head's job id stays, and the engine restarts with 3 pipeline stages;
3. the workers' job cancelled behind madinfra's back: ``output`` says 1/3 nodes, the plan
   recreates only the workers, and the head (same job) serves again;
4. a change of the engine's own flags: the plan says the head restarts and the workers keep
   their job; after apply the workers' job id is the same and they serve in the new head's
   cluster;
5. ``logs`` names the head rank 0 and the workers ranks 1-2; destroy leaves nothing.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from serving_support import free_port

from conftest import SANDBOX_DIR

pytestmark = pytest.mark.slurm
HERE = Path(__file__).parent


def ray_path() -> str:
    path = SANDBOX_DIR / "ray-path"
    if not path.exists():
        pytest.skip(f"{path} is missing: run `bash scripts/slurm-sandbox up`, which installs Ray for this test")
    return path.read_text().strip()


def stack_spec(port: int, nnodes: int, tag: str = "v1") -> dict[str, Any]:
    return {
        "slurm": {"partition": "debug", "nodes": nnodes, "gpus_per_node": 1, "time": "15", "exclusive": False, "ready_timeout": 180},
        "distributed": {"launcher": "vllm", "nnodes": nnodes, "nproc_per_node": 1},
        "model": {"scripts_dir": "scripts", "script": "standin_ray_engine.py", "args": ["--port", str(port), "--tag", tag]},
        "env_vars": {"PATH": f"{ray_path()}:/usr/local/bin:/usr/bin:/bin", "RAY_DEDUP_LOGS": "0"},
        "roles": {"server": {"env": {"VLLM_HOST_IP": "127.0.0.1"}}},
        "service": {"port": port},
    }


def info(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=5) as response:
        return json.loads(response.read())


def outputs(stack) -> dict[str, str]:
    return json.loads(stack.cli("output", str(stack.path), "--json").stdout)


def running_ids(stack) -> dict[str, str]:
    return {job["name"].rsplit(".", 1)[1]: job["id"] for job in stack.jobs() if job["state"] == "RUNNING"}


def test_the_ray_head_is_a_resource_that_outlives_its_workers(sandbox_stack, sandbox) -> None:
    stack = sandbox_stack
    scripts = stack.workdir / "scripts"
    scripts.mkdir()
    shutil.copy(HERE / "standin_ray_engine.py", scripts / "standin_ray_engine.py")
    port = free_port()

    # 1. two nodes: the head and one worker
    stack.write(stack_spec(port, 2))
    plan = stack.cli("plan", str(stack.path)).stdout
    assert "slurm/Job/server" in plan and "slurm/Job/server-workers" in plan, plan
    assert "slurm/Job/server is the Ray head: GCS on port 6379, dashboard on port 8265" in plan, plan
    applied = stack.cli("apply", str(stack.path), "--yes").stdout
    assert "Ray head up: GCS at 127.0.0.1:6379" in applied, applied
    assert "Ray cluster: GCS up at 127.0.0.1:6379, 2/2 nodes, engine running" in applied, applied
    seen = info(port)
    assert (seen["pp"], len(set(seen["stages"]))) == (2, 2), seen
    out = outputs(stack)
    assert out["ray_address"] == "127.0.0.1:6379" and out["ray_dashboard"] == "http://127.0.0.1:8265", out
    assert out["ray_health"] == "GCS up, 2/2 nodes, engine running", out
    assert out["endpoint"] == f"http://127.0.0.1:{port}/v1", out
    with urllib.request.urlopen(out["ray_dashboard"] + "/api/version", timeout=5) as response:
        assert response.status == 200, "the dashboard answers where output says it is"
    show = stack.cli("show", str(stack.path)).stdout
    assert "RUNNING; Ray head 127.0.0.1:6379: GCS up, 2/2 nodes, engine running" in show, show
    shown = json.loads(stack.cli("show", str(stack.path), "--json").stdout)
    head_row = next(row for row in shown["resources"] if row["address"] == "slurm/Job/server")
    assert head_row["live"]["status"]["ray"]["nodes"] == "2/2", head_row
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False).returncode == 0, "plan is empty right after apply"
    first = running_ids(stack)
    assert set(first) == {"server", "server-workers"}, first

    # 2. three nodes: only the workers' job is replaced; the head and its GCS stay
    stack.write(stack_spec(port, 3))
    plan = stack.cli("plan", str(stack.path)).stdout
    assert "server: the Ray head keeps running (GCS and dashboard stay up)" in plan, plan
    assert "(2 -> 3 nodes, pipeline stages with them)" in plan, plan
    stack.cli("apply", str(stack.path), "--yes")
    second = running_ids(stack)
    assert second["server"] == first["server"], "the head's job was not restarted"
    assert second["server-workers"] != first["server-workers"]
    seen3 = info(port)
    assert (seen3["pp"], len(set(seen3["stages"]))) == (3, 3), seen3
    assert seen3["pid"] != seen["pid"], "the engine restarted with the new pipeline size"
    assert outputs(stack)["ray_health"].startswith("GCS up, 3/3 nodes, engine running"), outputs(stack)
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False).returncode == 0

    # 2b. the workers' job dies (a node failure, an operator's scancel): the head notices, the
    # plan recreates only the workers, and the engine comes back on the same head
    sandbox.check(f"scancel {second['server-workers']}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "1/3 nodes" not in outputs(stack)["ray_health"]:
        time.sleep(1)
    assert outputs(stack)["ray_health"].startswith("GCS up, 1/3 nodes, engine waiting"), outputs(stack)
    plan = stack.cli("plan", str(stack.path)).stdout
    assert "+ slurm/Job/server-workers" in plan and "server: the Ray head keeps running" in plan, plan
    stack.cli("apply", str(stack.path), "--yes")
    second = running_ids(stack)
    assert second["server"] == first["server"], "the head outlived its workers"
    assert info(port)["pp"] == 3

    # 3. the engine's own flags: the head restarts, the workers keep their job and rejoin
    stack.write(stack_spec(port, 3, tag="v2"))
    plan = stack.cli("plan", str(stack.path)).stdout
    assert "server: the Ray head at 127.0.0.1:6379 restarts" in plan and "its workers keep their job and join the new head" in plan, plan
    stack.cli("apply", str(stack.path), "--yes")
    third = running_ids(stack)
    assert third["server"] != second["server"], "the head's job was replaced"
    assert third["server-workers"] == second["server-workers"], "the workers' job was not touched"
    seen_v2 = info(port)
    assert (seen_v2["tag"], seen_v2["pp"], len(set(seen_v2["stages"]))) == ("v2", 3, 3), seen_v2
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False).returncode == 0

    # 4. logs: rank 0 is the head, ranks 1-2 the workers
    logs = stack.cli("logs", str(stack.path), "server").stdout
    assert "server[0] | madinfra ray-head: all 3 node(s) joined: starting the engine" in logs, logs
    for rank in (1, 2):
        assert f"server[{rank}] | madinfra ray-workers: joining the Ray head at 127.0.0.1:6379" in logs, logs

    stack.cli("destroy", str(stack.path), "--yes")
    stack.wait_gone()
    assert not sandbox.ssh(f"ls {stack.remote_dir()}").stdout.strip()
