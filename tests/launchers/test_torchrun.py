"""torchrun: madengine's runner lines per target and node count, with master_port honoured."""

from __future__ import annotations

import shlex

from madinfra.launchers.addressing import SlurmAddressing

CD = 'cd "${MADINFRA_WORKDIR:-.}" || exit 1'
K8S_MASTER = "demo-0.demo.ml.svc.cluster.local"


def test_k8s_single_node_is_standalone_and_runs_the_script_with_bash(plan):
    p = plan("k8s", "torchrun", 1, 4, port=23456)
    (worker,) = p.roles
    assert (worker.role, worker.nodes, worker.first_rank, worker.gpus_per_node) == ("worker", 1, 0, 4)
    assert worker.env["MAD_MULTI_NODE_RUNNER"] == "torchrun --standalone --nproc_per_node=4"
    assert worker.env["MAD_RUNTIME_NGPUS"] == "4"
    assert worker.env["MASTER_PORT"] == "23456"
    assert worker.env["MASTER_ADDR"] == "localhost"
    assert worker.env["NODE_RANK"] == "0"
    assert worker.command == f"{CD}\nbash run.sh"
    assert p.workload == "training" and p.service_port is None
    assert worker.ports == {"master": 23456}


def test_k8s_multi_node_sh_runner_uses_job_completion_index_and_pod_dns(plan):
    p = plan("k8s", "torchrun", 2, 2, port=23456, extra={"model": {"script": "scripts/run.sh", "args": ["--epochs", "3"]}})
    worker = p.role("worker")
    runtime = dict(worker.runtime_env)
    assert runtime["MAD_MULTI_NODE_RUNNER"] == (
        "torchrun --nnodes=2 --nproc_per_node=2 --node_rank=${JOB_COMPLETION_INDEX}"
        " --master_addr=${MASTER_ADDR} --master_port=23456"
    )
    assert "MAD_MULTI_NODE_RUNNER" not in worker.env
    assert worker.env["MASTER_ADDR"] == K8S_MASTER
    assert runtime["NODE_RANK"] == "${JOB_COMPLETION_INDEX}"
    assert runtime["RANK"] == "${JOB_COMPLETION_INDEX}"
    assert worker.command == f"{CD}\nbash scripts/run.sh --epochs 3"


def test_k8s_multi_node_py_adds_c10d_rendezvous(plan):
    p = plan("k8s", "torchrun", 2, 2, port=23456, extra={"model": {"script": "train.py", "args": ["--lr", "0.1"]}})
    worker = p.role("worker")
    assert dict(worker.runtime_env)["MAD_MULTI_NODE_RUNNER"] == (
        "torchrun --nnodes=2 --nproc_per_node=2 --node_rank=${JOB_COMPLETION_INDEX}"
        " --master_addr=${MASTER_ADDR} --master_port=23456"
        " --rdzv_backend=c10d --rdzv_endpoint=${MASTER_ADDR}:23456 --rdzv_id=demo"
    )
    assert worker.command == f"{CD}\n${{MAD_MULTI_NODE_RUNNER}} train.py --lr 0.1"


def test_slurm_single_node_is_standalone(plan):
    worker = plan("slurm", "torchrun", 1, 8).role("worker")
    assert worker.env["MAD_MULTI_NODE_RUNNER"] == "torchrun --standalone --nproc_per_node=8"
    assert worker.env["MASTER_PORT"] == "29500"
    assert worker.env["RANK"] == "0"
    assert worker.env["MAD_DEPLOYMENT_TYPE"] == "slurm"


def test_slurm_multi_node_py_uses_procid_and_first_node_address(plan):
    worker = plan("slurm", "torchrun", 2, 2, port=23456, extra={"model": {"script": "train.py"}}).role("worker")
    runtime = dict(worker.runtime_env)
    assert runtime["MASTER_ADDR"] == SlurmAddressing("demo").master_addr("worker")
    assert runtime["NODE_RANK"] == runtime["RANK"] == "${SLURM_PROCID}"
    assert runtime["MAD_MULTI_NODE_RUNNER"] == (
        "torchrun --nnodes=2 --nproc_per_node=2 --node_rank=${SLURM_PROCID}"
        " --master_addr=${MASTER_ADDR} --master_port=23456"
        " --rdzv_backend=c10d --rdzv_endpoint=${MASTER_ADDR}:23456 --rdzv_id=demo"
    )
    names = [name for name, _ in worker.runtime_env]
    assert names.index("MASTER_ADDR") < names.index("MAD_MULTI_NODE_RUNNER")


def test_slurm_multi_node_sh_runner_has_no_rendezvous(plan):
    worker = plan("slurm", "torchrun", 2, 2).role("worker")
    assert dict(worker.runtime_env)["MAD_MULTI_NODE_RUNNER"] == (
        "torchrun --nnodes=2 --nproc_per_node=2 --node_rank=${SLURM_PROCID}"
        " --master_addr=${MASTER_ADDR} --master_port=29500"
    )


def test_hostile_args_are_quoted_and_kept(plan):
    hostile = "$(touch /tmp/x); echo"
    worker = plan("k8s", "torchrun", 1, 1, extra={"model": {"script": "my train.py", "args": [hostile, "--ok"]}}).role("worker")
    assert worker.command.endswith(f"${{MAD_MULTI_NODE_RUNNER}} {shlex.quote('my train.py')} {shlex.quote(hostile)} --ok")


def test_slurm_multi_node_runner_reaches_torchrun_as_words(plan, run_role):
    hostile = "$(touch PWNED); echo"
    worker = plan("slurm", "torchrun", 2, 2, port=23456, extra={"model": {"script": "train.py", "args": [hostile]}}).role("worker")
    proc, argv, workdir = run_role(worker, "torchrun", {"SLURM_JOB_NODELIST": "node[1-2]", "SLURM_PROCID": "1", "SLURM_JOB_ID": "77"})
    assert proc.returncode == 0, proc.stderr
    assert argv == [
        "--nnodes=2", "--nproc_per_node=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=23456",
        "--rdzv_backend=c10d", "--rdzv_endpoint=10.0.0.1:23456", "--rdzv_id=demo", "train.py", hostile,
    ]
    assert not (workdir / "PWNED").exists() and not (workdir.parent / "PWNED").exists()
