"""vLLM: TP/PP/backend per target, Ray set-up, GPU visibility per vendor, the native server."""

from __future__ import annotations

import shlex

import pytest

from madinfra.errors import MadinfraError
from madinfra.launchers.addressing import SlurmAddressing

CD = 'cd "${MADINFRA_WORKDIR:-.}" || exit 1'
GUARD = ': "${MODEL_PATH:?names no model: set model.model_path or env_vars.MODEL_PATH in the stack}"'
AMD_UNSET = ("RAY_EXPERIMENTAL_NOSET_HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


def _vllm(role) -> tuple[str, str, str]:
    env = role.env
    return env["VLLM_TENSOR_PARALLEL_SIZE"], env["VLLM_PIPELINE_PARALLEL_SIZE"], env["VLLM_DISTRIBUTED_BACKEND"]


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_single_node_serves_with_tensor_parallel_and_auto_backend(plan, target):
    p = plan(target, "vllm", 1, 4)
    (server,) = p.roles
    assert (server.role, server.nodes, server.first_rank, server.gpus_per_node) == ("server", 1, 0, 4)
    assert _vllm(server) == ("4", "1", "auto")
    assert server.command == (
        f'{CD}\n{GUARD}\nvllm serve "$MODEL_PATH" --tensor-parallel-size 4 --pipeline-parallel-size 1 --host 0.0.0.0 --port 8000'
    )
    assert server.env["MODEL_PATH"] == "/models/llama"
    assert "MAD_MULTI_NODE_RUNNER" not in server.env and "MAD_MULTI_NODE_RUNNER" not in dict(server.runtime_env)
    assert (p.workload, p.service_port, server.ports) == ("service", 8000, {"http": 8000})


def test_amd_sets_only_hip_visible_devices_and_unsets_the_rest(plan):
    server = plan("k8s", "vllm", 1, 4).role("server")
    assert server.env["HIP_VISIBLE_DEVICES"] == "0,1,2,3"
    assert "ROCR_VISIBLE_DEVICES" not in server.env and "CUDA_VISIBLE_DEVICES" not in server.env
    assert server.unset_env == AMD_UNSET


def test_nvidia_sets_only_cuda_visible_devices(plan):
    server = plan("slurm", "vllm", 1, 4, extra={"gpu_vendor": "NVIDIA"}).role("server")
    assert server.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert "HIP_VISIBLE_DEVICES" not in server.env
    assert server.unset_env == ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def test_k8s_multi_node_pods_are_independent_ray_replicas(plan):
    p = plan("k8s", "vllm", 2, 4, port=23456)
    server = p.role("server")
    runtime = dict(server.runtime_env)
    assert _vllm(server) == ("4", "1", "ray")
    assert runtime["VLLM_HOST_IP"] == "${POD_IP}"
    assert "POD_IP" in runtime
    assert server.command == (
        f"{CD}\n"
        "ray stop --force; ray start --head --port=6379 --node-ip-address=${POD_IP} --num-gpus=4 || exit 1\n"
        f"{GUARD}\n"
        'vllm serve "$MODEL_PATH" --tensor-parallel-size 4 --pipeline-parallel-size 1 --host 0.0.0.0 --port 8000'
        " --distributed-executor-backend ray"
    )
    assert server.ports == {"http": 8000, "ray": 6379}
    assert server.env["MASTER_PORT"] == "23456"


def test_slurm_multi_node_is_a_ray_head_role_and_a_workers_role(plan):
    p = plan("slurm", "vllm", 3, 4)
    head, workers = p.roles
    assert (head.role, head.nodes, head.first_rank) == ("server", 1, 0)
    assert (workers.role, workers.nodes, workers.first_rank) == ("server-workers", 2, 1)
    assert (head.ray.part, workers.ray.part) == ("head", "workers")
    assert head.ray.cluster == workers.ray.cluster == "server" and head.ray.nodes == workers.ray.nodes == 3
    assert head.ports == {"http": 8000, "ray": 6379, "ray_dashboard": 8265} and workers.ports == {}
    # The cluster's size is the stack's topology, so resizing never touches the head's script.
    assert p.topology_env == {"NNODES": "3", "WORLD_SIZE": "3", "MAD_TOTAL_NODES": "3", "VLLM_PIPELINE_PARALLEL_SIZE": "3"}
    for role in (head, workers):
        assert not set(p.topology_env) & set(role.env)
        assert dict(role.runtime_env)["VLLM_HOST_IP"] == SlurmAddressing("demo").self_ip()
        assert (role.env["VLLM_TENSOR_PARALLEL_SIZE"], role.env["VLLM_DISTRIBUTED_BACKEND"]) == ("4", "ray")
    assert dict(head.runtime_env)["MASTER_ADDR"] == "${VLLM_HOST_IP}" and head.env["NODE_RANK"] == "0"
    assert dict(workers.runtime_env)["NODE_RANK"] == "$(( 1 + ${SLURM_PROCID} ))"
    serve = (
        'vllm serve "$MODEL_PATH" --tensor-parallel-size 4 --pipeline-parallel-size "${VLLM_PIPELINE_PARALLEL_SIZE}"'
        " --host 0.0.0.0 --port 8000 --distributed-executor-backend ray"
    )
    assert shlex.quote(f"{GUARD}\n{serve}") in head.command, "the engine is the supervisor's argument"
    assert "python3 - worker --node-ip \"${VLLM_HOST_IP}\" --num-gpus 4" in workers.command
    assert "ray stop" not in head.command + workers.command, "never kill other Ray processes on a shared node"
    smaller = plan("slurm", "vllm", 2, 4).role("server")
    assert (smaller.env, smaller.runtime_env, smaller.command) == (head.env, head.runtime_env, head.command), "the head's script does not depend on the cluster's size"


def test_a_server_command_override_is_the_engine_the_head_runs(plan):
    p = plan("slurm", "vllm", 2, 1, extra={"roles": {"server": {"command": "my-server --x", "env": {"A": "b"}}}})
    head, workers = p.roles
    assert shlex.quote("my-server --x") in head.command and "python3 -" in head.command
    assert "my-server" not in workers.command and "ray start" in workers.command
    assert head.env["A"] == workers.env["A"] == "b", "roles.server settings reach both parts"


def test_backend_override(plan):
    server = plan("k8s", "vllm", 1, 2, extra={"distributed": {"vllm_backend": "ray"}}).role("server")
    assert server.env["VLLM_DISTRIBUTED_BACKEND"] == "ray"
    assert server.command.endswith("--distributed-executor-backend ray")
    replicas = plan("k8s", "vllm", 2, 2, extra={"distributed": {"vllm_backend": "none"}}).role("server")
    assert replicas.env["VLLM_DISTRIBUTED_BACKEND"] == "none"
    assert "ray start" not in replicas.command and "--distributed-executor-backend" not in replicas.command


def test_slurm_multi_node_refuses_a_non_ray_backend(plan):
    with pytest.raises(MadinfraError, match="vllm_backend must be 'ray'"):
        plan("slurm", "vllm", 2, 2, extra={"distributed": {"vllm_backend": "auto"}})


def test_user_script_replaces_the_native_server_and_keeps_args(plan):
    server = plan("k8s", "vllm", 1, 2, extra={"model": {"model_path": None, "script": "serve.sh", "args": ["--model", "x y"]}}).role("server")
    assert server.command == f"{CD}\nbash serve.sh --model 'x y'"
    assert "MODEL_PATH" not in server.env


def test_model_args_extend_the_native_server_and_service_port_is_honoured(plan):
    p = plan("k8s", "vllm", 1, 2, extra={"model": {"args": ["--max-model-len", "4096"]}, "service": {"port": 9000}})
    assert p.service_port == 9000
    assert p.role("server").command.endswith("--host 0.0.0.0 --port 9000 --max-model-len 4096")
    assert p.role("server").ports == {"http": 9000}


def test_native_server_without_a_model_stops_with_one_clear_line(plan, run_role):
    server = plan("slurm", "vllm", 1, 2, extra={"model": {"model_path": None}}).role("server")
    proc, argv, _ = run_role(server, "vllm")
    assert proc.returncode != 0 and argv == []
    assert "MODEL_PATH: names no model: set model.model_path or env_vars.MODEL_PATH in the stack" in proc.stderr


def test_native_server_receives_the_model_path(plan, run_role):
    server = plan("slurm", "vllm", 1, 2, extra={"model": {"model_path": "/models/my llama"}}).role("server")
    proc, argv, _ = run_role(server, "vllm")
    assert proc.returncode == 0, proc.stderr
    assert argv[:2] == ["serve", "/models/my llama"]


def test_model_path_from_env_vars_and_a_stand_in_server_command(plan):
    from_env = plan("k8s", "vllm", 1, 2, extra={"model": {"model_path": None}, "env_vars": {"MODEL_PATH": "/m"}})
    assert from_env.role("server").env["MODEL_PATH"] == "/m"
    stand_in = plan("k8s", "vllm", 1, 2, extra={"model": {"model_path": None}, "roles": {"server": {"command": "python3 -m http.server 8000"}}})
    assert stand_in.role("server").command == "python3 -m http.server 8000"
