"""The two node scripts of a Ray cluster across jobs, run with a stand-in for ``python3``: the
node program arrives intact with its arguments expanded on the node, and a
worker runs it as a worker (``test_ray_node.py`` runs the program itself)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from madinfra.launchers import compile, ray_cluster

RECORD_PYTHON = """#!/bin/bash
printf '%s\\n' "$@" > "$OUT/python.argv"
cat > "$OUT/python.stdin"
"""


def run(tmp_path: Path, command: str, tools: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    bin_dir, out, work = tmp_path / "bin", tmp_path / "out", tmp_path / "work"
    for path in (bin_dir, out, work / "ray"):
        path.mkdir(parents=True, exist_ok=True)
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), "MADINFRA_WORKDIR": str(work), "VLLM_HOST_IP": "10.0.0.9"}
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    return proc, out


def test_the_head_runs_the_supervisor_with_its_engine(tmp_path: Path, spec) -> None:
    head = compile(spec("slurm", "vllm", 2, 4, extra={"model": {"args": ["--max-model-len", "it's 4096"]}})).role("server")
    proc, out = run(tmp_path, head.command, {"python3": RECORD_PYTHON})
    assert proc.returncode == 0, proc.stderr
    assert (out / "python.stdin").read_text() == ray_cluster.NODE_PROGRAM.read_text(), "the program arrives byte for byte"
    argv = (out / "python.argv").read_text().splitlines()
    work = tmp_path / "work"
    assert argv[:12] == [
        "-", "head", "--node-ip", "10.0.0.9", "--port", "6379", "--dashboard-port", "8265", "--num-gpus", "4",
        "--status", f"{work}/ray/server.status",
    ]
    assert argv[12:14] == ["--topology", f"{work}/topology.env"]
    engine = "\n".join(argv[14:])
    assert engine.endswith("--distributed-executor-backend ray --max-model-len 'it'\"'\"'s 4096'"), "the engine's own words, unexpanded"
    assert '--pipeline-parallel-size "${VLLM_PIPELINE_PARALLEL_SIZE}"' in engine


def test_a_worker_runs_the_node_program_as_a_worker(tmp_path: Path, spec) -> None:
    workers = compile(spec("slurm", "vllm", 3, 2)).role("server-workers")
    proc, out = run(tmp_path, workers.command, {"python3": RECORD_PYTHON})
    assert proc.returncode == 0, proc.stderr
    assert (out / "python.stdin").read_text() == ray_cluster.NODE_PROGRAM.read_text()
    argv = (out / "python.argv").read_text().splitlines()
    assert argv == ["-", "worker", "--node-ip", "10.0.0.9", "--num-gpus", "2", "--status", f"{tmp_path / 'work'}/ray/server.status"]


def test_a_python_without_ray_is_one_sentence(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    (tmp_path / "ray.py").write_text("raise ImportError('no ray here')\n")
    args = ["head", "--node-ip", "x", "--port", "1", "--dashboard-port", "2", "--num-gpus", "1", "--status", str(tmp_path / "s"), "--topology", "t", "true"]
    proc = subprocess.run(["python3", str(ray_cluster.NODE_PROGRAM), *args], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "has no `ray` module; run the stack in an image with vLLM and Ray" in proc.stdout


def test_a_ray_head_started_by_a_users_command_is_said_to_be_unmanaged(spec) -> None:
    plain = spec("slurm", None, 2, 1, extra={"roles": {"worker": {"command": "ray start --head --port=6379 && python3 train.py"}}})
    (warning,) = ray_cluster.unmanaged_heads(plain)
    assert warning.startswith("roles.worker.command starts a Ray head (`ray start --head`): madinfra runs it as part of that workload")
    managed = spec("slurm", "vllm", 2, 1, extra={"roles": {"server": {"command": "ray start --head; vllm serve m"}}})
    assert "it is the engine the managed Ray head runs" in ray_cluster.unmanaged_heads(managed)[0]
    assert ray_cluster.unmanaged_heads(spec("slurm", "vllm", 2, 1)) == [], "madinfra's own head is managed"
