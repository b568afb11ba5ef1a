"""``madinfra refresh`` on the Kubernetes sandbox, through the real CLI with the real Pulumi engine
(issue 14, part 6): a change made with kubectl and a lost state file are recorded into state, and
the cluster is not touched."""

from __future__ import annotations

import json

import pytest
from k8s_sandbox import K8sStack

pytestmark = pytest.mark.k8s_e2e


def vllm(replicas: int = 2) -> dict:
    return {
        "model": {"image": "rocm/vllm:latest", "model_path": "/models/m"},
        "distributed": {"launcher": "vllm", "nnodes": replicas, "nproc_per_node": 1},
        "service": {"health_check": {"timeout": 120}},
        "k8s": {"namespace": "default", "gpu_count": 1, "cpu": "2", "memory": "4Gi", "cpu_limit": "4", "memory_limit": "8Gi", "ready_timeout": 120},
    }


def test_refresh_records_a_kubectl_scale_and_a_lost_state_without_touching_the_cluster(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write(vllm(replicas=2))
    stack.apply()
    deployment = stack.objects("Deployment")[0]
    name = deployment["metadata"]["name"]
    stack.sandbox.client("AppsV1Api").patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 3}}, field_manager="kubectl")
    assert "changed outside madinfra" in stack.plan().stdout

    shown = stack.cli("refresh", str(stack.path), "--yes").stdout
    assert f"  ~ k8s/Deployment/{name}: record drift (spec.replicas)" in shown, shown
    assert stack.objects("Deployment")[0]["spec"]["replicas"] == 3, "refresh changes nothing on the cluster"
    planned = stack.plan().stdout
    assert "changed outside" not in planned and "spec.replicas: 3 -> 2" in planned, planned

    stack.write(vllm(replicas=3))
    stack.assert_plan_empty()
    (stack.workdir / ".madinfra" / "state" / f"{stack.name}.json").unlink()
    data = json.loads(stack.cli("refresh", str(stack.path), "--json", "--yes").stdout)
    assert {u["action"] for u in data["updates"]} == {"adopt"} and data["recorded"] == len(data["updates"]) >= 2
    assert stack.cli("refresh", str(stack.path)).stdout.startswith("No changes. State matches the cluster.")
    stack.assert_plan_empty()
