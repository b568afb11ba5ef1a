"""``roles.<role>.ignore_changes`` on the Kubernetes sandbox with the real Pulumi engine (issue 14,
part 4): an autoscaler owns a vLLM Deployment's replicas; the stack creates them and leaves them."""

from __future__ import annotations

import pytest
from k8s_sandbox import K8sStack

pytestmark = pytest.mark.k8s_e2e


def vllm(replicas: int = 2, *, ignore: bool = True, env: str = "1") -> dict:
    return {
        "model": {"image": "rocm/vllm:latest", "model_path": "/models/m"},
        "distributed": {"launcher": "vllm", "nnodes": replicas, "nproc_per_node": 1},
        "service": {"health_check": {"timeout": 120}},
        "env_vars": {"STACK_REVISION": env},
        "roles": {"server": {"ignore_changes": ["spec.replicas"]}} if ignore else {},
        "k8s": {"namespace": "default", "gpu_count": 1, "cpu": "2", "memory": "4Gi", "cpu_limit": "4", "memory_limit": "8Gi", "ready_timeout": 120},
    }


def test_an_autoscalers_replicas_are_kept_through_an_image_change(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write(vllm())
    stack.apply()
    name = stack.objects("Deployment")[0]["metadata"]["name"]
    stack.sandbox.client("AppsV1Api").patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 3}}, field_manager="hpa")
    planned = stack.plan("--detailed-exitcode", check=False)
    assert planned.returncode == 0, planned.stdout
    assert f"k8s/Deployment/{name} spec.replicas: the live value 3 is kept, not the stack's 2" in planned.stdout

    stack.write(vllm(env="2"))
    planned = stack.plan().stdout
    assert "~ spec.replicas" not in planned and "GPUs: 3 -> 3" in planned, planned
    stack.apply()
    assert stack.objects("Deployment")[0]["spec"]["replicas"] == 3, "apply never resets the autoscaler's value"
    stack.assert_plan_empty()
