"""Settings that used to be accepted and ignored on Kubernetes, now carried out on a real cluster:
PVCs from storage classes, madengine's credential.json, secret values, the health-check timeout."""

from __future__ import annotations

import base64
import json

import pytest
from k8s_sandbox import K8sStack, wait_for

pytestmark = pytest.mark.k8s_e2e


def training(**k8s) -> dict:
    return {
        "model": {"image": "rocm/pytorch:latest", "script": "train.py"},
        "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
        "k8s": {"namespace": "default", "gpu_count": 1, "cpu": "2", "memory": "4Gi", "cpu_limit": "4", "memory_limit": "8Gi", "ready_timeout": 120, **k8s},
    }


def test_a_results_storage_class_gives_a_bound_claim_mounted_in_every_pod(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    spec = training(storage_class="kwok-volume", results_storage_size="20Gi", output_dir="./debug/manifests")
    spec["debug"] = True  # madengine's "dump the YAML": what apply sends, in k8s.output_dir
    stack.write(spec)
    stack.apply()
    claim = stack.objects("PersistentVolumeClaim")[0]
    dumped = "".join(p.read_text() for p in sorted((stack.workdir / "debug" / "manifests").iterdir()))
    assert "kind: PersistentVolumeClaim" in dumped and f"name: {claim['metadata']['name']}" in dumped
    assert f"name: {stack.objects('Job')[0]['metadata']['name']}" in dumped
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    wait_for(lambda: (stack.sandbox.get("PersistentVolumeClaim", "default", claim["metadata"]["name"]) or {}).get("status", {}).get("phase") == "Bound", "the claim to bind")
    for pod in stack.objects("Pod"):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["results"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    stack.assert_plan_empty()
    stack.cli("destroy", str(stack.path), "--yes")
    wait_for(lambda: stack.objects("PersistentVolumeClaim") == [], "the claim to be deleted with the stack")


def test_credential_json_and_secret_env_reach_the_pods_and_a_rotation_is_a_change(k8s_stack: K8sStack, monkeypatch) -> None:
    stack = k8s_stack
    (stack.workdir / "credential.json").write_text('{"dockerhub": {"password": "pa55"}}')
    spec = training()
    spec["secret_env"] = {"HF_TOKEN": {"from_env": "E2E_HF_TOKEN"}}
    stack.write(spec)
    env = {"E2E_HF_TOKEN": "hf_first"}
    applied = stack.cli("apply", str(stack.path), "--yes", env=env)
    assert "hf_first" not in applied.stdout + applied.stderr and "pa55" not in applied.stdout
    secret = next(s for s in stack.objects("Secret") if s["metadata"]["name"].endswith("-secrets"))
    assert base64.b64decode(secret["data"]["HF_TOKEN"]).decode() == "hf_first"
    assert json.loads(base64.b64decode(secret["data"]["credential.json"])) == {"dockerhub": {"password": "pa55"}}
    container = stack.objects("Job")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "credential", "mountPath": "/workspace/credential.json", "subPath": "credential.json", "readOnly": True} in container["volumeMounts"]
    state = (stack.workdir / ".madinfra" / "state" / f"{stack.name}.json").read_text()
    pulumi_state = "".join(p.read_text() for p in (stack.workdir / ".madinfra" / "pulumi").rglob("*.json"))
    assert "hf_first" not in state and "pa55" not in state and "hf_first" not in pulumi_state
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False, env=env).returncode == 0
    rotated = stack.cli("plan", str(stack.path), check=False, env={"E2E_HF_TOKEN": "hf_second"})
    assert "~ k8s/Secret/" in rotated.stdout and "hf_second" not in rotated.stdout, rotated.stdout


def test_a_server_that_never_gets_healthy_stops_apply_after_the_health_check_timeout(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write({
        "model": {"image": "rocm/vllm:latest", "model_path": "/models/m"},
        "distributed": {"launcher": "vllm", "nnodes": 1, "nproc_per_node": 1},
        "service": {"health_check": {"timeout": 8}},
        "k8s": {"namespace": "default", "gpu_count": 1, "cpu": "2", "memory": "4Gi", "node_selector": {"no-such-label": "x"}},
    })
    failed = stack.cli("apply", str(stack.path), "--yes", check=False)
    assert failed.returncode == 1
    assert "was not ready after 8 s (service.health_check.timeout)" in failed.stderr and "not scheduled" in failed.stderr, failed.stderr
    replanned = stack.plan()
    assert "No changes" in replanned.stdout and "the last apply failed (k8s/Deployment/" in replanned.stdout, replanned.stdout
