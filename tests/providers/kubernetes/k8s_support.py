"""Shared helpers and fixtures for the Kubernetes provider tests (imported by name: a module
called `conftest` would clash with the other test folders' conftest modules).

Fixtures for the Kubernetes provider tests: every K8s example and stack, and a kmock cluster.

kmock ignores label selectors, cannot hold Namespaces and has no PUT; ``server_view`` plays the
API server's part of filling defaults, so the tests see what a real cluster returns.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from madinfra.config import load
from madinfra.launchers import compile
from madinfra.launchers.model import LaunchPlan, RoleLaunch
from providers.kubernetes import KubernetesProvider
from madinfra.resources import ProviderOptions

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples" / "k8s-configs").glob("*/*.json"))


def _k8s_stacks() -> list[Path]:
    found = []
    for path in sorted((ROOT / "stacks").glob("**/*")):
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            if load(path).target == "k8s":
                found.append(path)
        except Exception:  # noqa: BLE001 - other stacks' validity is tested elsewhere
            continue
    return found


K8S_STACK_FILES = EXAMPLES + _k8s_stacks()


def build(path: Path):
    """(spec, launch, resources) of a stack file, through the provider's public API."""
    spec = load(path)
    launch = compile(spec)
    provider = KubernetesProvider(ProviderOptions(stack_dir=path.parent))
    return spec, launch, provider.desired(spec, launch)


@pytest.fixture(params=K8S_STACK_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def stack_file(request) -> Path:
    return request.param


def role(name: str = "worker", nodes: int = 1, gpus: int = 2, first_rank: int = 0, **kw) -> RoleLaunch:
    return RoleLaunch(
        role=name,
        nodes=nodes,
        first_rank=first_rank,
        gpus_per_node=gpus,
        env=kw.pop("env", {"NNODES": str(nodes)}),
        runtime_env=kw.pop("runtime_env", (("NODE_RANK", "${JOB_COMPLETION_INDEX}"),)),
        command=kw.pop("command", 'cd "${MADINFRA_WORKDIR:-.}" || exit 1\nbash run.sh'),
        unset_env=kw.pop("unset_env", ()),
        ports=kw.pop("ports", {"master": 29500}),
    )


def launch_plan(stack: str, roles: tuple[RoleLaunch, ...], workload: str = "training", launcher: str | None = "torchrun", port: int = 29500, service_port: int | None = None) -> LaunchPlan:
    return LaunchPlan(
        stack=stack,
        target="k8s",
        launcher=launcher,
        workload=workload,
        nnodes=sum(r.nodes for r in roles),
        nproc_per_node=roles[0].gpus_per_node,
        master_port=port,
        roles=roles,
        service_port=service_port,
    )


# -- kmock: a Kubernetes API emulator on 127.0.0.1 ------------------------------------------------

PLURALS = {
    "Secret": "v1/secrets",
    "ConfigMap": "v1/configmaps",
    "Service": "v1/services",
    "Job": "batch/v1/jobs",
    "Deployment": "apps/v1/deployments",
    "StatefulSet": "apps/v1/statefulsets",
    "Pod": "v1/pods",
}
_uids = itertools.count(1)


def server_view(manifest: dict, **status) -> dict:
    """What the API server stores for a manifest: defaults, ids, controller-added labels."""
    obj = copy.deepcopy(manifest)
    meta = obj["metadata"]
    meta.update(uid=f"uid-{next(_uids)}", resourceVersion="1", generation=1, creationTimestamp="2026-01-01T00:00:00Z",
                managedFields=[{"manager": "pulumi-kubernetes"}], annotations={**meta.get("annotations", {}), "pulumi.com/skipAwait": "true"})
    kind, spec = obj["kind"], obj.get("spec")
    if kind == "Secret":
        obj["type"] = "Opaque"
    if kind == "Service":
        spec.setdefault("clusterIP", "10.0.0.7")
        spec.update(type="ClusterIP", sessionAffinity="None", ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack", internalTrafficPolicy="Cluster",
                    clusterIPs=[spec["clusterIP"]] if spec["clusterIP"] != "None" else ["None"])
        for port in spec["ports"]:
            port.update(protocol="TCP", targetPort=port["port"])
    if kind in ("Job", "Deployment", "StatefulSet"):
        template = spec["template"]
        template["metadata"]["creationTimestamp"] = None
        pod = template["spec"]
        pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler", securityContext={})
        for c in pod["containers"] + pod.get("initContainers", []):
            c.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
            for p in c.get("ports", []):
                p["protocol"] = "TCP"
            for e in c.get("env", []):
                if "fieldRef" in e.get("valueFrom", {}):
                    e["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
        for v in pod["volumes"]:
            if "configMap" in v:
                v["configMap"]["defaultMode"] = 420
    if kind == "Job":
        spec.update(suspend=False, podReplacementPolicy="TerminatingOrFailed", selector={"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}})
        spec["template"]["metadata"]["labels"].update({"batch.kubernetes.io/controller-uid": meta["uid"], "controller-uid": meta["uid"],
                                                       "batch.kubernetes.io/job-name": meta["name"], "job-name": meta["name"]})
        obj["status"] = {"active": spec["parallelism"], **status}
    if kind == "Deployment":
        spec.update(revisionHistoryLimit=10, progressDeadlineSeconds=600)
        meta["annotations"]["deployment.kubernetes.io/revision"] = "1"
        obj["status"] = {"observedGeneration": 1, "replicas": spec["replicas"], "readyReplicas": spec["replicas"], "updatedReplicas": spec["replicas"], **status}
    if kind == "StatefulSet":
        spec.update(revisionHistoryLimit=10, updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                    persistentVolumeClaimRetentionPolicy={"whenDeleted": "Retain", "whenScaled": "Retain"})
        obj["status"] = {"observedGeneration": 1, "replicas": spec["replicas"], "readyReplicas": spec["replicas"], "updatedReplicas": spec["replicas"], **status}
    return obj


def store(kmock, manifest: dict, **status) -> dict:
    obj = server_view(manifest, **status)
    kmock.objects[PLURALS[obj["kind"]], obj["metadata"].get("namespace"), obj["metadata"]["name"]] = obj
    return obj


def kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}, {"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}, {"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
        "current-context": "kmock",
    }))
    return path


@pytest.fixture
def cluster(kmock, tmp_path):
    kmock.resources.load_bundled()
    kmock["get /api/v1/namespaces/ml"] << {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}
    return SimpleNamespace(kmock=kmock, kubeconfig=kubeconfig(tmp_path, str(kmock.url).rstrip("/")))
