"""The K8s sandbox for end-to-end tests: a real kube-apiserver and a real Pulumi engine.

``scripts/k8s-sandbox up`` (which ``scripts/test`` runs) starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK with fake GPU nodes on 127.0.0.1, and links the
Pulumi CLI and ``pulumi-resource-kubernetes`` built from Go modules into ``$DIR/bin``. Tests marked
``k8s_e2e`` drive the real ``madinfra`` CLI against it; when the sandbox is not up they fail with
the command to run (deselect them with ``-m "not k8s_e2e"``), they never skip.

Every ``K8sStack`` gets a unique name; teardown deletes every object labelled with it in every
namespace through the API, whatever the test did.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from tests_support import run_madinfra

from madinfra.naming import MANAGED_BY_LABEL, STACK_LABEL, label_value

SANDBOX_DIR = Path(os.environ.get("MADINFRA_K8S_SANDBOX_DIR", "/tmp/madinfra-k8s-sandbox"))
ROOT = Path(__file__).resolve().parents[1]

NAMESPACED_LISTS = {
    "Job": ("BatchV1Api", "list_namespaced_job", "delete_namespaced_job"),
    "Deployment": ("AppsV1Api", "list_namespaced_deployment", "delete_namespaced_deployment"),
    "StatefulSet": ("AppsV1Api", "list_namespaced_stateful_set", "delete_namespaced_stateful_set"),
    "Service": ("CoreV1Api", "list_namespaced_service", "delete_namespaced_service"),
    "ConfigMap": ("CoreV1Api", "list_namespaced_config_map", "delete_namespaced_config_map"),
    "Secret": ("CoreV1Api", "list_namespaced_secret", "delete_namespaced_secret"),
    "Pod": ("CoreV1Api", "list_namespaced_pod", "delete_namespaced_pod"),
    "PersistentVolumeClaim": ("CoreV1Api", "list_namespaced_persistent_volume_claim", "delete_namespaced_persistent_volume_claim"),
    "ReplicaSet": ("AppsV1Api", "list_namespaced_replica_set", "delete_namespaced_replica_set"),
    "EndpointSlice": ("DiscoveryV1Api", "list_namespaced_endpoint_slice", "delete_namespaced_endpoint_slice"),
}


@dataclass
class KubeSandbox:
    """The running sandbox: kubeconfig, binaries, and a kubernetes client on it."""

    dir: Path
    api: Any

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    def env(self) -> dict[str, str]:
        """What a user's shell has after ``eval "$(scripts/k8s-sandbox env)"``."""
        return {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "KUBECONFIG": str(self.kubeconfig),
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    def client(self, name: str) -> Any:
        from kubernetes import client

        return getattr(client, name)(self.api)

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        """Raw JSON objects (camelCase), as the API server returned them."""
        cls, list_call, _ = NAMESPACED_LISTS[kind]
        response = getattr(self.client(cls), list_call)(namespace, label_selector=selector, _preload_content=False)
        return list(json.loads(response.data)["items"])

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = [o for o in self.list(kind, namespace) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def ensure_namespace(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.client("CoreV1Api").create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            accounts = self.client("CoreV1Api").list_namespaced_service_account(name).items
            if any(sa.metadata.name == "default" for sa in accounts):
                return
            time.sleep(0.2)
        raise AssertionError(f"namespace {name} got no default ServiceAccount")

    def namespaces(self) -> list[str]:
        return [ns.metadata.name for ns in self.client("CoreV1Api").list_namespace().items]

    def stack_objects(self, stack: str, kinds: tuple[str, ...] = ("Job", "Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "Pod")) -> list[str]:
        """``Kind/namespace/name`` of everything labelled with the stack, in every namespace."""
        selector = f"{STACK_LABEL}={label_value(stack)}"
        found = []
        for namespace in self.namespaces():
            for kind in kinds:
                found += [f"{kind}/{namespace}/{o['metadata']['name']}" for o in self.list(kind, namespace, selector)]
        return sorted(found)

    def delete_stack(self, stack: str) -> None:
        """Remove everything labelled with the stack (test teardown; no madinfra involved)."""
        from kubernetes.client.exceptions import ApiException

        selector = f"{STACK_LABEL}={label_value(stack)}"
        for namespace in self.namespaces():
            for kind in ("Job", "Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim"):
                cls, _, delete = NAMESPACED_LISTS[kind]
                for obj in self.list(kind, namespace, selector):
                    try:
                        getattr(self.client(cls), delete)(obj["metadata"]["name"], namespace, propagation_policy="Background", grace_period_seconds=0)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
        for ns in self.client("CoreV1Api").list_namespace(label_selector=selector).items:
            self.client("CoreV1Api").delete_namespace(ns.metadata.name)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def k8s_sandbox() -> Iterator[KubeSandbox]:
    kubeconfig = SANDBOX_DIR / "kubeconfig"
    status = subprocess.run(["bash", str(ROOT / "scripts" / "k8s-sandbox"), "status"], capture_output=True, text=True, env={**os.environ, "MADINFRA_K8S_SANDBOX_DIR": str(SANDBOX_DIR)})
    if status.returncode != 0 or not kubeconfig.is_file():
        pytest.fail(f"the K8s sandbox is not up ({status.stdout.strip()} {status.stderr.strip()}); run `bash scripts/k8s-sandbox up`, or deselect these tests with -m 'not k8s_e2e'", pytrace=False)
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield KubeSandbox(SANDBOX_DIR, api)
    api.close()


@dataclass
class K8sStack:
    """One stack under test: its stack file, its working directory, the real CLI on it."""

    sandbox: KubeSandbox
    name: str
    workdir: Path
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.workdir / "stack.yaml"

    @property
    def selector(self) -> str:
        return f"{MANAGED_BY_LABEL}=madinfra,{STACK_LABEL}={label_value(self.name)}"

    def write(self, spec: dict[str, Any]) -> Path:
        self.spec = {**spec, "name": self.name}
        self.path.write_text(yaml.safe_dump(self.spec, sort_keys=False))
        return self.path

    def write_from(self, source: Path, ready_timeout: int = 120, **changes: Any) -> Path:
        """A copy of a stack file of the repository, renamed to this stack (and with a shorter
        ``k8s.ready_timeout``, so a broken apply fails in minutes, not in ten)."""
        data = yaml.safe_load(source.read_text())
        data.update(changes)
        model = data.get("model") or {}
        if model.get("scripts_dir") and not Path(model["scripts_dir"]).is_absolute():
            data["model"] = {**model, "scripts_dir": str((source.parent / model["scripts_dir"]).resolve())}
        section = "kubernetes" if "kubernetes" in data else "k8s"
        data[section] = {**(data.get(section) or {}), "ready_timeout": ready_timeout}
        service = data.get("service") or {}
        data["service"] = {**service, "health_check": {**(service.get("health_check") or {}), "timeout": ready_timeout}}
        if (data.get("distributed") or {}).get("launcher") not in ("vllm", "sglang", "sglang-disagg", "sglang_disagg"):
            del data["service"]
        return self.write(data)

    def cli(self, *args: str, check: bool | None = True, timeout: float = 300, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``madinfra ARGS`` in the stack's directory (its state lives under ``.madinfra``)."""
        return run_madinfra(args, cwd or self.workdir, {**self.sandbox.env(), **(env or {})}, timeout, check)

    def apply(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("apply", str(self.path), "--yes", *extra)

    def plan(self, *extra: str, check: bool | None = True) -> subprocess.CompletedProcess[str]:
        return self.cli("plan", str(self.path), *extra, check=check)

    def assert_plan_empty(self) -> None:
        proc = self.cli("plan", str(self.path), "--detailed-exitcode", check=False)
        assert proc.returncode == 0, f"the plan right after an apply is not empty (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.sandbox.list(kind, namespace or self.namespace, self.selector)

    def uid(self, kind: str, name: str, namespace: str | None = None) -> str | None:
        obj = self.sandbox.get(kind, namespace or self.namespace, name)
        return obj["metadata"]["uid"] if obj else None

    @property
    def namespace(self) -> str:
        return ((self.spec.get("k8s") or self.spec.get("kubernetes") or {}).get("namespace")) or "default"


@pytest.fixture
def new_k8s_stack(k8s_sandbox: KubeSandbox, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], K8sStack]]:
    """Factory of stacks with unique names; everything labelled with them goes in teardown."""
    made: list[K8sStack] = []
    short = request.node.name.split("[")[0].removeprefix("test_")[:12].replace("_", "-").strip("-")

    def _new() -> K8sStack:
        name = f"k{uuid.uuid4().hex[:5]}-{short}".rstrip("-")
        workdir = tmp_path / name
        workdir.mkdir()
        made.append(K8sStack(k8s_sandbox, name, workdir))
        return made[-1]

    yield _new
    for stack in made:
        k8s_sandbox.delete_stack(stack.name)


@pytest.fixture
def k8s_stack(new_k8s_stack) -> K8sStack:
    return new_k8s_stack()


def prepare_cluster_for(sandbox: KubeSandbox, stack_file: Path) -> None:
    """What an administrator sets up before a stack of this shape can run: its namespace, the
    node labels its node selector asks for (on the nodes of its GPU vendor), and the existing
    PVCs it names."""
    from kubernetes.client.exceptions import ApiException

    from madinfra.config import load

    spec = load(stack_file)
    assert spec.k8s is not None
    if not spec.k8s.create_namespace:
        sandbox.ensure_namespace(spec.k8s.namespace)
    if spec.k8s.node_selector:
        vendor = spec.gpu_vendor.lower()
        core = sandbox.client("CoreV1Api")
        for node in core.list_node(label_selector=f"madinfra.io/gpu-vendor={vendor}").items:
            if any((node.metadata.labels or {}).get(k) != v for k, v in spec.k8s.node_selector.items()):
                core.patch_node(node.metadata.name, {"metadata": {"labels": dict(spec.k8s.node_selector)}})
    for claim in (spec.k8s.results_pvc, spec.k8s.data_pvc):
        if not claim:
            continue
        body = {
            "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "kwok-volume", "resources": {"requests": {"storage": "1Gi"}}},
        }
        try:
            sandbox.client("CoreV1Api").create_namespaced_persistent_volume_claim(spec.k8s.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
