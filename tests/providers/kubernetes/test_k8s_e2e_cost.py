"""The plan's GPU cost on the Kubernetes sandbox, through the real CLI (issue 14, part 2): a Job
has no time limit (no upper bound, said so), a serving stack is priced per day."""

from __future__ import annotations

import json

import pytest
from k8s_sandbox import K8sStack

pytestmark = pytest.mark.k8s_e2e


def test_a_training_job_is_unbounded_and_serving_is_priced_per_day(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write({
        "model": {"image": "rocm/pytorch:latest", "script": "train.py"},
        "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 2},
        "k8s": {"namespace": "default", "gpu_count": 2, "cpu": "2", "memory": "4Gi", "cpu_limit": "4", "memory_limit": "8Gi"},
        "cost": {"gpu_hour_price": 2.0, "currency": "EUR"},
    })
    planned = stack.plan().stdout
    assert "Cost: no upper bound on GPU-hours: k8s/Job/" in planned and "has no time limit" in planned, planned

    stack.write({
        "model": {"image": "rocm/vllm:latest", "model_path": "/models/m"},
        "distributed": {"launcher": "vllm", "nnodes": 2, "nproc_per_node": 1},
        "service": {"health_check": {"timeout": 120}},
        "k8s": {"namespace": "default", "gpu_count": 1, "cpu": "2", "memory": "4Gi", "cpu_limit": "4", "memory_limit": "8Gi"},
        "cost": {"gpu_hour_price": 2.0, "currency": "EUR"},
    })
    data = json.loads(stack.plan("--json").stdout)
    assert (data["cost"]["serving_gpus"], data["cost"]["per_day_gpu_hours"], data["cost"]["currency"]) == (2, 48, "EUR")
    assert "Cost: serving holds 2 GPU(s) = 48 GPU-hours per day ≈ 96.00 EUR" in stack.plan().stdout
