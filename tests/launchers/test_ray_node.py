"""The Ray node program. The head's supervisor driven step by step: the engine starts when the
cluster is whole, restarts (the head does not) when the cluster changes or the engine dies, and
the status file says so (Ray replaced by the injected node count). A worker run as a process
with a stand-in ``ray`` command: it waits for the head, joins it, joins again when dropped or
when a new head job appears, and SIGTERM ends every process its ``ray start`` started. The
SLURM sandbox test runs both against a real GCS."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from madinfra.launchers import ray_node as sup


class FakeEngine:
    def __init__(self, command: str, env: dict[str, str]):
        self.command, self.env = command, env
        self.code: int | None = None
        self.pid = -1

    def poll(self) -> int | None:
        return self.code


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path):
    topology = tmp_path / "topology.env"
    topology.write_text("export NNODES=2 VLLM_PIPELINE_PARALLEL_SIZE=2\n")
    args = argparse.Namespace(
        node_ip="10.0.0.1", port=6379, dashboard_port=8265, num_gpus=4, status=str(tmp_path / "ray" / "server.status"),
        topology=str(topology), poll=2.0, connect_timeout=5.0, engine="vllm serve x",
    )
    alive = {"n": 1}
    engines: list[FakeEngine] = []

    def spawn(command: str, env: dict[str, str]) -> FakeEngine:
        engines.append(FakeEngine(command, env))
        return engines[-1]

    clock = Clock()
    supervisor = sup.Supervisor(args, lambda: alive["n"], spawn, clock)
    supervisor.stop_engine = lambda grace=0: setattr(supervisor, "engine", None)  # type: ignore[method-assign]
    return supervisor, alive, engines, topology, clock


def test_the_engine_starts_only_when_every_expected_node_is_alive(world, capsys) -> None:
    supervisor, alive, engines, _, _ = world
    fields = supervisor.step()
    assert (fields["engine"], fields["nodes_alive"], fields["nodes_expected"], fields["gcs"]) == ("waiting", 1, 2, "up")
    assert fields["address"] == "10.0.0.1:6379" and fields["dashboard"] == "http://10.0.0.1:8265"
    supervisor.step()
    assert capsys.readouterr().out.count("waiting for 2 node(s) to join (1 alive)") == 1, "said once, not every poll"
    alive["n"] = 2
    fields = supervisor.step()
    assert fields["engine"] == "running" and len(engines) == 1
    assert engines[0].command == "vllm serve x"
    assert engines[0].env["VLLM_PIPELINE_PARALLEL_SIZE"] == "2", "the engine sees the topology's values"


def test_a_node_lost_or_a_resize_restarts_the_engine_not_the_head(world) -> None:
    supervisor, alive, engines, topology, _ = world
    alive["n"] = 2
    supervisor.step()
    alive["n"] = 1  # the workers' job was replaced
    fields = supervisor.step()
    assert (fields["engine"], fields["engine_restarts"], supervisor.engine) == ("waiting", 1, None)
    topology.write_text("export NNODES=3 VLLM_PIPELINE_PARALLEL_SIZE=3\n")  # apply resized the cluster
    alive["n"] = 2
    assert supervisor.step()["engine"] == "waiting", "2 alive is not the 3 now expected"
    alive["n"] = 3
    fields = supervisor.step()
    assert (fields["engine"], fields["nodes_expected"], len(engines)) == ("running", 3, 2)
    assert engines[1].env["VLLM_PIPELINE_PARALLEL_SIZE"] == "3"
    topology.write_text("export NNODES=4 VLLM_PIPELINE_PARALLEL_SIZE=4\n")
    assert supervisor.step()["engine"] == "waiting", "a new expectation restarts the engine even before nodes change"


def test_an_engine_that_exits_is_started_again_after_a_pause(world) -> None:
    supervisor, alive, engines, _, clock = world
    alive["n"] = 2
    supervisor.step()
    engines[0].code = 3
    fields = supervisor.step()
    assert (fields["engine"], fields["engine_last_exit"], fields["engine_restarts"]) == ("exited", 3, 1)
    assert supervisor.step()["engine"] == "exited" and len(engines) == 1, "no restart within the back-off"
    clock.now += sup.RESTART_BACKOFF_SECONDS
    assert supervisor.step()["engine"] == "running" and len(engines) == 2


def test_a_gcs_that_does_not_answer_is_reported_and_the_engine_kept(world) -> None:
    supervisor, alive, engines, _, _ = world
    alive["n"] = 2
    supervisor.step()

    def broken() -> int:
        raise ConnectionError("GCS unreachable")

    supervisor.alive_nodes = broken
    fields = supervisor.step()
    assert (fields["gcs"], fields["nodes_alive"], fields["engine"]) == ("not answering", "", "running")
    assert supervisor.engine is engines[0]


def test_the_status_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "server.status"
    sup.write_status(str(path), {"b": 2, "a": "x"})
    assert path.read_text() == "a=x\nb=2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["server.status"]


def test_topology_lines_are_read_as_the_provider_writes_them() -> None:
    text = "# comment\nexport NNODES=3\nexport NAME='a b' X=1\nnot an export\n"
    assert sup.parse_topology(text) == {"NNODES": "3", "NAME": "a b", "X": "1"}


def test_stopping_the_engine_stops_its_whole_process_group(world, tmp_path: Path) -> None:
    supervisor = world[0]
    marker = tmp_path / "child"
    engine = sup.spawn_engine(f"sleep 60 & echo $! > {marker}; wait", dict(os.environ))
    supervisor.engine = engine
    for _ in range(50):
        if marker.exists() and marker.read_text().strip():
            break
        time.sleep(0.1)
    child = int(marker.read_text())
    sup.Supervisor.stop_engine(supervisor)
    assert engine.poll() is not None
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        subprocess.run(["kill", "-9", str(child)])
        pytest.fail("the engine's child outlived the engine")


FAKE_RAY = """#!/bin/bash
# A stand-in ``ray start --block``: records its arguments, starts a grandchild the way Ray starts
# its raylet (which must not outlive a SIGTERM to the node program), and blocks.
echo "MASTER_ADDR=$MASTER_ADDR $*" >> "$OUT/ray.calls"
/bin/sleep 300 &
echo $! >> "$OUT/raylets"
[ -n "$RAY_EXITS" ] && { /bin/sleep 0.5; exit 1; }  # dropped: its raylet is left re-parented
wait
"""


def start_worker(tmp_path: Path, exits: bool = False) -> tuple[subprocess.Popen, Path, Path]:
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    (bin_dir / "ray").write_text(FAKE_RAY)
    (bin_dir / "ray").chmod(0o755)
    status = tmp_path / "server.status"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), **({"RAY_EXITS": "1"} if exits else {})}
    args = ["worker", "--node-ip", "10.0.0.9", "--num-gpus", "2", "--status", str(status), "--poll", "0.1", "--rejoin", "0.2", "--stagger", "0"]
    proc = subprocess.Popen([sys.executable, str(sup.__file__), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out, status


def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def calls(out: Path) -> list[str]:
    path = out / "ray.calls"
    return path.read_text().splitlines() if path.exists() else []


def test_a_worker_follows_its_heads_life_and_leaves_nothing_behind(tmp_path: Path) -> None:
    proc, out, status = start_worker(tmp_path)
    try:
        time.sleep(0.5)
        assert calls(out) == [], "no head yet"
        status.write_text("job=5\naddress=10.0.0.5:6379\n")
        wait_for(lambda: len(calls(out)) == 1)
        status.write_text("job=6\naddress=10.0.0.6:6379\n")
        wait_for(lambda: len(calls(out)) == 2)
        raylets = [int(pid) for pid in (out / "raylets").read_text().split()]
        wait_for(lambda: not sup.alive(raylets[0]))
        assert sup.alive(raylets[1])
        status.unlink()  # the head stopped
        wait_for(lambda: not sup.alive(raylets[1]))
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0
    assert [c.split("--address=")[1].split()[0] for c in calls(out)] == ["10.0.0.5:6379", "10.0.0.6:6379"]
    assert calls(out)[0].startswith("MASTER_ADDR=10.0.0.5 start --block --disable-usage-stats --num-gpus=2")
    assert "--node-ip-address=10.0.0.9" in calls(out)[0]
    assert output.count("madinfra ray-workers: waiting for the Ray head to write its address to") == 1
    assert "madinfra ray-workers: a new Ray head (job 6) replaced job 5; joining it" in output
    assert "madinfra ray-workers: the Ray head (job 6) is gone; leaving its cluster" in output
    wait_for(lambda: not any(sup.alive(pid) for pid in raylets)), "SIGTERM ends what ray start started"


def test_a_worker_dropped_from_the_cluster_joins_again(tmp_path: Path) -> None:
    proc, out, status = start_worker(tmp_path, exits=True)
    status.write_text("job=5\naddress=10.0.0.5:6379\n")
    try:
        wait_for(lambda: len(calls(out)) >= 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0]
    assert "not in the Ray cluster at 10.0.0.5:6379; joining again in 0.2 s" in output
    raylets = [int(pid) for pid in (out / "raylets").read_text().split()]
    wait_for(lambda: not any(sup.alive(pid) for pid in raylets))
