"""Pool rollouts of disaggregated SGLang on the K8s sandbox, through the real CLI.

While apply runs, a thread polls the stack's pods (one list per poll, so every poll is one
consistent snapshot) and checks what the proxy promises: every proxy pod that exists (terminating
ones too, they still route) names in its mini_lb command only prefill/decode pods that exist, are
not terminating and are Ready. It also keeps the fewest Ready pods each pool had.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
from k8s_sandbox import K8sStack, prepare_cluster_for
from reserved_nodes import reserved_nodes

from tests_support import ROOT

pytestmark = pytest.mark.k8s_e2e

SANDBOX_DISAGG = ROOT / "stacks" / "sandbox" / "k8s-sglang-disagg.yaml"
URL = re.compile(r"http://([a-z0-9-]+-(?:prefill|decode)-\d+)\.")


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _role(pod: dict[str, Any]) -> str:
    return pod["metadata"]["labels"].get("madinfra.io/role", "")


class Watch:
    """Polls the stack's pods from a thread while apply runs (see the module docstring)."""

    def __init__(self, stack: K8sStack, interval: float = 0.2, pools: tuple[str, ...] = ("prefill", "decode")):
        self.stack, self.interval, self.pools = stack, interval, pools
        self.violations: list[str] = []
        self.fewest_ready: dict[str, int] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            pods = self.stack.objects("Pod")
            self.polls += 1
            by_name = {p["metadata"]["name"]: p for p in pods}
            for pool in self.pools:
                ready = sum(1 for p in pods if _role(p) == pool and _ready(p))
                self.fewest_ready[pool] = min(self.fewest_ready.get(pool, ready), ready)
            for proxy in (p for p in pods if _role(p) == "proxy"):
                command = " ".join(w for c in proxy["spec"]["containers"] for w in (c.get("command") or []) + (c.get("args") or []))
                for name in URL.findall(command):
                    target = by_name.get(name)
                    if target is None or not _ready(target):
                        state = "absent" if target is None else "not ready"
                        self.violations.append(f"proxy pod {proxy['metadata']['name']} names {name}, which is {state}")
            time.sleep(self.interval)


def pool_uids(stack: K8sStack, role: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in stack.objects("Pod") if _role(p) == role and not p["metadata"].get("deletionTimestamp")}


def images(stack: K8sStack) -> dict[str, str]:
    return {_role(p): p["spec"]["containers"][0]["image"] for p in stack.objects("Pod") if not p["metadata"].get("deletionTimestamp")}


def with_nnodes(spec: dict[str, Any], nnodes: int) -> dict[str, Any]:
    return {**spec, "distributed": {**spec["distributed"], "nnodes": nnodes}}


def with_image(spec: dict[str, Any], image: str, **k8s: Any) -> dict[str, Any]:
    return {**spec, "model": {**spec["model"], "image": image}, "k8s": {**spec["k8s"], **k8s}}


def pool_lines(stack: K8sStack) -> tuple[list[str], dict[str, Any]]:
    """The human plan's lines under ``Pools:`` and the ``--json`` plan."""
    human = stack.plan().stdout.splitlines()
    start = human.index("Pools:") + 1
    lines = []
    for line in human[start:]:
        if not line.strip():
            break
        lines.append(line.strip())
    return lines, json.loads(stack.plan("--json").stdout)


