"""API calls scripts/k8s-sandbox makes while it brings the cluster up (Python stdlib only).

It runs before the project is installed (``scripts/test`` starts the sandbox first), so it
reads the kubeconfig the sandbox wrote — one cluster, one token user, CA data inline — by hand
instead of through the kubernetes client.

    k8s_sandbox_api.py --kubeconfig F wait-readyz [--timeout S]
    k8s_sandbox_api.py --kubeconfig F create-nodes --amd N --nvidia M
    k8s_sandbox_api.py --kubeconfig F wait --amd N --nvidia M [--timeout S]
    k8s_sandbox_api.py --kubeconfig F check --amd N --nvidia M [--verbose]
    k8s_sandbox_api.py --kubeconfig F create-logs-crd [--timeout S]
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NODE_SIZE = {"cpu": "128", "memory": "1Ti", "pods": "110", "ephemeral-storage": "1Ti"}
GPUS_PER_NODE = "8"
VENDOR_RESOURCES = {"amd": "amd.com/gpu", "nvidia": "nvidia.com/gpu"}
KWOK_HOST = "127.0.0.1"
"""Every fake node's InternalIP: where the API server finds KWOK's kubelet-like server."""


@dataclass
class Cluster:
    server: str
    token: str
    context: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, path: str) -> "Cluster":
        """The sandbox's own kubeconfig: keys at fixed places, values after ``key: ``."""
        values: dict[str, str] = {}
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.strip().lstrip("- ").partition(": ")
                if sep and key in ("server", "certificate-authority-data", "token"):
                    values[key] = value.strip()
        ca = base64.b64decode(values["certificate-authority-data"]).decode("ascii")
        with tempfile.NamedTemporaryFile("w", suffix=".crt") as bundle:
            bundle.write(ca)
            bundle.flush()
            context = ssl.create_default_context(cafile=bundle.name)
        return cls(values["server"], values["token"], context)

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text.startswith("{") else text
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            return exc.code, json.loads(text) if text.startswith("{") else text


def node_names(amd: int, nvidia: int) -> list[tuple[str, str]]:
    return [(f"kwok-amd-{i}", "amd") for i in range(amd)] + [(f"kwok-nvidia-{i}", "nvidia") for i in range(nvidia)]


def node_object(name: str, vendor: str) -> dict[str, Any]:
    capacity = {**NODE_SIZE, VENDOR_RESOURCES[vendor]: GPUS_PER_NODE}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "madinfra.io/gpu-vendor": vendor,
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def create_nodes(cluster: Cluster, amd: int, nvidia: int) -> None:
    """Create each node, then set its capacity through the status subresource (a create may drop
    status), so the scheduler sees 8 GPUs of the node's vendor before KWOK marks it Ready."""
    for name, vendor in node_names(amd, nvidia):
        node = node_object(name, vendor)
        code, answer = cluster.call("POST", "/api/v1/nodes", node)
        if code not in (201, 409):
            raise SystemExit(f"creating node {name} failed ({code}): {answer}")
        patch = {"status": node["status"]}
        code, answer = cluster.call("PATCH", f"/api/v1/nodes/{name}/status", patch, "application/merge-patch+json")
        if code != 200:
            raise SystemExit(f"setting the capacity of node {name} failed ({code}): {answer}")


STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    # The name and provisioner KWOK's volume stages act on (kustomize/stage/volume/fast).
    "metadata": {"name": "kwok-volume", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kwok.x-k8s.io/volume",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}


def create_storage_class(cluster: Cluster) -> None:
    code, answer = cluster.call("POST", "/apis/storage.k8s.io/v1/storageclasses", STORAGE_CLASS)
    if code not in (201, 409):
        raise SystemExit(f"creating StorageClass kwok-volume failed ({code}): {answer}")


# KWOK's Logs kind (kwok.x-k8s.io/v1alpha1), defined here from its documented fields: KWOK started
# with --enable-crds=Logs watches these objects and serves a pod's container log from the file one
# names (``kubectl logs`` through the API server), so a test can give each pod output of its own.
LOGS_CRD_NAME = "logs.kwok.x-k8s.io"
LOGS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": LOGS_CRD_NAME},
    "spec": {
        "group": "kwok.x-k8s.io",
        "scope": "Namespaced",
        "names": {"kind": "Logs", "listKind": "LogsList", "plural": "logs", "singular": "logs"},
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["logs"],
                                "properties": {
                                    "logs": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "containers": {"type": "array", "items": {"type": "string"}},
                                                "logsFile": {"type": "string"},
                                                "previousLogsFile": {"type": "string"},
                                                "follow": {"type": "boolean"},
                                            },
                                        },
                                    }
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def create_logs_crd(cluster: Cluster, timeout: float) -> bool:
    """Create the Logs CRD and wait until it is Established (KWOK lists it when it starts)."""
    code, answer = cluster.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", LOGS_CRD)
    if code not in (201, 409):
        raise SystemExit(f"creating CRD {LOGS_CRD_NAME} failed ({code}): {answer}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if logs_crd_established(cluster):
            return True
        time.sleep(0.1)
    return False


def logs_crd_established(cluster: Cluster) -> bool:
    code, crd = cluster.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{LOGS_CRD_NAME}")
    conditions = ((crd.get("status") or {}).get("conditions") or []) if code == 200 and isinstance(crd, dict) else []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def problems(cluster: Cluster, amd: int, nvidia: int) -> list[str]:
    """Everything that keeps the cluster from being usable, as sentences (empty: usable)."""
    out: list[str] = []
    try:
        code, _ = cluster.call("GET", "/readyz")
    except OSError as exc:
        return [f"kube-apiserver unreachable at {cluster.server}: {exc}"]
    if code != 200:
        return [f"kube-apiserver /readyz answered {code}"]
    code, nodes = cluster.call("GET", "/api/v1/nodes")
    by_name = {n["metadata"]["name"]: n for n in (nodes.get("items") or [])} if code == 200 else {}
    for name, vendor in node_names(amd, nvidia):
        node = by_name.get(name)
        if node is None:
            out.append(f"node {name} missing")
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in (node.get("status") or {}).get("conditions") or [])
        gpus = ((node.get("status") or {}).get("allocatable") or {}).get(VENDOR_RESOURCES[vendor])
        if not ready:
            out.append(f"node {name} not Ready")
        if gpus != GPUS_PER_NODE:
            out.append(f"node {name} has {gpus} {VENDOR_RESOURCES[vendor]} allocatable, not {GPUS_PER_NODE}")
        status = node.get("status") or {}
        internal = [a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"]
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if ready and (internal != [KWOK_HOST] or not port):
            out.append(f"node {name} is at {internal}:{port}, not at KWOK's server on {KWOK_HOST} (pod logs would not reach it)")
    if not logs_crd_established(cluster):
        out.append(f"CRD {LOGS_CRD_NAME} missing (pod logs are served from Logs objects)")
    code, _ = cluster.call("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    if code != 200:
        out.append("ServiceAccount default/default not created yet (kube-controller-manager)")
    return out


def wait_readyz(cluster: Cluster, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cluster.call("GET", "/readyz")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="k8s_sandbox_api.py")
    parser.add_argument("--kubeconfig", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create-storage-class")
    crd = sub.add_parser("create-logs-crd")
    crd.add_argument("--timeout", type=float, default=60)
    ready = sub.add_parser("wait-readyz")
    ready.add_argument("--timeout", type=float, default=60)
    for name in ("create-nodes", "wait", "check"):
        command = sub.add_parser(name)
        command.add_argument("--amd", type=int, required=True)
        command.add_argument("--nvidia", type=int, required=True)
        command.add_argument("--timeout", type=float, default=60)
        command.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    cluster = Cluster.from_kubeconfig(args.kubeconfig)
    if args.command == "wait-readyz":
        return 0 if wait_readyz(cluster, args.timeout) else 1
    if args.command == "create-logs-crd":
        return 0 if create_logs_crd(cluster, args.timeout) else 1
    if args.command == "create-storage-class":
        create_storage_class(cluster)
        return 0
    if args.command == "create-nodes":
        create_nodes(cluster, args.amd, args.nvidia)
        return 0
    if args.command == "check":
        found = problems(cluster, args.amd, args.nvidia)
        if args.verbose:
            print(f"nodes: {args.amd} AMD + {args.nvidia} NVIDIA fake nodes, 8 GPUs each" if not found else "\n".join(found))
        return 1 if found else 0
    deadline = time.monotonic() + args.timeout
    found = problems(cluster, args.amd, args.nvidia)
    while found and time.monotonic() < deadline:
        time.sleep(0.3)
        found = problems(cluster, args.amd, args.nvidia)
    for line in found:
        print(f"k8s-sandbox: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
