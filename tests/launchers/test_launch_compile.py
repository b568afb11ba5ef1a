"""compile(): the contract shared by every launcher on both targets.

Roles agree with the loader, common env, merge order of user / launcher / role env, GPU
visibility, commands that start in the work dir, and shell that parses.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from madinfra.config import LAUNCHERS, roles_for
from madinfra.errors import ConfigError, MadinfraError
from madinfra.launchers import compile
from madinfra.launchers.addressing import SlurmAddressing
from madinfra.launchers.registry import COMPILERS

ALL = (None, *LAUNCHERS)
TARGETS = ("k8s", "slurm")
CD = 'cd "${MADINFRA_WORKDIR:-.}" || exit 1'


def _nodes(launcher: str | None, multi: bool) -> int:
    if launcher == "sglang-disagg":
        return 5 if multi else 3
    return 2 if multi else 1


def _cases():
    for launcher in ALL:
        for target in TARGETS:
            for multi in (False, True):
                # madengine's K8s presets pick torchrun for any multi-GPU or multi-node stack without
                # a launcher, so a plain-script K8s stack is one node with one GPU.
                nproc = 1 if launcher is None and target == "k8s" else 2
                if launcher is None and target == "k8s" and multi:
                    continue
                yield pytest.param(launcher, target, multi, nproc, id=f"{launcher}-{target}-{'multi' if multi else 'single'}")


CASES = list(_cases())


def test_registry_covers_exactly_the_loader_launchers():
    assert set(COMPILERS) == {None, *LAUNCHERS}


@pytest.mark.parametrize(("launcher", "target", "multi", "nproc"), CASES)
def test_roles_and_common_contract(spec, launcher, target, multi, nproc):
    stack = spec(target, launcher, _nodes(launcher, multi), nproc, port=23456)
    p = compile(stack)
    # A Ray cluster's head and workers are two parts of one role (its ``roles.<role>`` settings).
    assert tuple(dict.fromkeys(r.ray.cluster if r.ray else r.role for r in p.roles)) == roles_for(stack)
    assert (p.stack, p.target, p.launcher, p.nnodes, p.nproc_per_node, p.master_port) == (
        "demo", target, launcher, stack.distributed.nnodes, nproc, 23456,
    )
    assert p.workload == ("service" if launcher in ("vllm", "sglang", "sglang-disagg") else "training")
    assert sum(r.nodes for r in p.roles) == stack.distributed.nnodes
    for role in p.roles:
        runtime = dict(role.runtime_env)
        # Stack-shape values reach a role either in its env or through the plan's topology.
        assert {**p.topology_env, **role.env}["NNODES"] == str(stack.distributed.nnodes)
        assert not set(p.topology_env) & (set(role.env) | set(runtime))
        shaped = {**p.topology_env, **role.env}
        assert shaped["NPROC_PER_NODE"] == shaped["MAD_RUNTIME_NGPUS"] == str(nproc)
        assert role.env["MASTER_PORT"] == "23456"
        assert role.env["MAD_LAUNCHER_TYPE"] == (launcher or "none")
        assert role.env["MAD_DEPLOYMENT_TYPE"] == ("kubernetes" if target == "k8s" else "slurm")
        assert ("HSA_NO_SCRATCH_RECLAIM" in role.env) == (target == "k8s")
        if role.ray is not None and role.ray.part == "workers":
            # The head's address, which the node program reads from the head's status file.
            assert "MASTER_ADDR" in role.unset_env and "python3 - worker " in role.command
        else:
            assert "MASTER_ADDR" in role.env or "MASTER_ADDR" in runtime
        assert "NODE_RANK" in role.env or "NODE_RANK" in runtime
        assert role.command.startswith(CD + "\n")
        # Providers own the work dir; a name is in exactly one place.
        assert "MADINFRA_WORKDIR" not in role.env and "MADINFRA_WORKDIR" not in runtime
        assert not set(role.env) & set(runtime)
        assert not set(role.unset_env) & (set(role.env) | set(runtime))
        assert len(runtime) == len(role.runtime_env)
        has_runner = "MAD_MULTI_NODE_RUNNER" in role.env or "MAD_MULTI_NODE_RUNNER" in runtime
        assert has_runner == (launcher in ("torchrun", "deepspeed", "megatron", "torchtitan"))
        if has_runner:
            assert role.ports == {"master": 23456}


@pytest.mark.parametrize(("launcher", "target", "multi", "nproc"), CASES)
def test_generated_shell_parses(spec, render_role, launcher, target, multi, nproc):
    """Every role, rendered the way the SLURM provider exports it, passes ``bash -n``."""
    p = compile(spec(target, launcher, _nodes(launcher, multi), nproc, extra={"model": {"args": ["$(touch /tmp/x); echo", "it's"]}}))
    for role in p.roles:
        proc = subprocess.run(["bash", "-n"], input=render_role(role), capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0, f"{role.role}: {proc.stderr}"


def test_unknown_launcher_is_a_clear_error(spec):
    stack = spec("k8s", "torchrun")
    bad = stack.model_copy(update={"distributed": stack.distributed.model_copy(update={"launcher": "xyz"})})
    with pytest.raises(MadinfraError, match=r"^Unknown launcher type 'xyz'\. Valid launchers: torchrun, deepspeed, megatron, torchtitan, primus, vllm, sglang, sglang-disagg$"):
        compile(bad)


def test_plain_script_without_launcher(spec):
    py = compile(spec("slurm", None, 2, 2, extra={"model": {"script": "train.py", "args": ["-v"]}})).role("worker")
    assert py.command == f"{CD}\npython3 train.py -v"
    assert "MAD_MULTI_NODE_RUNNER" not in py.env and "MAD_MULTI_NODE_RUNNER" not in dict(py.runtime_env)
    assert py.env["WORLD_SIZE"] == "4"
    sh = compile(spec("k8s", None, 1, 1)).role("worker")
    assert sh.env["MAD_DEPLOYMENT_TYPE"] == "kubernetes"
    assert sh.command == f"{CD}\nbash run.sh"
    assert sh.env["MAD_LAUNCHER_TYPE"] == "none"


def test_slurm_common_runtime_env(spec):
    worker = compile(spec("slurm", "torchrun", 2, 2)).role("worker")
    runtime = dict(worker.runtime_env)
    assert runtime["MASTER_ADDR"] == SlurmAddressing("demo").master_addr("worker")
    assert runtime["RANK"] == runtime["NODE_RANK"] == runtime["MAD_NODE_RANK"] == "${SLURM_PROCID}"
    assert runtime["MAD_SLURM_JOB_ID"] == "${SLURM_JOB_ID}"
    assert (worker.env["WORLD_SIZE"], worker.env["LOCAL_RANK"], worker.env["MAD_IN_SLURM_JOB"], worker.env["MAD_TOTAL_NODES"]) == ("2", "0", "1", "2")


def test_training_gpu_visibility_lists_every_gpu_of_the_node(spec):
    worker = compile(spec("slurm", "torchrun", 1, 4)).role("worker")
    for name in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        assert worker.env[name] == "0,1,2,3"
    assert worker.unset_env == ()


def test_cpu_only_nodes_set_no_visibility(spec):
    for launcher in ("torchrun", "vllm"):
        role = compile(spec("k8s", launcher, 1, 1, extra={"k8s": {"gpu_count": 0}})).roles[0]
        assert role.gpus_per_node == 0
        assert not {"HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"} & set(role.env)
        assert role.unset_env == ()


def test_user_env_comes_first_and_keeps_what_the_launcher_does_not_set(spec):
    stack = spec("k8s", "torchrun", 2, 2, port=23456, extra={"env_vars": {"MASTER_PORT": "23456", "FOO": "$(rm -rf /)", "NCCL_DEBUG": "INFO"}})
    worker = compile(stack).role("worker")
    assert worker.env["MASTER_PORT"] == "23456"
    assert worker.env["FOO"] == "$(rm -rf /)"  # literal: providers quote env
    assert worker.env["NCCL_DEBUG"] == "INFO"  # the user's value beats the preset's
    assert dict(worker.runtime_env)["NODE_RANK"] == "${JOB_COMPLETION_INDEX}"
    assert list(worker.env).index("FOO") < list(worker.env).index("NNODES")


def test_a_user_value_the_launcher_would_override_is_refused_with_its_field(spec):
    """It used to be dropped silently; now validate and plan name it (issue 14, contracts)."""
    stack = spec("k8s", "torchrun", 2, 2, port=23456, extra={"env_vars": {"MASTER_PORT": "1", "NODE_RANK": "7"}})
    with pytest.raises(ConfigError) as info:
        compile(stack)
    found = dict(info.value.problems)
    assert found["env_vars.MASTER_PORT"].startswith("is '1', but the torchrun launcher sets MASTER_PORT to '23456' on the worker nodes, so your value would never reach them")
    assert "sets NODE_RANK to a value computed on each node" in found["env_vars.NODE_RANK"]
    assert found["env_vars.NODE_RANK"].endswith("or set roles.worker.env.NODE_RANK to override the launcher on purpose")


def test_user_env_cannot_reintroduce_a_variable_the_launcher_unsets(spec):
    with pytest.raises(ConfigError) as info:
        compile(spec("k8s", "vllm", 1, 2, extra={"env_vars": {"CUDA_VISIBLE_DEVICES": "0"}}))
    assert "sets CUDA_VISIBLE_DEVICES to nothing (it unsets it)" in dict(info.value.problems)["env_vars.CUDA_VISIBLE_DEVICES"]
    server = compile(spec("k8s", "vllm", 1, 2, extra={"roles": {"server": {"env": {"CUDA_VISIBLE_DEVICES": "0"}}}})).role("server")
    assert server.env["CUDA_VISIBLE_DEVICES"] == "0" and "CUDA_VISIBLE_DEVICES" not in server.unset_env


def test_role_override_env_comes_last(spec):
    stack = spec(
        "slurm", "vllm", 1, 2,
        extra={"env_vars": {"X": "user"}, "roles": {"server": {"env": {"X": "role", "MASTER_PORT": "9", "CUDA_VISIBLE_DEVICES": "1", "MAD_SLURM_JOB_ID": "fixed"}}}},
    )
    server = compile(stack).role("server")
    assert (server.env["X"], server.env["MASTER_PORT"], server.env["CUDA_VISIBLE_DEVICES"], server.env["MAD_SLURM_JOB_ID"]) == ("role", "9", "1", "fixed")
    assert "CUDA_VISIBLE_DEVICES" not in server.unset_env
    assert "MAD_SLURM_JOB_ID" not in dict(server.runtime_env)


def test_role_command_override_replaces_only_the_command(spec):
    stack = spec("k8s", "sglang-disagg", 3, 2, extra={"roles": {"decode": {"command": "python3 -m http.server 30000 --bind 127.0.0.1"}}})
    p = compile(stack)
    decode = p.role("decode")
    assert decode.command == "python3 -m http.server 30000 --bind 127.0.0.1"
    assert p.topology_env["DECODE_COUNT"] == "1" and decode.env["MODEL_PATH"] == "/models/llama"
    assert p.role("prefill").command.startswith(CD)


def test_model_path_field_and_a_different_env_model_path_are_refused_together(spec):
    with pytest.raises(ConfigError) as info:
        compile(spec("slurm", "sglang", 1, 2, extra={"env_vars": {"MODEL_PATH": "/old"}}))
    assert dict(info.value.problems)["env_vars.MODEL_PATH"].startswith("is '/old', but model.model_path sets MODEL_PATH to '/models/llama' on the server nodes")
    server = compile(spec("slurm", "sglang", 1, 2, extra={"env_vars": {"MODEL_PATH": "/models/llama"}})).role("server")
    assert server.env["MODEL_PATH"] == "/models/llama"


def test_quoted_args_survive_every_launcher(spec):
    hostile = "$(touch /tmp/x); echo"
    for launcher in ("torchrun", "deepspeed", "megatron", "torchtitan", None):
        worker = compile(spec("slurm", launcher, 2, 2, extra={"model": {"script": "job.sh", "args": [hostile]}})).role("worker")
        assert worker.command.endswith(f"bash job.sh {shlex.quote(hostile)}")


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_docker_env_vars_are_the_workloads_env_over_env_vars_but_under_the_launcher(plan, target):
    """madengine passes docker_env_vars into the workload's container; the pod is one, and a
    SLURM task runs in one or on the bare host: either way they reach the process."""
    extra = {"env_vars": {"A": "env", "B": "env"}, "docker_env_vars": {"B": "docker", "C": "docker"}}
    (role,) = plan(target, "torchrun", 2, 1, extra=extra).roles
    assert (role.env["A"], role.env["B"], role.env["C"]) == ("env", "docker", "docker")
    with pytest.raises(ConfigError, match=r"docker_env_vars\.MAD_LAUNCHER_TYPE: is 'mine', but the torchrun launcher sets MAD_LAUNCHER_TYPE to 'torchrun'"):
        plan(target, "torchrun", 2, 1, extra={"docker_env_vars": {"MAD_LAUNCHER_TYPE": "mine"}})
