"""Training on the K8s sandbox through the real CLI: an Indexed Job and its headless Service on a
real kube-apiserver, applied by a real Pulumi engine, pods run by KWOK on fake GPU nodes."""

from __future__ import annotations

import pytest
from k8s_sandbox import K8sStack, wait_for

pytestmark = pytest.mark.k8s_e2e


def torchrun_stack(nodes: int = 2, gpus: int = 2, **k8s) -> dict:
    return {
        "gpu_vendor": "AMD",
        "model": {"image": "rocm/pytorch:latest", "script": "train.py"},
        "distributed": {"launcher": "torchrun", "nnodes": nodes, "nproc_per_node": gpus},
        "k8s": {"namespace": "default", "gpu_count": gpus, "cpu": "4", "memory": "8Gi", "cpu_limit": "8", "memory_limit": "16Gi", "ready_timeout": 120, **k8s},
    }


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", []) if "valueFrom" not in e}


def test_two_node_torchrun_job_runs_completes_and_is_destroyed(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write(torchrun_stack())
    planned = stack.plan()
    assert "+ k8s/Job/" in planned.stdout and "+ k8s/Service/" in planned.stdout
    assert "Plan: 2 to add, 0 to change, 0 to replace, 0 to destroy." in planned.stdout, planned.stdout

    applied = stack.apply()
    assert "Apply complete! Resources: 2 added, 0 changed, 0 replaced, 0 destroyed." in applied.stdout, applied.stdout

    job = stack.objects("Job")[0]
    job_name = job["metadata"]["name"]
    service = stack.objects("Service")[0]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2 and job["spec"]["parallelism"] == 2
    assert service["spec"]["clusterIP"] == "None"

    pods = wait_for(lambda: [p for p in stack.objects("Pod") if p["spec"].get("nodeName")] if len(stack.objects("Pod")) == 2 else None, "both pods scheduled")
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in pods}
    assert sorted(by_index) == ["0", "1"]
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert all(n.startswith("kwok-amd-") for n in nodes), nodes
    for index, pod in by_index.items():
        env = env_of(pod)
        assert pod["spec"]["hostname"] == f"{job_name}-{index}"
        assert pod["spec"]["subdomain"] == service["metadata"]["name"]
        assert env["MASTER_ADDR"] == f"{job_name}-0.{service['metadata']['name']}.default.svc.cluster.local"
        assert env["NNODES"] == "2" and env["MASTER_PORT"] == "29500"
        assert pod["spec"]["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "2"
        assert "JOB_COMPLETION_INDEX" in pod["spec"]["containers"][0]["command"][2]

    # MASTER_ADDR resolves the way cluster DNS resolves it: a headless Service's EndpointSlice
    # lists pod 0 under its hostname, which is what <hostname>.<subdomain>.<ns>.svc answers with.
    def pod0_endpoint():
        slices = stack.sandbox.list("EndpointSlice", "default", f"kubernetes.io/service-name={service['metadata']['name']}")
        return [e for s in slices for e in s.get("endpoints") or [] if e.get("hostname") == f"{job_name}-0"]

    endpoint = wait_for(pod0_endpoint, "pod 0 in the headless Service's EndpointSlice")[0]
    assert endpoint["addresses"] == [by_index["0"]["status"]["podIP"]]

    wait_for(lambda: any(c["type"] == "Complete" and c["status"] == "True" for c in (stack.objects("Job")[0].get("status") or {}).get("conditions") or []), "the Job to complete")
    stack.assert_plan_empty()

    destroyed = stack.cli("destroy", str(stack.path), "--yes")
    assert "Destroy complete! Resources: 2 destroyed." in destroyed.stdout, destroyed.stdout
    assert stack.sandbox.stack_objects(stack.name) == []
