"""Desired Kubernetes objects per topology, from hand-built launch plans and from real stacks."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from k8s_support import build, launch_plan, role
from tests_support import kubelet_expand

from madinfra.config import resolve
from madinfra.errors import MadinfraError
from madinfra.launchers import compile
from madinfra.planner import diff_specs, normalise
from madinfra.resources import ProviderOptions, UpdateRules
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.manifests import desired_resources, endpoint_service_name
from madinfra_kubernetes.pod import escape_dollars, shell_script
from madinfra_kubernetes.rules import update_rules
from madinfra_kubernetes.scripts import CONFIGMAP_LIMIT

pytestmark = pytest.mark.k8s


def k8s_spec(name: str = "demo", **extra):
    raw = {"name": name, "k8s": {"namespace": "ml", **extra.pop("k8s", {})}, **extra}
    return resolve(raw)


def by_id(resources):
    return {r.id: r for r in resources}


def pod(resource):
    return resource.spec["spec"]["template"]["spec"]


def test_multi_node_training_is_indexed_job_with_headless_service_on_master_port():
    spec = k8s_spec(distributed={"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 2, "master_port": 31234}, k8s={"gpu_count": 2})
    plan = launch_plan("demo", (role(nodes=2, ports={"master": 31234}),), port=31234)
    res = by_id(desired_resources(spec, plan))
    assert set(res) == {"k8s/Job/demo", "k8s/Service/demo"}
    job = res["k8s/Job/demo"]
    assert job.spec["spec"]["completions"] == job.spec["spec"]["parallelism"] == 2
    assert job.spec["spec"]["completionMode"] == "Indexed"
    assert pod(job)["subdomain"] == "demo" and pod(job)["hostIPC"] is True
    assert pod(job)["restartPolicy"] == "Never" and pod(job)["terminationGracePeriodSeconds"] == 60
    svc = res["k8s/Service/demo"].spec["spec"]
    assert svc["clusterIP"] == "None" and svc["ports"] == [{"name": "master", "port": 31234}]
    assert svc["selector"] == {"madinfra.io/stack": "demo", "madinfra.io/role": "worker"}
    assert job.depends_on == ("k8s/Service/demo",)
    assert job.gpus == 4 and job.workload and job.role == "worker"


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed", "megatron", "torchtitan", "primus"])
def test_every_multi_node_training_launcher_sets_subdomain(launcher):
    spec = k8s_spec(distributed={"launcher": launcher, "nnodes": 3, "nproc_per_node": 1}, k8s={"gpu_count": 1})
    res = by_id(desired_resources(spec, compile(spec)))
    assert pod(res["k8s/Job/demo"])["subdomain"] == "demo"
    env = {e["name"]: e.get("value") for e in pod(res["k8s/Job/demo"])["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == "demo-0.demo.ml.svc.cluster.local"


def test_single_node_job_has_no_service_subdomain_or_host_ipc():
    spec = k8s_spec(distributed={"launcher": "torchrun", "nnodes": 1, "nproc_per_node": 2}, k8s={"gpu_count": 2})
    res = by_id(desired_resources(spec, launch_plan("demo", (role(),))))
    assert list(res) == ["k8s/Job/demo"]
    p = pod(res["k8s/Job/demo"])
    assert "subdomain" not in p and "hostIPC" not in p
    assert res["k8s/Job/demo"].spec["spec"]["completionMode"] == "NonIndexed"


def test_gpu_requests_equal_limits_and_zero_gpus_request_none():
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 2, "gpu_resource_name": "nvidia.com/gpu", "cpu": "4", "cpu_limit": "8"})
    container = pod(desired_resources(spec, launch_plan("demo", (role(gpus=2),)))[0])["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["cpu"] == "4" and container["resources"]["limits"]["cpu"] == "8"
    cpu_only = pod(desired_resources(spec, launch_plan("demo", (role(gpus=0),)))[0])["containers"][0]
    assert not any(k.endswith("/gpu") for part in cpu_only["resources"].values() for k in part)


def test_pod_settings_from_the_stack():
    spec = k8s_spec(
        distributed={"launcher": "torchrun"},
        k8s={
            "gpu_count": 1,
            "node_selector": {"gpu": "mi300x"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "shm_size": "32Gi",
            "image_pull_policy": "IfNotPresent",
            "data_pvc": "datasets",
            "service_account": "trainer",
            "secrets": {"image_pull_secret_names": ["regcred"]},
        },
        model={"image": "registry.local/train:1"},
    )
    p = pod(desired_resources(spec, launch_plan("demo", (role(gpus=1),)))[0])
    c = p["containers"][0]
    assert c["image"] == "registry.local/train:1" and c["imagePullPolicy"] == "IfNotPresent"
    assert p["nodeSelector"] == {"gpu": "mi300x"}
    assert p["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    shm = next(v for v in p["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert p["serviceAccountName"] == "trainer" and p["imagePullSecrets"] == [{"name": "regcred"}]
    assert p["enableServiceLinks"] is False


@pytest.mark.parametrize("vendor, image", [("AMD", "rocm/pytorch:latest"), ("NVIDIA", "nvcr.io/nvidia/pytorch:24.05-py3")])
def test_vendor_default_image(vendor, image):
    spec = k8s_spec(gpu_vendor=vendor, distributed={"launcher": "torchrun"}, k8s={"gpu_count": 1})
    assert pod(desired_resources(spec, launch_plan("demo", (role(gpus=1),)))[0])["containers"][0]["image"] == image


def test_container_script_exports_runtime_env_in_order_then_unsets_then_runs():
    r = role(runtime_env=(("A", "${HOSTNAME##*-}"), ("B", "$(( 1 + ${A} ))")), unset_env=("X", "Y"), command="echo $A $B")
    script = shell_script(r, indexed_default=False)
    assert script.splitlines() == ['export A="${HOSTNAME##*-}"', 'export B="$(( 1 + ${A} ))"', "unset X Y", "echo $A $B"]
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 2})
    container = pod(desired_resources(spec, launch_plan("demo", (r,)))[0])["containers"][0]
    assert container["command"][:2] == ["bash", "-c"]
    assert container["command"][2] == escape_dollars(shell_script(r, indexed_default=True))
    assert container["workingDir"] == "/workspace"


@pytest.mark.parametrize("text", ["$(NNODES) $$ ${X:-$(hostname)} $((1+2))", "price: $5", "plain", "$"])
def test_dollar_escaping_survives_kubelet_expansion(text):
    assert kubelet_expand(escape_dollars(text), {"NNODES": "9"}) == text


def test_literal_env_goes_to_env_list_with_pod_facts():
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 2})
    r = role(env={"NNODES": "1", "WEIRD": "$(NNODES)"})
    env = pod(desired_resources(spec, launch_plan("demo", (r,)))[0])["containers"][0]["env"]
    named = {e["name"]: e for e in env}
    assert named["NNODES"]["value"] == "1" and named["WEIRD"]["value"] == "$$(NNODES)"
    assert named["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert named["MADINFRA_WORKDIR"]["value"] == "/workspace"
    assert named["MAD_K8S_JOB"] == {"name": "MAD_K8S_JOB", "value": "true"}  # madengine's flag, not a name
    assert named["MAD_K8S_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert [e["name"] for e in env][:2] == ["NNODES", "WEIRD"]


def test_multi_node_training_pod_script_gives_each_pod_its_index_and_gpu_architecture(tmp_path):
    """The container's real bash script (after kubelet's $$ unescaping) run as pod 2 of 3."""
    import subprocess

    spec = k8s_spec(distributed={"launcher": "primus", "nnodes": 3, "nproc_per_node": 1}, k8s={"gpu_count": 1})
    container = pod(by_id(desired_resources(spec, compile(spec)))["k8s/Job/demo"])["containers"][0]
    script = kubelet_expand(container["command"][2], {}).replace("bash run.sh", 'echo "$POD_INDEX $NODE_RANK $MAD_SYSTEM_GPU_ARCHITECTURE"')
    stub = tmp_path / "rocminfo"
    stub.write_text("#!/bin/bash\necho '  Name:   gfx942  '\n")
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "JOB_COMPLETION_INDEX": "2", "MADINFRA_WORKDIR": str(tmp_path)}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "2", "gfx942"]


def test_labels_on_every_object_and_template():
    spec = k8s_spec(model={"name": "Llama 3"}, distributed={"launcher": "vllm", "nnodes": 2, "nproc_per_node": 4}, k8s={"gpu_count": 4}, env_vars={"MODEL_PATH": "/m"})
    for r in desired_resources(spec, compile(spec)):
        labels = r.spec["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "madinfra" and labels["madinfra.io/stack"] == "demo"
        assert labels["model"] == "Llama-3"
        if r.workload:
            assert r.spec["spec"]["template"]["metadata"]["labels"] == labels
            assert r.spec["spec"]["selector"]["matchLabels"] == {"madinfra.io/stack": "demo", "madinfra.io/role": "server"}


def test_vllm_is_deployment_with_clusterip_service_and_http_readiness():
    spec = k8s_spec(distributed={"launcher": "vllm", "nnodes": 2, "nproc_per_node": 4}, k8s={"gpu_count": 4}, env_vars={"MODEL_PATH": "/m"}, service={"port": 8080, "health_check": {"http_path": "/healthz"}})
    res = by_id(desired_resources(spec, compile(spec)))
    assert set(res) == {"k8s/Deployment/demo", "k8s/Service/demo-api"}
    deploy = res["k8s/Deployment/demo"]
    assert deploy.spec["spec"]["replicas"] == 2 and deploy.gpus == 8
    probe = pod(deploy)["containers"][0]["readinessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": 8080}
    svc = res["k8s/Service/demo-api"].spec["spec"]
    assert svc["ports"] == [{"name": "http", "port": 8080}] and "clusterIP" not in svc


def test_sglang_multi_node_is_statefulset_with_rank0_endpoint():
    spec = k8s_spec(distributed={"launcher": "sglang", "nnodes": 2, "nproc_per_node": 4}, k8s={"gpu_count": 4}, env_vars={"MODEL_PATH": "/m"})
    res = by_id(desired_resources(spec, compile(spec)))
    assert set(res) == {"k8s/StatefulSet/demo", "k8s/Service/demo", "k8s/Service/demo-api"}
    sts = res["k8s/StatefulSet/demo"].spec["spec"]
    assert sts["podManagementPolicy"] == "Parallel" and sts["serviceName"] == "demo" and sts["replicas"] == 2
    assert res["k8s/Service/demo"].spec["spec"]["clusterIP"] == "None"
    endpoint = res["k8s/Service/demo-api"].spec["spec"]
    assert endpoint["selector"]["statefulset.kubernetes.io/pod-name"] == "demo-0"
    probe = sts["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["exec"]["command"][0:2] == ["sh", "-c"] and '"${HOSTNAME##*-}" != 0' in probe["exec"]["command"][2]
    assert res["k8s/StatefulSet/demo"].depends_on == ("k8s/Service/demo",)
    assert endpoint_service_name("demo") == "demo-api"


def disagg(prefill: int, decode: int):
    spec = k8s_spec(
        distributed={"launcher": "sglang-disagg", "nnodes": 1 + prefill + decode, "nproc_per_node": 8, "sglang_disagg": {"prefill_nodes": prefill, "decode_nodes": decode}},
        k8s={"gpu_count": 8},
        env_vars={"MODEL_PATH": "/m"},
    )
    return by_id(desired_resources(spec, compile(spec)))


def test_disaggregated_sglang_pools_and_proxy():
    res = disagg(4, 2)
    assert set(res) == {
        "k8s/ConfigMap/demo-topology",
        "k8s/Deployment/demo-proxy",
        "k8s/Service/demo-api",
        "k8s/StatefulSet/demo-prefill",
        "k8s/Service/demo-prefill",
        "k8s/StatefulSet/demo-decode",
        "k8s/Service/demo-decode",
    }
    assert res["k8s/StatefulSet/demo-prefill"].spec["spec"]["replicas"] == 4
    assert res["k8s/StatefulSet/demo-decode"].spec["spec"]["replicas"] == 2
    assert res["k8s/Service/demo-api"].spec["spec"]["selector"]["madinfra.io/role"] == "proxy"
    assert res["k8s/Deployment/demo-proxy"].gpus == 0
    assert sum(r.gpus for r in res.values()) == 48
    proxy_cmd = pod(res["k8s/Deployment/demo-proxy"])["containers"][0]["command"][2]
    assert "demo-prefill-3.demo-prefill.ml.svc.cluster.local:30000" in proxy_cmd
    # The proxy only routes HTTP: it is not sized like a GPU server.
    proxy_resources = pod(res["k8s/Deployment/demo-proxy"])["containers"][0]["resources"]
    assert proxy_resources == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
    decode_resources = pod(res["k8s/StatefulSet/demo-decode"])["containers"][0]["resources"]
    assert decode_resources["requests"]["amd.com/gpu"] == decode_resources["limits"]["amd.com/gpu"]


def test_resizing_one_pool_changes_that_pool_the_topology_and_the_proxy_only():
    """The other pool's StatefulSet and every Service stay byte-for-byte the same; the resized
    pool changes only its replicas (its template is independent of the pool's size)."""
    before, after = disagg(1, 2), disagg(2, 2)
    assert set(before) == set(after)
    changed = {rid for rid in before if before[rid].spec != after[rid].spec}
    assert changed == {"k8s/StatefulSet/demo-prefill", "k8s/ConfigMap/demo-topology", "k8s/Deployment/demo-proxy"}
    rules = update_rules("k8s/StatefulSet")
    diffs = diff_specs(normalise(before["k8s/StatefulSet/demo-prefill"].spec, rules), normalise(after["k8s/StatefulSet/demo-prefill"].spec, rules))
    assert [(d.path, d.before, d.after) for d in diffs] == [(("spec", "replicas"), 1, 2)]
    proxy = diff_specs(normalise(before["k8s/Deployment/demo-proxy"].spec), normalise(after["k8s/Deployment/demo-proxy"].spec))
    assert any("demo-prefill-1.demo-prefill" in str(d.after) for d in proxy)


def test_secrets_hold_digests_only_and_env_uses_secret_refs(monkeypatch):
    monkeypatch.setenv("HF_TOKEN_SRC", "hf_very_secret_value")
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 1}, secret_env={"HF_TOKEN": {"from_env": "HF_TOKEN_SRC"}})
    resources = desired_resources(spec, launch_plan("demo", (role(gpus=1),)))
    res = by_id(resources)
    secret = res["k8s/Secret/demo-secrets"]
    assert secret.spec["data"]["HF_TOKEN"].startswith("sha256:")
    text = repr([r.spec for r in resources])
    assert "hf_very_secret_value" not in text and base64.b64encode(b"hf_very_secret_value").decode() not in text
    env = {e["name"]: e for e in pod(res["k8s/Job/demo"])["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "demo-secrets", "key": "HF_TOKEN"}
    assert "k8s/Secret/demo-secrets" in res["k8s/Job/demo"].depends_on
    rotated = res["k8s/Job/demo"].spec["spec"]["template"]["metadata"]["annotations"]["madinfra.io/secrets-digest"]
    monkeypatch.setenv("HF_TOKEN_SRC", "hf_rotated")
    again = by_id(desired_resources(spec, launch_plan("demo", (role(gpus=1),))))
    assert again["k8s/Job/demo"].spec["spec"]["template"]["metadata"]["annotations"]["madinfra.io/secrets-digest"] != rotated


def test_scripts_dir_becomes_configmap_staged_by_init_container(tmp_path: Path):
    scripts = tmp_path / "scripts"
    (scripts / "sub").mkdir(parents=True)
    (scripts / "run.sh").write_text("echo hi\n")
    (scripts / "sub" / "train.py").write_text("print(1)\n")
    (scripts / "blob.bin").write_bytes(b"\xff\xfe\x00")
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 1}, model={"scripts_dir": "scripts"})
    res = by_id(desired_resources(spec, launch_plan("demo", (role(gpus=1),)), tmp_path))
    cm = res["k8s/ConfigMap/demo-scripts"].spec
    assert cm["data"] == {"run.sh": "echo hi\n", "sub-train.py": "print(1)\n"}
    assert base64.b64decode(cm["binaryData"]["blob.bin"]) == b"\xff\xfe\x00"
    p = pod(res["k8s/Job/demo"])
    items = next(v for v in p["volumes"] if v["name"] == "scripts")["configMap"]["items"]
    assert {"key": "sub-train.py", "path": "sub/train.py"} in items
    assert p["initContainers"][0]["command"] == ["sh", "-c", "cp -rL /madinfra/scripts/. /workspace/"]
    assert "k8s/ConfigMap/demo-scripts" in res["k8s/Job/demo"].depends_on


