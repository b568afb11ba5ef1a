"""The two node scripts of a Ray cluster across jobs, run with stand-ins for ``python3`` and
``ray``: the head's supervisor arrives intact with its arguments expanded on the node, and a
worker finds the head in its status file, joins it, and joins again after being dropped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from madinfra.launchers import compile, ray_cluster

RECORD_PYTHON = """#!/bin/bash
printf '%s\\n' "$@" > "$OUT/python.argv"
cat > "$OUT/python.stdin"
"""
RECORD_RAY = """#!/bin/bash
echo "MASTER_ADDR=$MASTER_ADDR $*" >> "$OUT/ray.calls"
[ -n "$RAY_BLOCKS" ] && exec /bin/sleep 30
exit 0
"""
SLEEP = """#!/bin/bash
# The worker's loop pauses here; $OUT/script (one line per pause) says what each pause does.
n=$(( $(cat "$OUT/sleeps" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$OUT/sleeps"
action=$(sed -n "${n}p" "$OUT/script")
case "$action" in
  head:*) printf 'job=%s\naddress=%s\n' "${action#head:}" "10.0.0.${action#head:}:6379" > "$MADINFRA_WORKDIR/ray/server.status" ;;
  stop) kill -TERM 0 ;;  # the whole test session: the loop and a ray start still blocking
esac
exit 0
"""


def run(tmp_path: Path, command: str, tools: dict[str, str], script: str = "", env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    bin_dir, out, work = tmp_path / "bin", tmp_path / "out", tmp_path / "work"
    for path in (bin_dir, out, work / "ray"):
        path.mkdir(parents=True, exist_ok=True)
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (out / "script").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), "MADINFRA_WORKDIR": str(work), "VLLM_HOST_IP": "10.0.0.9", **(env or {})}
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30, start_new_session=True)
    return proc, out


def test_the_head_runs_the_supervisor_with_its_engine(tmp_path: Path, spec) -> None:
    head = compile(spec("slurm", "vllm", 2, 4, extra={"model": {"args": ["--max-model-len", "it's 4096"]}})).role("server")
    proc, out = run(tmp_path, head.command, {"python3": RECORD_PYTHON})
    assert proc.returncode == 0, proc.stderr
    assert (out / "python.stdin").read_text() == ray_cluster.SUPERVISOR.read_text(), "the program arrives byte for byte"
    argv = (out / "python.argv").read_text().splitlines()
    work = tmp_path / "work"
    assert argv[:11] == [
        "-", "--node-ip", "10.0.0.9", "--port", "6379", "--dashboard-port", "8265", "--num-gpus", "4",
        "--status", f"{work}/ray/server.status",
    ]
    assert argv[11:13] == ["--topology", f"{work}/topology.env"]
    engine = "\n".join(argv[13:])
    assert engine.endswith("--distributed-executor-backend ray --max-model-len 'it'\"'\"'s 4096'"), "the engine's own words, unexpanded"
    assert '--pipeline-parallel-size "${VLLM_PIPELINE_PARALLEL_SIZE}"' in engine


def test_a_worker_waits_for_the_head_joins_it_and_joins_again(tmp_path: Path, spec) -> None:
    workers = compile(spec("slurm", "vllm", 3, 2)).role("server-workers")
    proc, out = run(tmp_path, workers.command, {"ray": RECORD_RAY, "sleep": SLEEP}, script="head:5\n\n\n\n\nstop\n")
    calls = (out / "ray.calls").read_text().splitlines()
    join = "MASTER_ADDR=10.0.0.5 start --block --disable-usage-stats --num-gpus=2 --address=10.0.0.5:6379 --node-ip-address=10.0.0.9"
    assert len(calls) >= 2 and set(calls) == {join}, "joined after the head appeared, and again after being dropped"
    assert proc.stdout.count("waiting for the Ray head to write its address to ray/server.status") == 1
    assert "joining the Ray head at 10.0.0.5:6379 (job 5)" in proc.stdout


def test_a_worker_leaves_a_replaced_head_at_once_for_the_new_one(tmp_path: Path, spec) -> None:
    workers = compile(spec("slurm", "vllm", 2, 1)).role("server-workers")
    proc, out = run(tmp_path, workers.command, {"ray": RECORD_RAY, "sleep": SLEEP}, script="head:5\nhead:6\n\n\n\n\nstop\n", env={"RAY_BLOCKS": "1"})
    calls = (out / "ray.calls").read_text().splitlines()
    assert [c.split("--address=")[1].split()[0] for c in calls] == ["10.0.0.5:6379", "10.0.0.6:6379"]
    assert "a new Ray head (job 6) replaced job 5; joining it" in proc.stdout


def test_a_python_without_ray_is_one_sentence(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    (tmp_path / "ray.py").write_text("raise ImportError('no ray here')\n")
    args = ["--node-ip", "x", "--port", "1", "--dashboard-port", "2", "--num-gpus", "1", "--status", str(tmp_path / "s"), "--topology", "t", "true"]
    proc = subprocess.run(["python3", str(ray_cluster.SUPERVISOR), *args], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "has no `ray` module; run the stack in an image with vLLM and Ray" in proc.stdout


def test_a_ray_head_started_by_a_users_command_is_said_to_be_unmanaged(spec) -> None:
    plain = spec("slurm", None, 2, 1, extra={"roles": {"worker": {"command": "ray start --head --port=6379 && python3 train.py"}}})
    (warning,) = ray_cluster.unmanaged_heads(plain)
    assert warning.startswith("roles.worker.command starts a Ray head (`ray start --head`): madinfra runs it as part of that workload")
    managed = spec("slurm", "vllm", 2, 1, extra={"roles": {"server": {"command": "ray start --head; vllm serve m"}}})
    assert "it is the engine the managed Ray head runs" in ray_cluster.unmanaged_heads(managed)[0]
    assert ray_cluster.unmanaged_heads(spec("slurm", "vllm", 2, 1)) == [], "madinfra's own head is managed"
