"""DeepSpeed: single-node runner, per-node multi-node mode (--no_ssh) and where the hostfile lives."""

from __future__ import annotations

import pytest

CD = 'cd "${MADINFRA_WORKDIR:-.}" || exit 1'
SLURM_HOSTFILE = "${MADINFRA_WORKDIR:-.}/deepspeed_hostfile_${SLURM_JOB_ID}.txt"


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_single_node_runner_and_no_hostfile(plan, target):
    worker = plan(target, "deepspeed", 1, 4, port=23456, extra={"model": {"script": "train.py"}}).role("worker")
    assert worker.env["MAD_MULTI_NODE_RUNNER"] == "deepspeed --num_gpus=4 --master_port=23456"
    assert worker.env["WORLD_SIZE"] == "4"
    assert worker.command == f"{CD}\n${{MAD_MULTI_NODE_RUNNER}} train.py"


def test_k8s_multi_node_writes_pod_dns_hostfile_in_pod_tmp(plan):
    worker = plan("k8s", "deepspeed", 3, 2, port=23456).role("worker")
    hosts = [f"'demo-{i}.demo.ml.svc.cluster.local slots=2'" for i in range(3)]
    assert worker.command == (
        f"{CD}\nprintf '%s\\n' {' '.join(hosts)} > /tmp/hostfile || exit 1\nbash run.sh"
    )
    assert dict(worker.runtime_env)["MAD_MULTI_NODE_RUNNER"] == (
        "deepspeed --hostfile=/tmp/hostfile --master_addr=${MASTER_ADDR} --master_port=23456"
        " --num_nodes=3 --num_gpus=2 --no_ssh --node_rank=${JOB_COMPLETION_INDEX}"
    )
    assert worker.env["WORLD_SIZE"] == "6"
    assert worker.env["MASTER_ADDR"] == "demo-0.demo.ml.svc.cluster.local"


def test_slurm_multi_node_hostfile_goes_to_the_work_dir_not_host_tmp(plan):
    worker = plan("slurm", "deepspeed", 2, 2, port=23456).role("worker")
    runner = dict(worker.runtime_env)["MAD_MULTI_NODE_RUNNER"]
    assert runner == (
        f"deepspeed --hostfile={SLURM_HOSTFILE} --master_addr=${{MASTER_ADDR}} --master_port=23456"
        " --num_nodes=2 --num_gpus=2 --no_ssh --node_rank=${SLURM_PROCID}"
    )
    assert "/tmp" not in worker.command and "/tmp" not in runner
    assert worker.command.splitlines()[1] == (
        f'scontrol show hostnames "${{SLURM_JOB_NODELIST}}" | sed \'s/$/ slots=2/\' > "{SLURM_HOSTFILE}.${{SLURM_PROCID}}"'
        f' && mv -f "{SLURM_HOSTFILE}.${{SLURM_PROCID}}" "{SLURM_HOSTFILE}" || exit 1'
    )


def test_slurm_multi_node_runs_deepspeed_per_node_with_a_real_hostfile(plan, run_role):
    worker = plan("slurm", "deepspeed", 2, 2, port=23456, extra={"model": {"script": "train.py", "args": ["--zero", "3"]}}).role("worker")
    proc, argv, workdir = run_role(worker, "deepspeed", {"SLURM_JOB_NODELIST": "node[1-2]", "SLURM_PROCID": "1", "SLURM_JOB_ID": "77"})
    assert proc.returncode == 0, proc.stderr
    hostfile = workdir / "deepspeed_hostfile_77.txt"
    assert hostfile.read_text() == "node1 slots=2\nnode2 slots=2\n"
    assert argv == [
        f"--hostfile={hostfile}", "--master_addr=10.0.0.1", "--master_port=23456", "--num_nodes=2",
        "--num_gpus=2", "--no_ssh", "--node_rank=1", "train.py", "--zero", "3",
    ]
