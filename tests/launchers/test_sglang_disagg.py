"""Disaggregated SGLang: pool split and ranks, mini_lb endpoints per target, SGLANG_DISAGG_* contract."""

from __future__ import annotations

import pytest

from madinfra.launchers.sglang_disagg import node_ips_expr

CD = 'cd "${MADINFRA_WORKDIR:-.}" || exit 1'
GUARD = ': "${MODEL_PATH:?names no model: set model.model_path or env_vars.MODEL_PATH in the stack}"'
PREFILL_FILE = '"${MADINFRA_WORKDIR:-.}/endpoints/prefill"'
DECODE_FILE = '"${MADINFRA_WORKDIR:-.}/endpoints/decode"'


def _server(mode: str, host: str) -> str:
    return (
        f'python3 -m sglang.launch_server --model-path "$MODEL_PATH" --disaggregation-mode {mode} --tp-size 8'
        f' --host "{host}" --port 30000 --trust-remote-code --disaggregation-transfer-backend mooncake'
    )


@pytest.mark.parametrize(
    ("nnodes", "custom", "prefill", "decode"),
    [(3, None, 1, 1), (5, None, 1, 3), (7, None, 2, 4), (11, None, 4, 6), (7, (4, 2), 4, 2)],
)
@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_split_roles_and_ranks(plan, target, nnodes, custom, prefill, decode):
    extra = {"distributed": {"sglang_disagg": {"prefill_nodes": custom[0], "decode_nodes": custom[1]}}} if custom else {}
    p = plan(target, "sglang-disagg", nnodes, 8, extra=extra)
    shape = [(r.role, r.nodes, r.first_rank, r.gpus_per_node) for r in p.roles]
    assert shape == [("proxy", 1, 0, 0), ("prefill", prefill, 1, 8), ("decode", decode, 1 + prefill, 8)]
    assert list(p.role("decode").ranks) == list(range(1 + prefill, nnodes))
    assert p.total_gpus == (nnodes - 1) * 8
    assert p.workload == "service"


def test_k8s_proxy_lists_every_prefill_and_decode_pod(plan):
    p = plan("k8s", "sglang-disagg", 7, 8, port=23456)
    proxy = p.role("proxy")
    prefill = " ".join(f"http://demo-prefill-{i}.demo-prefill.ml.svc.cluster.local:30000" for i in range(2))
    decode = " ".join(f"http://demo-decode-{i}.demo-decode.ml.svc.cluster.local:30000" for i in range(4))
    assert proxy.command == (
        f"{CD}\npython3 -m sglang.srt.disaggregation.mini_lb --prefill {prefill} --decode {decode}"
        " --host 0.0.0.0 --port 23456"
    )
    assert p.service_port == 23456 and proxy.ports == {"http": 23456}
    assert "MAD_MULTI_NODE_RUNNER" not in proxy.env


def test_k8s_env_contract(plan):
    p = plan("k8s", "sglang-disagg", 5, 8)
    proxy, prefill, decode = p.roles
    topology = p.topology_env
    assert (topology["TOTAL_PODS"], topology["PREFILL_COUNT"], topology["DECODE_COUNT"]) == ("5", "1", "3")
    assert (topology["MADINFRA_FIRST_RANK_PREFILL"], topology["MADINFRA_FIRST_RANK_DECODE"]) == ("1", "2")
    assert topology["TP_SIZE"] == "8"
    for role in p.roles:
        assert "POD_IP" in dict(role.runtime_env)
    assert proxy.env["POD_INDEX"] == "0"
    assert dict(prefill.runtime_env)["POD_INDEX"] == "$(( ${MADINFRA_FIRST_RANK_PREFILL} + ${HOSTNAME##*-} ))"
    assert dict(decode.runtime_env)["POD_INDEX"] == "$(( ${MADINFRA_FIRST_RANK_DECODE} + ${HOSTNAME##*-} ))"
    assert dict(decode.runtime_env)["NODE_RANK"] == "$(( ${MADINFRA_FIRST_RANK_DECODE} + ${HOSTNAME##*-} ))"
    assert prefill.command == f"{CD}\n{GUARD}\n{_server('prefill', '${POD_IP}')}"
    assert decode.command == f"{CD}\n{GUARD}\n{_server('decode', '${POD_IP}')}"
    assert prefill.env["MODEL_PATH"] == "/models/llama"


