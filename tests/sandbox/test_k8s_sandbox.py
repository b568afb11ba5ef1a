"""The K8s sandbox (`scripts/k8s-sandbox up`): a real control plane with fake GPU nodes, and the
Pulumi engine built at exactly the versions the Python packages are pinned to."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests_support import ROOT

SANDBOX_DIR = Path(os.environ.get("MADINFRA_K8S_SANDBOX_DIR", "/tmp/madinfra-k8s-sandbox"))


def pins() -> dict[str, str]:
    text = (ROOT / "scripts" / "k8s-sandbox-versions.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, re.M))


def test_the_engine_is_built_at_the_python_sdk_versions_pyproject_pins() -> None:
    pyproject = (ROOT / "providers" / "kubernetes" / "pyproject.toml").read_text()
    versions = pins()
    assert f'"pulumi=={versions["PULUMI_VERSION"].removeprefix("v")}"' in pyproject
    assert f'"pulumi-kubernetes=={versions["PULUMI_KUBERNETES_VERSION"].removeprefix("v")}"' in pyproject
    assert versions["KUBERNETES_VERSION"].startswith("v1.36.") and versions["ETCD_VERSION"].startswith("v3.6.")
    assert versions["KWOK_VERSION"].startswith("v0.8.")


@pytest.mark.k8s_e2e
def test_the_built_binaries_report_the_pinned_versions(k8s_sandbox) -> None:
    versions = pins()
    env = k8s_sandbox.env()
    pulumi = subprocess.run([str(k8s_sandbox.bin / "pulumi"), "version"], capture_output=True, text=True, env=env, check=True)
    assert pulumi.stdout.strip() == versions["PULUMI_VERSION"]
    apiserver = subprocess.run([str(k8s_sandbox.bin / "kube-apiserver"), "--version"], capture_output=True, text=True, check=True)
    assert apiserver.stdout.strip() == f"Kubernetes {versions['KUBERNETES_VERSION']}"
    info = k8s_sandbox.client("VersionApi").get_code()
    assert info.git_version == versions["KUBERNETES_VERSION"]


@pytest.mark.k8s_e2e
def test_fake_gpu_nodes_are_ready_with_their_capacity(k8s_sandbox) -> None:
    nodes = k8s_sandbox.client("CoreV1Api").list_node().items
    amd = [n for n in nodes if n.status.allocatable.get("amd.com/gpu") == "8"]
    nvidia = [n for n in nodes if n.status.allocatable.get("nvidia.com/gpu") == "8"]
    assert len(amd) >= 6 and len(nvidia) >= 2
    for node in amd + nvidia:
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


@pytest.mark.k8s_e2e
def test_a_pod_is_scheduled_on_a_gpu_node_and_turns_ready(k8s_sandbox) -> None:
    core = k8s_sandbox.client("CoreV1Api")
    name = f"selftest-{int(time.time() * 1000) % 100000}"
    pod = {
        "metadata": {"name": name, "labels": {"madinfra.io/selftest": "1"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
    }
    core.create_namespaced_pod("default", pod)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = json.loads(core.read_namespaced_pod(name, "default", _preload_content=False).data)
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in live["status"].get("conditions", []))
            if ready:
                break
            time.sleep(0.3)
        assert ready, live["status"]
        assert live["spec"]["nodeName"].startswith("kwok-nvidia-") and live["status"]["podIP"]
    finally:
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


@pytest.mark.k8s_e2e
def test_status_reports_every_component(k8s_sandbox) -> None:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "k8s-sandbox"), "status"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        assert re.search(rf"^{component}\s+running \(pid \d+\)$", proc.stdout, re.M), proc.stdout
