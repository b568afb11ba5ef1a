"""PVCs madinfra creates for results and data, and madengine's credential.json in every pod."""

from __future__ import annotations

import pytest

from madinfra.config import resolve
from madinfra.launchers import compile
from madinfra.resources import ProviderOptions
from madinfra_kubernetes import KubernetesProvider

pytestmark = pytest.mark.k8s


def desired(tmp_path, nnodes=1, **k8s):
    spec = resolve({"name": "demo", "k8s": {"gpu_count": 1, **k8s}, "distributed": {"launcher": "torchrun", "nnodes": nnodes}})
    return {r.id: r for r in KubernetesProvider(ProviderOptions(stack_dir=tmp_path)).desired(spec, compile(spec))}


def pod_spec(resources):
    return resources["k8s/Job/demo"].spec["spec"]["template"]["spec"]


def test_a_results_storage_class_creates_a_claim_mounted_at_results(tmp_path):
    single = desired(tmp_path, storage_class="fast", results_storage_size="50Gi")
    claim = single["k8s/PersistentVolumeClaim/demo-results"].spec["spec"]
    assert claim == {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "50Gi"}}}
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "demo-results"}} in pod_spec(single)["volumes"]
    assert "k8s/PersistentVolumeClaim/demo-results" in single["k8s/Job/demo"].depends_on
    multi = desired(tmp_path, nnodes=2, storage_class="fast", multi_node_results_storage_class="shared")
    assert multi["k8s/PersistentVolumeClaim/demo-results"].spec["spec"]["accessModes"] == ["ReadWriteMany"]
    assert multi["k8s/PersistentVolumeClaim/demo-results"].spec["spec"]["storageClassName"] == "shared"


def test_existing_claims_are_mounted_and_nothing_is_created_without_a_class(tmp_path):
    plain = desired(tmp_path)
    assert not any(rid.startswith("k8s/PersistentVolumeClaim/") for rid in plain)
    existing = desired(tmp_path, results_pvc="mine", data_storage_class="nfs")
    assert not any(rid.endswith("-results") and "PersistentVolumeClaim" in rid for rid in existing)
    assert existing["k8s/PersistentVolumeClaim/demo-data"].spec["spec"]["accessModes"] == ["ReadWriteMany"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod_spec(existing)["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"results": "mine", "data": "demo-data"}


def test_local_credentials_go_into_the_stack_secret_and_are_mounted(tmp_path):
    (tmp_path / "credential.json").write_text('{"registry": "s3cr3t"}')
    resources = desired(tmp_path)
    secret = resources["k8s/Secret/demo-secrets"]
    assert list(secret.spec["data"]) == ["credential.json"] and "s3cr3t" not in repr(secret.spec)
    mounts = pod_spec(resources)["containers"][0]["volumeMounts"]
    assert {"name": "credential", "mountPath": "/workspace/credential.json", "subPath": "credential.json", "readOnly": True} in mounts
    omitted = desired(tmp_path, secrets={"strategy": "omit"})
    assert "k8s/Secret/demo-secrets" not in omitted
    existing = desired(tmp_path, secrets={"strategy": "existing", "runtime_secret_name": "team-creds"})
    volume = next(v for v in pod_spec(existing)["volumes"] if v["name"] == "credential")
    assert volume["secret"]["secretName"] == "team-creds" and "k8s/Secret/demo-secrets" not in existing
