"""madengine's env contracts shared by launchers: multi-node SLURM training extras, K8s POD_INDEX and
MAD_SYSTEM_GPU_ARCHITECTURE, checked on what the user's process really gets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from madinfra.launchers.model import RoleLaunch
from madinfra_slurm import scripts

TRAINING = (None, "torchrun", "deepspeed", "megatron", "torchtitan", "primus")
MIOPEN_TEMPLATE = "/tmp/.miopen/node_${SLURM_PROCID}_rank_\\${LOCAL_RANK:-0}"


def run(render_role, role: RoleLaunch, tmp_path: Path, show: str, env: dict[str, str], stubs: dict[str, str] | None = None) -> str:
    """Run the role as its node would (runtime env exported in a shell) and return what ``show`` prints."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (stubs or {}).items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "role.sh"
    script.write_text(render_role(role, show))
    # A PATH without the host's ROCm/NVIDIA tools, so only the stubs answer.
    path = f"{bin_dir}:/usr/bin:/bin"
    proc = subprocess.run(["bash", str(script)], env={"PATH": path, **env}, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("launcher", TRAINING)
def test_slurm_multi_node_training_gets_madengine_extras(plan, launcher):
    worker = plan("slurm", launcher, 2, 8).role("worker")
    runtime = dict(worker.runtime_env)
    assert runtime["MIOPEN_USER_DB_PATH"] == MIOPEN_TEMPLATE
    assert "MIOPEN_USER_DB_PATH" not in worker.env  # the preset's shared /tmp/.miopen is replaced
    assert worker.env["TORCH_ELASTIC_RDZV_TIMEOUT"] == "3600"
    assert worker.env["DISTRIBUTED_BACKEND"] == "nccl"


def test_distributed_backend_follows_the_stack(plan):
    worker = plan("slurm", "torchrun", 2, 2, extra={"distributed": {"backend": "gloo"}}).role("worker")
    assert worker.env["DISTRIBUTED_BACKEND"] == "gloo"


def test_miopen_path_is_expanded_per_srun_task_and_left_for_each_local_rank(plan, render_role, tmp_path):
    worker = plan("slurm", "torchrun", 2, 8).role("worker")
    show = 'printf "%s\\n" "$MIOPEN_USER_DB_PATH"; LOCAL_RANK=3 bash -c \'eval echo "$MIOPEN_USER_DB_PATH"\''
    out = run(render_role, worker, tmp_path, show, {"SLURM_PROCID": "1", "SLURM_JOB_NODELIST": "node[1-2]"}, {"scontrol": "exit 0"})
    assert out.splitlines() == ["/tmp/.miopen/node_1_rank_${LOCAL_RANK:-0}", "/tmp/.miopen/node_1_rank_3"]


def test_miopen_path_is_exported_inside_the_srun_task_not_the_batch_script(plan, spec):
    stack = spec("slurm", "torchrun", 2, 8)
    launch = plan("slurm", "torchrun", 2, 8)
    worker = launch.role("worker")
    body = scripts.body_lines(stack, launch, worker)
    assert not any(line.startswith("export MIOPEN_USER_DB_PATH") for line in body)
    assert f'export MIOPEN_USER_DB_PATH="{MIOPEN_TEMPLATE}"' in scripts.task_script(worker).splitlines()
    assert "export TORCH_ELASTIC_RDZV_TIMEOUT=3600" in body


@pytest.mark.parametrize(("target", "launcher", "nnodes"), [("slurm", "torchrun", 1), ("slurm", "vllm", 2), ("k8s", "torchrun", 2)])
def test_extras_are_only_for_multi_node_slurm_training(plan, target, launcher, nnodes):
    role = plan(target, launcher, nnodes, 2).roles[0]
    names = set(role.env) | set(dict(role.runtime_env))
    assert not {"TORCH_ELASTIC_RDZV_TIMEOUT", "DISTRIBUTED_BACKEND"} & names
    assert dict(role.runtime_env).get("MIOPEN_USER_DB_PATH") is None


@pytest.mark.parametrize("launcher", TRAINING)
def test_k8s_multi_node_training_pod_index_is_the_pods_completion_index(plan, render_role, tmp_path, launcher):
    worker = plan("k8s", launcher, 3, 1).role("worker")
    out = run(render_role, worker, tmp_path, 'echo "$POD_INDEX"', {"JOB_COMPLETION_INDEX": "2"})
    assert out.strip() == "2"


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_single_node_has_no_pod_index(plan, target):
    worker = plan(target, "torchrun", 1, 2).role("worker")
    assert "POD_INDEX" not in worker.env and "POD_INDEX" not in dict(worker.runtime_env)


@pytest.mark.parametrize(
    ("vendor", "tool", "output", "expected"),
    [
        ("AMD", "rocminfo", "  Name:                    gfx942                             \\n  Name: gfx90a", "gfx942"),
        ("NVIDIA", "nvidia-smi", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)\\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-5678)", "NVIDIA H100 80GB HBM3"),
    ],
)
@pytest.mark.parametrize("launcher", ["torchrun", "vllm"])
def test_k8s_gpu_architecture_is_detected_in_the_pod(plan, render_role, tmp_path, vendor, tool, output, expected, launcher):
    role = plan("k8s", launcher, 1, 2, extra={"gpu_vendor": vendor}).roles[0]
    out = run(render_role, role, tmp_path, 'echo "$MAD_SYSTEM_GPU_ARCHITECTURE"', {}, {tool: f'printf "{output}\\n"'})
    assert out.strip() == expected


@pytest.mark.skipif(Path("/opt/rocm/bin/rocminfo").exists(), reason="the host's ROCm would answer")
def test_k8s_gpu_architecture_detection_without_tools_is_empty_not_an_error(plan, render_role, tmp_path):
    worker = plan("k8s", "torchrun", 1, 2).role("worker")
    assert run(render_role, worker, tmp_path, 'echo "[$MAD_SYSTEM_GPU_ARCHITECTURE]"', {}).strip() == "[]"


@pytest.mark.parametrize("section", ["docker_env_vars", "env_vars"])
def test_k8s_gpu_architecture_given_by_the_stack_is_a_literal(plan, section):
    worker = plan("k8s", "torchrun", 2, 2, extra={section: {"MAD_SYSTEM_GPU_ARCHITECTURE": "gfx950"}}).role("worker")
    assert worker.env["MAD_SYSTEM_GPU_ARCHITECTURE"] == "gfx950"
    assert "MAD_SYSTEM_GPU_ARCHITECTURE" not in dict(worker.runtime_env)


def test_slurm_leaves_gpu_architecture_to_the_node(plan):
    worker = plan("slurm", "torchrun", 2, 2).role("worker")
    assert "MAD_SYSTEM_GPU_ARCHITECTURE" not in worker.env and "MAD_SYSTEM_GPU_ARCHITECTURE" not in dict(worker.runtime_env)

