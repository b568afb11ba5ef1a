"""``madinfra logs`` on the K8s sandbox through the real CLI: the pod log API of a real
kube-apiserver, proxied to KWOK's kubelet-like server, which reads the file a KWOK ``Logs`` object
names for each pod (see scripts/k8s-sandbox). Each test writes those files in the kubelet's CRI
log format, so the lines and times below are exactly what the pods "wrote"; the CLI must show
them prefixed by the right role and rank, merged in time order, cut by --tail/--since, and (with
--follow) as they are appended, until the Job's pods are done.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from k8s_sandbox import K8sStack, KubeSandbox, prepare_cluster_for, wait_for
from tests_support import ROOT

pytestmark = pytest.mark.k8s_e2e

RUN_TIME = 20
"""Seconds a Job pod runs in the sandbox once Ready (MADINFRA_SANDBOX_POD_RUN_TIME, read by the
sandbox's pod-complete stage): long enough to follow it while it runs."""


def stamp(when: float) -> str:
    whole = int(when)
    return datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{round((when - whole) * 1e9):09d}Z"


def millis(when: float) -> str:
    return datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def cri_line(when: float, text: str) -> str:
    """One line as a container runtime writes it for the kubelet: ``<RFC3339Nano> stdout F <text>``."""
    return f"{stamp(when)} stdout F {text}\n"


def serve_logs(sandbox: KubeSandbox, pod: dict[str, Any], path: Path, lines: list[tuple[float, str]]) -> None:
    """Write the pod's log file and point KWOK at it (a Logs object named after the pod, for its
    one container only: a request for another container fails), then wait until the API serves it."""
    from kubernetes import client

    path.write_text("".join(cri_line(when, text) for when, text in lines))
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]["name"]
    body = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"logs": [{"containers": [container], "logsFile": str(path)}]},
    }
    client.CustomObjectsApi(sandbox.api).create_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", namespace, "logs", body)
    core = sandbox.client("CoreV1Api")
    wait_for(lambda: core.read_namespaced_pod_log(name, namespace, container=container).startswith(lines[0][1]), f"KWOK to serve {path.name} for pod {name}", timeout=20, interval=0.1)


def append(path: Path, when: float, text: str) -> None:
    with path.open("a") as handle:
        handle.write(cri_line(when, text))


def human(lines: list[tuple[str, float, str]]) -> list[str]:
    """What ``madinfra logs`` prints: ``role[rank] | text``, in time order."""
    return [f"{source} | {text}" for source, _, text in sorted(lines, key=lambda line: line[1])]