def test_proxy_needs_no_gpu_and_sets_no_visibility(plan):
    proxy = plan("k8s", "sglang-disagg", 3, 8).role("proxy")
    assert proxy.gpus_per_node == 0
    assert not {"HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"} & set(proxy.env)
    assert proxy.unset_env == ()


def test_slurm_env_contract(plan):
    p = plan("slurm", "sglang-disagg", 7, 8, extra={"distributed": {"sglang_disagg": {"prefill_nodes": 4, "decode_nodes": 2}}})
    topology = p.topology_env
    assert (topology["SGLANG_DISAGG_PREFILL_NODES"], topology["SGLANG_DISAGG_DECODE_NODES"], topology["SGLANG_DISAGG_TOTAL_NODES"]) == ("4", "2", "7")
    for role in p.roles:
        env, runtime = role.env, dict(role.runtime_env)
        assert env["SGLANG_DISAGG_MODE"] == "enabled"
    assert topology["SGLANG_TP_SIZE"] == "8"
    for role in p.roles:
        assert dict(role.runtime_env)["SGLANG_NODE_IPS"] == node_ips_expr(role.role)
    proxy, prefill, decode = p.roles
    assert proxy.env["SGLANG_NODE_RANK"] == "0"
    # One job per pool replica (one node): the replica's index, exported by the SLURM provider.
    assert dict(prefill.runtime_env)["SGLANG_NODE_RANK"] == "$(( ${MADINFRA_FIRST_RANK_PREFILL} + ${MADINFRA_REPLICA_INDEX} ))"
    assert dict(decode.runtime_env)["SGLANG_NODE_RANK"] == "$(( ${MADINFRA_FIRST_RANK_DECODE} + ${MADINFRA_REPLICA_INDEX} ))"
    assert topology["MADINFRA_FIRST_RANK_DECODE"] == "5"
    assert decode.command == f"{CD}\n{GUARD}\n{_server('decode', '${SGLANG_HOST_IP}')}"


def test_resizing_one_pool_leaves_the_other_pools_launch_unchanged(plan):
    """The point of disaggregation in madinfra: a pool resize only changes that pool (and the
    stack's topology), so the other pool keeps running untouched."""
    for target in ("k8s", "slurm"):
        before = plan(target, "sglang-disagg", 5, 8, extra={"distributed": {"sglang_disagg": {"prefill_nodes": 1, "decode_nodes": 3}}})
        after = plan(target, "sglang-disagg", 6, 8, extra={"distributed": {"sglang_disagg": {"prefill_nodes": 2, "decode_nodes": 3}}})
        assert before.role("decode").nodes == after.role("decode").nodes == 3
        assert before.role("decode").env == after.role("decode").env
        assert before.role("decode").runtime_env == after.role("decode").runtime_env
        assert before.role("decode").command == after.role("decode").command
        assert before.topology_env != after.topology_env


def test_a_slurm_pool_replica_does_not_depend_on_the_pool_size(plan):
    """On SLURM each replica is its own one-node job: growing a pool from 1 to 3 replicas must
    leave replica 0's environment and command as they were (only the new replicas start)."""
    one = plan("slurm", "sglang-disagg", 3, 8, extra={"distributed": {"sglang_disagg": {"prefill_nodes": 1, "decode_nodes": 1}}})
    three = plan("slurm", "sglang-disagg", 5, 8, extra={"distributed": {"sglang_disagg": {"prefill_nodes": 1, "decode_nodes": 3}}})
    for pool in ("prefill", "decode"):
        assert one.role(pool).env == three.role(pool).env
        assert one.role(pool).runtime_env == three.role(pool).runtime_env
        assert one.role(pool).command == three.role(pool).command
    assert three.role("decode").env["MASTER_ADDR"] == "localhost"