def test_configmap_size_limit_uses_madengine_message(tmp_path: Path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "big.txt").write_text("x" * (CONFIGMAP_LIMIT + 1))
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 1}, model={"scripts_dir": "scripts"})
    with pytest.raises(MadinfraError, match=r"ConfigMap payload would be ~\d+ bytes; Kubernetes limit is ~1 MiB"):
        desired_resources(spec, launch_plan("demo", (role(gpus=1),)), tmp_path)


def test_missing_scripts_dir_names_the_field(tmp_path: Path):
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 1}, model={"scripts_dir": "nope"})
    with pytest.raises(MadinfraError, match="model.scripts_dir"):
        desired_resources(spec, launch_plan("demo", (role(gpus=1),)), tmp_path)


def test_namespace_only_when_asked():
    spec = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 1, "create_namespace": True})
    res = by_id(desired_resources(spec, launch_plan("demo", (role(gpus=1),))))
    assert "k8s/Namespace/ml" in res and "namespace" not in res["k8s/Namespace/ml"].spec["metadata"]
    assert "k8s/Namespace/ml" in res["k8s/Job/demo"].depends_on
    plain = k8s_spec(distributed={"launcher": "torchrun"}, k8s={"gpu_count": 1})
    assert not any(r.kind == "k8s/Namespace" for r in desired_resources(plain, launch_plan("demo", (role(gpus=1),))))