class Follow:
    """``madinfra logs --follow`` running in the background; a thread collects its lines as they
    come (a select() on the pipe would miss lines already in the reader's buffer)."""

    def __init__(self, stack: K8sStack, *args: str):
        env = {**stack.sandbox.env(), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from madinfra.cli import main; main()", "logs", str(stack.path), "--follow", *args],
            cwd=stack.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def read(self, count: int, timeout: float) -> list[str]:
        """The lines so far, once ``count`` have come (fails after ``timeout`` or at an early end)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            assert time.monotonic() < deadline, f"madinfra logs --follow showed {self.lines} in {timeout} s, not {count} lines"
            assert self.reader.is_alive() or len(self.lines) >= count, f"madinfra logs --follow ended (exit {self.proc.wait()}) after {self.lines}: {self.stderr()}"
            time.sleep(0.05)
        return list(self.lines)

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr is not None and self.proc.poll() is not None else ""

    def wait(self, timeout: float) -> tuple[int, str]:
        """Exit code and stderr, once it has ended by itself (fails after ``timeout``)."""
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code, self.stderr()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_two_node_job_shows_each_rank_in_time_order_then_follows_it_until_its_pods_are_done(k8s_stack: K8sStack, tmp_path: Path) -> None:
    stack = k8s_stack
    stack.write(
        {
            "gpu_vendor": "AMD",
            "env_vars": {"MADINFRA_SANDBOX_POD_RUN_TIME": f"{RUN_TIME}s"},
            "model": {"image": "rocm/pytorch:latest", "script": "train.py"},
            "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 2},
            "k8s": {"namespace": "default", "gpu_count": 2, "cpu": "4", "memory": "8Gi", "ready_timeout": 60},
        }
    )
    stack.apply()
    running = wait_for(lambda: [p for p in stack.objects("Pod") if (p.get("status") or {}).get("phase") == "Running"] if len(stack.objects("Pod")) == 2 else None, "both pods running")
    assert len(running) == 2
    by_index = {int(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]): p for p in running}
    # Whole-second base, lines of the two ranks interleaved to the millisecond: reading the pods
    # one after the other, or swapping their ranks, gives another order or other prefixes.
    base = float(int(time.time()) - 30)
    written = {
        0: [(base + 0.100, "rank0 epoch 0 step 10 loss 2.31"), (base + 1.300, "rank0 epoch 0 step 20 loss 1.87"), (base + 2.500, "rank0 epoch 1 step 10 loss 1.52")],
        1: [(base + 0.700, "rank1 epoch 0 step 10 loss 2.29"), (base + 1.900, "rank1 epoch 0 step 20 loss 1.90"), (base + 2.200, "rank1 epoch 1 step 10 loss 1.49")],
    }
    files = {rank: tmp_path / f"worker-{rank}.log" for rank in written}
    for rank, pod in by_index.items():
        serve_logs(stack.sandbox, pod, files[rank], written[rank])
    every = [(f"worker[{rank}]", when, text) for rank, lines in written.items() for when, text in lines]

    follow = Follow(stack)
    try:
        assert follow.read(6, timeout=15) == human(every), "the backlog: both ranks, merged in time order"
        now = time.time()
        append(files[1], now, "rank1 epoch 2 step 10 loss 1.20")
        append(files[0], now + 0.001, "rank0 epoch 2 step 10 loss 1.18")
        appended = ["worker[1] | rank1 epoch 2 step 10 loss 1.20", "worker[0] | rank0 epoch 2 step 10 loss 1.18"]
        # Live lines of different pods come in the order they arrive (like kubectl logs -f).
        assert sorted(follow.read(8, timeout=10)[6:]) == sorted(appended), "appended lines, as they come"
        assert follow.proc.poll() is None, "following goes on while the Job's pods run"
        every += [("worker[1]", now, "rank1 epoch 2 step 10 loss 1.20"), ("worker[0]", now + 0.001, "rank0 epoch 2 step 10 loss 1.18")]

        # While the Job runs on, the other ways to ask (each a fresh CLI process).
        assert stack.cli("logs", str(stack.path)).stdout.splitlines() == human(every)
        assert stack.cli("logs", str(stack.path), "worker", "--rank", "1").stdout.splitlines() == human([line for line in every if line[0] == "worker[1]"])
        assert stack.cli("logs", str(stack.path), "--tail", "1").stdout.splitlines() == appended
        # The API takes whole seconds (base+1); rank 0's line at base+1.3 must still be cut.
        since = millis(base + 1.5)
        assert stack.cli("logs", str(stack.path), "--since", since).stdout.splitlines() == human([line for line in every if line[1] >= base + 1.5])
        objects = [json.loads(line) for line in stack.cli("logs", str(stack.path), "--json", "--rank", "0").stdout.splitlines()]
        assert [(o["role"], o["rank"], o["text"], o["timestamp"], o["stream"]) for o in objects[:3]] == [("worker", 0, text, millis(when), "stdout") for when, text in written[0]]
        assert len(objects) == 4 and objects[0]["time"] == pytest.approx(written[0][0][0], abs=1e-6)

        code, err = follow.wait(timeout=RUN_TIME + 20)
        assert code == 0, err
    finally:
        follow.stop()
    assert sorted(follow.lines[6:]) == sorted(appended), "nothing shown twice after the follow requests ended"
    pods = stack.objects("Pod")
    assert [p["status"]["phase"] for p in pods] == ["Succeeded", "Succeeded"], "it returned once the pods were done"
    assert stack.cli("logs", str(stack.path), "--tail", "1").stdout.splitlines() == appended, "a finished Job's pods are still read"


DISAGG = ROOT / "stacks" / "k8s" / "sglang-disagg.yaml"


def test_disaggregated_pools_rank_by_ordinal_and_the_proxy_replica_and_follow_a_server_until_ctrl_c(k8s_stack: K8sStack, tmp_path: Path) -> None:
    stack = k8s_stack
    stack.write_from(DISAGG)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    pods = wait_for(lambda: [p for p in stack.objects("Pod") if (p.get("status") or {}).get("phase") == "Running"] if len(stack.objects("Pod")) == 5 else None, "the five pods running")
    role_of = {p["metadata"]["name"]: p["metadata"]["labels"]["madinfra.io/role"] for p in pods}
    assert sorted(role_of.values()) == ["decode", "decode", "decode", "prefill", "proxy"]
    base = float(int(time.time()) - 20)
    written: dict[str, list[tuple[float, str]]] = {}
    expected: list[tuple[str, float, str]] = []
    for offset, pod in enumerate(sorted(pods, key=lambda p: p["metadata"]["name"])):
        name = pod["metadata"]["name"]
        role = role_of[name]
        rank = int(name.rsplit("-", 1)[1]) if role != "proxy" else 0
        lines = [(base + 0.1 * offset + 0.05, f"{name} loading weights"), (base + 1 + 0.1 * (4 - offset), f"{name} ready on port 30000")]
        written[name] = lines
        expected += [(f"{role}[{rank}]", when, text) for when, text in lines]
        serve_logs(stack.sandbox, pod, tmp_path / f"{name}.log", lines)

    assert stack.cli("logs", str(stack.path)).stdout.splitlines() == human(expected)
    decode2 = f"{stack.name}-decode-2"
    assert stack.cli("logs", str(stack.path), "decode", "--rank", "2").stdout.splitlines() == [f"decode[2] | {text}" for _, text in written[decode2]]
    proxy = stack.cli("logs", str(stack.path), "proxy").stdout.splitlines()
    assert proxy == human([line for line in expected if line[0] == "proxy[0]"])

    follow = Follow(stack, "decode", "--rank", "1", "--tail", "1")
    try:
        decode1 = f"{stack.name}-decode-1"
        assert follow.read(1, timeout=15) == [f"decode[1] | {decode1} ready on port 30000"]
        append(tmp_path / f"{decode1}.log", time.time(), f"{decode1} served 128 requests")
        assert follow.read(2, timeout=10)[1] == f"decode[1] | {decode1} served 128 requests"
        time.sleep(2)
        assert follow.proc.poll() is None, "a server is followed until Ctrl-C"
        follow.proc.send_signal(signal.SIGINT)
        code, err = follow.wait(timeout=10)
        assert code == 130 and "Traceback" not in err, (code, err)
    finally:
        follow.stop()
    assert follow.lines == [f"decode[1] | {decode1} ready on port 30000", f"decode[1] | {decode1} served 128 requests"], "only decode[1], from its last line on"