def test_changing_tensor_parallel_size_leaves_the_proxy_unchanged(plan):
    for target in ("k8s", "slurm"):
        before, after = plan(target, "sglang-disagg", 5, 4), plan(target, "sglang-disagg", 5, 8)
        assert before.role("proxy") == after.role("proxy")
        assert before.role("decode").command != after.role("decode").command


def test_slurm_proxy_reads_endpoint_files_at_run_time(plan):
    proxy = plan("slurm", "sglang-disagg", 3, 8, port=23456).role("proxy")
    lines = proxy.command.splitlines()
    assert lines[0] == CD
    assert lines[1] == f"for _ in $(seq 150); do [ -s {PREFILL_FILE} ] && [ -s {DECODE_FILE} ] && break; sleep 2; done"
    assert (
        f"  if [ -s {PREFILL_FILE} ] && [ -s {DECODE_FILE} ]; then"
        f" python3 -m sglang.srt.disaggregation.mini_lb --prefill $(cat {PREFILL_FILE}) --decode $(cat {DECODE_FILE})"
        " --host 0.0.0.0 --port 23456 & proxy_pid=$!; else proxy_pid=; fi"
    ) in lines


def test_slurm_proxy_restarts_in_place_when_endpoint_files_change(plan, tmp_path):
    """Resizing a pool rewrites an endpoint file: the proxy process restarts, its job does not."""
    import os
    import signal
    import subprocess
    import time

    from madinfra.launchers.model import RoleLaunch

    proxy: RoleLaunch = plan("slurm", "sglang-disagg", 4, 8, port=23456).role("proxy")
    work = tmp_path / "work"
    (work / "endpoints").mkdir(parents=True)
    (work / "endpoints" / "prefill").write_text("http://a:30000\n")
    (work / "endpoints" / "decode").write_text("http://b:30000\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    starts = tmp_path / "starts"
    (bin_dir / "python3").write_text(f'#!/bin/bash\necho "$*" >> {starts}\nexec sleep 60\n')
    (bin_dir / "python3").chmod(0o755)
    script = tmp_path / "proxy.sh"
    script.write_text(proxy.command)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MADINFRA_WORKDIR": str(work)}
    proc = subprocess.Popen(["bash", str(script)], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (starts.exists() and starts.read_text().count("mini_lb") == 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        (work / "endpoints" / "decode").write_text("http://b:30000\nhttp://c:30000\n")
        deadline = time.monotonic() + 15
        while starts.read_text().count("mini_lb") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        runs = starts.read_text().splitlines()
        assert len(runs) == 2, runs
        assert "--decode http://b:30000 http://c:30000" in runs[1]
        assert proc.poll() is None  # the job's main process kept running
        # Both pools drained (replaced together): no router runs, the empty lists are
        # acknowledged, and the router starts again once both lists have replicas.
        ack = work / "endpoints" / ".proxy-seen"
        seen = ack.read_text()
        (work / "endpoints" / "prefill").write_text("")
        (work / "endpoints" / "decode").write_text("")
        deadline = time.monotonic() + 15
        while ack.read_text() == seen and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ack.read_text() != seen
        assert subprocess.run(["pgrep", "-s", str(proc.pid), "-f", "sleep 60"], capture_output=True).returncode == 1
        assert starts.read_text().count("mini_lb") == 2
        (work / "endpoints" / "prefill").write_text("http://d:30000\n")
        (work / "endpoints" / "decode").write_text("http://e:30000\n")
        deadline = time.monotonic() + 15
        while starts.read_text().count("mini_lb") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "--prefill http://d:30000 --decode http://e:30000" in starts.read_text().splitlines()[2]
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_slurm_proxy_splits_endpoint_lines_into_arguments(plan, run_role, tmp_path):
    proxy = plan("slurm", "sglang-disagg", 4, 8, port=23456).role("proxy")
    endpoints = tmp_path / "work" / "endpoints"
    endpoints.mkdir(parents=True)
    (endpoints / "prefill").write_text("http://10.0.0.2:30000\n")
    (endpoints / "decode").write_text("http://10.0.0.3:30000\nhttp://10.0.0.4:30000\n")
    proc, argv, _ = run_role(proxy, "python3", {"SLURM_JOB_NODELIST": "node1", "SLURM_PROCID": "0", "SLURM_JOB_ID": "9"})
    assert proc.returncode == 0, proc.stderr
    assert argv == [
        "-m", "sglang.srt.disaggregation.mini_lb", "--prefill", "http://10.0.0.2:30000",
        "--decode", "http://10.0.0.3:30000", "http://10.0.0.4:30000", "--host", "0.0.0.0", "--port", "23456",
    ]


def test_service_port_moves_the_proxy(plan):
    p = plan("k8s", "sglang-disagg", 3, 8, extra={"service": {"port": 8080}})
    assert p.service_port == 8080
    assert p.role("proxy").command.endswith("--host 0.0.0.0 --port 8080")
    assert p.role("prefill").ports == {"http": 30000}


def test_model_script_runs_in_every_pool_instead_of_native_servers(plan):
    p = plan("slurm", "sglang-disagg", 3, 8, extra={"model": {"model_path": None, "script": "scripts/sglang_disagg/run.sh", "args": ["--xp", "1"]}})
    for role in p.roles:
        assert role.command == f"{CD}\nbash scripts/sglang_disagg/run.sh --xp 1"


def test_k8s_global_rank_of_a_decode_pod(plan, run_role):
    decode = plan("k8s", "sglang-disagg", 5, 8).role("decode")
    proc, argv, _ = run_role(decode, "probe", {"HOSTNAME": "demo-decode-2", "POD_IP": "10.1.2.3", "MADINFRA_FIRST_RANK_DECODE": "2"}, command='probe "$POD_INDEX" "$NODE_RANK" "$POD_IP"')
    assert proc.returncode == 0, proc.stderr
    assert argv == ["4", "4", "10.1.2.3"]


SHOW_IPS = 'printf "%s\\n" "$SGLANG_NODE_IPS" "$SGLANG_NODE_RANK" > "$ARGV_FILE"'


def _node_ips(plan, run_role, tmp_path, role: str, replica: int, files: dict[str, str]) -> tuple[list[str], int]:
    """SGLANG_NODE_IPS (split) and SGLANG_NODE_RANK as replica ``replica`` of ``role`` sees them,
    with the pools' endpoint files (and ``.source`` sidecars) as apply wrote them before it started.

    The stub's allocation lists node1 (NodeAddr 10.0.0.1) first: the replica's own address.
    """
    p = plan("slurm", "sglang-disagg", 6, 8, extra={"distributed": {"sglang_disagg": {"prefill_nodes": 2, "decode_nodes": 3}}})
    # What topology.env gives every task of this 6-node stack (1 proxy, 2 prefill, 3 decode).
    env = {**p.topology_env, "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "node1", "MADINFRA_REPLICA_INDEX": str(replica)}
    endpoints = tmp_path / "work" / "endpoints"  # run_role's MADINFRA_WORKDIR
    endpoints.mkdir(parents=True, exist_ok=True)
    for pool, text in files.items():
        (endpoints / pool).write_text(text)
    proc, shown, _ = run_role(p.role(role), "unused", env, command=SHOW_IPS)
    assert proc.returncode == 0, proc.stderr
    return shown[0].split(","), int(shown[1])


def test_slurm_proxy_sees_every_node_of_the_stack_as_ips_in_global_rank_order(plan, run_role, tmp_path):
    files = {
        "prefill": "http://10.0.0.11:30000\nhttp://localhost:30000\n",
        "decode": "http://10.0.0.21:30000\nhttp://10.0.0.22:30000\nhttp://10.0.0.23:30000\n",
    }
    ips, rank = _node_ips(plan, run_role, tmp_path, "proxy", 0, files)
    assert ips == ["10.0.0.1", "10.0.0.11", "127.0.0.1", "10.0.0.21", "10.0.0.22", "10.0.0.23"]
    assert rank == 0


def test_slurm_replica_finds_itself_at_its_global_rank_and_peers_at_theirs(plan, run_role, tmp_path):
    files = {
        "prefill": "http://10.0.0.11:30000\nhttp://10.0.0.12:30000\n",
        # decode-1 is being replaced: the file lists replicas 0 and 2 only (.source says which).
        "decode": "http://10.0.0.21:30000\nhttp://10.0.0.23:30000\n",
        "decode.source": "replica.0=101\nreplica.2=103\nreplica_jobs=sha256:x\n",
    }
    ips, rank = _node_ips(plan, run_role, tmp_path, "decode", 1, files)
    # proxy (no file: empty), prefill from its file, decode from its file with this replica's
    # own address at index 1: global rank 1 + 2 + 1 = 4.
    assert ips == ["", "10.0.0.11", "10.0.0.12", "10.0.0.21", "10.0.0.1", "10.0.0.23"]
    assert rank == 4 and ips[rank] == "10.0.0.1"


def test_slurm_replica_replaces_a_stale_own_entry_with_its_own_address(plan, run_role, tmp_path):
    files = {"decode": "http://10.0.0.21:30000\nhttp://10.0.0.99:30000\n", "decode.source": "replica.0=101\nreplica.1=102\n"}
    ips, rank = _node_ips(plan, run_role, tmp_path, "decode", 1, files)
    assert ips[3:] == ["10.0.0.21", "10.0.0.1", ""] and rank == 4


def test_slurm_first_pool_of_a_first_apply_keeps_every_position(plan, run_role, tmp_path):
    ips, rank = _node_ips(plan, run_role, tmp_path, "prefill", 0, {})
    assert ips == ["", "10.0.0.1", "", "", "", ""]
    assert rank == 1 and ips[rank] == "10.0.0.1"


def test_slurm_proxy_acknowledges_the_lists_it_runs_with(plan, tmp_path):
    """Every mini_lb start writes the checksum of the endpoint files (and their .source
    sidecars) it started with to endpoints/.proxy-seen, the same checksum apply computes."""
    import os
    import signal
    import subprocess
    import time

    from madinfra.launchers.sglang_disagg import watched_files

    proxy = plan("slurm", "sglang-disagg", 4, 8, port=23456).role("proxy")
    work = tmp_path / "work"
    endpoints = work / "endpoints"
    endpoints.mkdir(parents=True)
    (endpoints / "prefill").write_text("http://a:30000\n")
    (endpoints / "decode").write_text("http://b:30000\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text("#!/bin/bash\nexec sleep 60\n")
    (bin_dir / "python3").chmod(0o755)
    script = tmp_path / "proxy.sh"
    script.write_text(proxy.command)

    def checksum() -> str:
        names = " ".join(watched_files())
        return subprocess.run(f"{{ cat {names} 2>/dev/null || true; }} | cksum", shell=True, cwd=endpoints, capture_output=True, text=True).stdout.strip()

    def wait_ack(expected: str) -> str:
        deadline = time.monotonic() + 15
        seen = ""
        while time.monotonic() < deadline:
            seen = (endpoints / ".proxy-seen").read_text().strip() if (endpoints / ".proxy-seen").exists() else ""
            if seen == expected:
                break
            time.sleep(0.2)
        return seen

    proc = subprocess.Popen(["bash", str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin", "MADINFRA_WORKDIR": str(work)}, start_new_session=True)
    try:
        assert wait_ack(checksum()) == checksum()
        (endpoints / "decode.source").write_text("replica.0=7\n")
        assert wait_ack(checksum()) == checksum(), "a new .source alone is a new list to acknowledge"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