def test_two_stacks_of_one_model_never_share_a_name():
    a = k8s_spec("llama-a", model={"name": "llama"}, distributed={"launcher": "torchrun", "nnodes": 2}, k8s={"gpu_count": 1})
    b = k8s_spec("llama-b", model={"name": "llama"}, distributed={"launcher": "torchrun", "nnodes": 2}, k8s={"gpu_count": 1})
    assert not {r.id for r in desired_resources(a, compile(a))} & {r.id for r in desired_resources(b, compile(b))}


def test_desired_manifests_never_set_server_owned_fields(stack_file):
    """Otherwise the planner would silently ignore a user's change to them."""
    _, _, resources = build(stack_file)
    for r in resources:
        rules = update_rules(r.kind)
        assert normalise(r.spec, rules) == normalise(r.spec, UpdateRules(unordered_lists=rules.unordered_lists)), r.id


def test_every_stack_builds_through_the_provider(stack_file):
    spec, launch, resources = build(stack_file)
    assert sum(r.gpus for r in resources) == launch.total_gpus
    ids = {r.id for r in resources}
    assert all(dep in ids for r in resources for dep in r.depends_on)
    provider = KubernetesProvider(ProviderOptions(stack_dir=stack_file.parent))
    assert provider.desired(spec, launch) == resources