def test_decode_resize_keeps_untouched_pods_and_the_proxy_never_names_a_missing_pod(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write_from(SANDBOX_DISAGG)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    decode = pool_uids(stack, "decode")
    prefill = pool_uids(stack, "prefill")
    proxy = pool_uids(stack, "proxy")
    assert (len(prefill), len(decode), len(proxy)) == (1, 3, 1)
    topology = next(c for c in stack.objects("ConfigMap") if c["metadata"]["name"].endswith("-topology"))
    statefulsets = {s["metadata"]["name"]: s["metadata"]["uid"] for s in stack.objects("StatefulSet")}

    stack.write(with_nnodes(stack.spec, 4))
    lines, planned = pool_lines(stack)
    assert lines == ["~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)"]
    (pool,) = planned["rollouts"]
    assert (pool["pool"], pool["removed"], pool["untouched"], pool["rolled"]) == ("decode", [2], [0, 1], [])
    actions = {c["address"]: c["action"] for c in planned["changes"]}
    assert set(actions.values()) == {"update"} and not any(a.endswith("-prefill") for a in actions), actions
    assert actions[f"k8s/ConfigMap/{topology['metadata']['name']}"] == "update"
    (decode_change,) = [c for c in planned["changes"] if c["address"].startswith("k8s/StatefulSet/") and c["address"].endswith("-decode")]
    assert [f["path"] for f in decode_change["fields"]] == ["spec.replicas"]
    with Watch(stack) as shrinking:
        stack.apply()
    stack.assert_plan_empty()
    kept = {n: u for n, u in decode.items() if not n.endswith("-2")}
    assert pool_uids(stack, "decode") == kept and pool_uids(stack, "prefill") == prefill
    assert shrinking.polls > 5 and shrinking.violations == [], shrinking.violations[:5]
    proxy_planned = any(a.startswith("k8s/Deployment/") for a in actions)
    assert (pool_uids(stack, "proxy") != proxy) == proxy_planned, "the proxy restarts exactly when the plan says it changes"
    after = stack.sandbox.get("ConfigMap", stack.namespace, topology["metadata"]["name"])
    assert after["metadata"]["uid"] == topology["metadata"]["uid"] and after["data"] != topology["data"], "the topology ConfigMap is updated in place"
    assert {s["metadata"]["name"]: s["metadata"]["uid"] for s in stack.objects("StatefulSet")} == statefulsets

    stack.write(with_nnodes(stack.spec, 5))
    lines, _ = pool_lines(stack)
    assert lines == ["~ decode: 2 -> 3 replicas (replica 2 added; replicas 0-1 untouched)"]
    with Watch(stack) as growing:
        stack.apply()
    stack.assert_plan_empty()
    grown = pool_uids(stack, "decode")
    assert len(grown) == 3 and {n: grown[n] for n in kept} == kept and pool_uids(stack, "prefill") == prefill
    assert growing.polls > 5 and growing.violations == [], growing.violations[:5]


def test_a_rolling_image_change_surges_where_the_cluster_has_room(k8s_stack: K8sStack) -> None:
    """8 AMD nodes, 32 of 64 GPUs used by the stack: each pool gets a surge replica, so no pool
    ever has fewer ready replicas than it had, and the proxy names only ready pods."""
    stack = k8s_stack
    stack.write_from(SANDBOX_DISAGG)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    stack.write(with_image(stack.spec, "rocm/sgl-dev:v2"))
    lines, planned = pool_lines(stack)
    assert lines == ["-/+ prefill[0] rolling, surge 1", "-/+ decode[0..2] rolling, surge 1"], lines
    assert planned["gpus"]["peak"] == 40 and planned["gpus"]["free"] >= 8, planned["gpus"]
    assert [(p["pool"], p["surge"], p["rolled"]) for p in planned["rollouts"]] == [("prefill", 1, [0]), ("decode", 1, [0, 1, 2])]
    assert not any("no ready replica" in w for w in planned["warnings"]), planned["warnings"]
    with Watch(stack) as rolling:
        applied = stack.apply()
    stack.assert_plan_empty()
    assert "surge 1) ready" in applied.stdout and "removing surge replica 3" in applied.stdout, applied.stdout
    assert set(images(stack).values()) == {"rocm/sgl-dev:v2"}
    assert len(pool_uids(stack, "decode")) == 3 and len(pool_uids(stack, "prefill")) == 1
    assert rolling.fewest_ready == {"prefill": 1, "decode": 3}, rolling.fewest_ready
    assert rolling.violations == [], rolling.violations[:5]
    sts = {s["metadata"]["name"]: s["spec"]["updateStrategy"]["rollingUpdate"]["partition"] for s in stack.objects("StatefulSet")}
    assert set(sts.values()) == {0}, f"the partition is released after the rollout: {sts}"


def test_without_room_a_rolling_change_goes_one_replica_at_a_time(k8s_stack: K8sStack) -> None:
    """On 4 NVIDIA nodes of its own the stack's 4 pool pods take all 32 GPUs: no surge, decode rolls
    one replica at a time (never fewer than 2 ready), and the plan says why and warns for the
    one-replica prefill pool."""
    with reserved_nodes(k8s_stack.sandbox, 4) as nvidia:
        rolls_one_at_a_time(k8s_stack, nvidia)


def rolls_one_at_a_time(stack: K8sStack, nvidia: dict[str, Any]) -> None:
    stack.write_from(SANDBOX_DISAGG)
    stack.write({**stack.spec, "k8s": {**stack.spec["k8s"], **nvidia}})
    stack.apply()
    stack.write(with_image(stack.spec, "rocm/sgl-dev:v2"))
    lines, planned = pool_lines(stack)
    reason = "(0 GPU(s) free, no node has 8 free for a surge replica)"
    assert lines == [f"-/+ prefill[0] rolling, 1 at a time, no surge {reason}", f"-/+ decode[0..2] rolling, 1 at a time, no surge {reason}"], lines
    assert planned["gpus"] == {**planned["gpus"], "peak": 32, "free": 0}
    assert any(w.startswith("prefill: rolling its only replica without a surge") for w in planned["warnings"]), planned["warnings"]
    decode = pool_uids(stack, "decode")
    with Watch(stack) as rolling:
        applied = stack.apply()
    stack.assert_plan_empty()
    assert set(images(stack).values()) == {"rocm/sgl-dev:v2"}
    rolled = [line.split("rolling ")[-1] for line in applied.stdout.splitlines() if "-decode: rolling replica" in line]
    assert rolled == ["replica 2", "replica 1", "replica 0"] and "(surge" not in applied.stdout and "removing surge" not in applied.stdout, applied.stdout
    assert set(pool_uids(stack, "decode").values()).isdisjoint(decode.values()), "every decode replica was replaced"
    assert rolling.fewest_ready["decode"] >= 2, f"one decode replica at a time: {rolling.fewest_ready}"


def test_a_failed_rollout_is_rolled_back_and_the_old_replicas_keep_serving(k8s_stack: K8sStack) -> None:
    """New pods that cannot start (a CPU request no node has; the GPU room allows a surge) fail
    the health-check timeout: the surge pod goes, the old pods never stopped, Pulumi's state and
    the cluster agree, and the next plan proposes the change again."""
    stack = k8s_stack
    stack.write_from(SANDBOX_DISAGG, ready_timeout=8)
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    good = stack.spec
    before = {role: pool_uids(stack, role) for role in ("prefill", "decode", "proxy")}
    stack.write(with_image(good, "rocm/sgl-dev:v2", cpu="1000", cpu_limit="1000"))
    with Watch(stack) as failing:
        failed = stack.cli("apply", str(stack.path), "--yes", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1 and "-prefill was not ready after 8 s" in output and "rolled back" in output, output
    assert "Traceback" not in output
    assert {role: pool_uids(stack, role) for role in ("prefill", "decode", "proxy")} == before, "the old pods kept running"
    assert set(images(stack).values()) == {"rocm/sgl-dev:latest"}
    assert failing.fewest_ready == {"prefill": 1, "decode": 3} and failing.violations == [], (failing.fewest_ready, failing.violations[:5])
    replanned = stack.plan("--detailed-exitcode", check=False)
    assert replanned.returncode == 2 and "-prefill will be updated in-place" in replanned.stdout, replanned.stdout
    stack.write(good)
    stack.assert_plan_empty()
    stack.apply()  # Pulumi's state agrees with the cluster: nothing to do, no step mismatch
    stack.assert_plan_empty()


def test_a_vllm_pool_deployment_rolls_with_the_planned_surge_and_keeps_its_own_strategy(k8s_stack: K8sStack) -> None:
    """Multi-node vLLM on K8s is a Deployment of independent replicas: the planned update carries
    the plan's maxSurge/maxUnavailable, the stack's own strategy is back afterwards, the plan is
    empty and Pulumi's steps were the planned ones."""
    stack = k8s_stack
    stack.write_from(ROOT / "stacks" / "k8s" / "vllm-multi-node.yaml")
    prepare_cluster_for(stack.sandbox, stack.path)
    stack.apply()
    (deployment,) = stack.objects("Deployment")
    strategy = deployment["spec"]["strategy"]
    stack.write(with_image(stack.spec, "rocm/vllm:v2"))
    lines, planned = pool_lines(stack)
    assert lines == ["-/+ server[0..1] rolling, surge 1"], lines
    assert planned["gpus"]["peak"] == 24
    with Watch(stack, pools=("server",)) as rolling:
        applied = stack.apply()
    assert "rolling with maxSurge 1, maxUnavailable 0" in applied.stdout, applied.stdout
    stack.assert_plan_empty()
    (deployment,) = stack.objects("Deployment")
    assert deployment["spec"]["strategy"] == strategy
    running = [p for p in stack.objects("Pod") if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 2 and {p["spec"]["containers"][0]["image"] for p in running} == {"rocm/vllm:v2"}
    assert rolling.fewest_ready == {"server": 2}, "with a surge pod, both old replicas serve until their replacements are ready"
