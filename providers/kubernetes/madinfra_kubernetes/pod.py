"""One role's pod template: container, environment, resources, volumes, probes.

Every workload kind (Indexed Job, Deployment, StatefulSet) uses the same template so a role
behaves the same whatever controller runs it. The container runs ``bash -c`` on a small script:
the launcher's trusted runtime expressions are exported in order, unwanted variables unset, then
the launcher's command runs. Literal values stay in the container ``env`` list.

Kubelet expands ``$(NAME)`` and turns ``$$`` into ``$`` in ``command``, ``args`` and env values;
madinfra doubles every ``$`` there so what the launcher wrote reaches bash unchanged (probes are
not expanded, so they are left alone).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from madinfra.config.schema import StackSpec
from madinfra.launchers.model import LaunchPlan, RoleLaunch
from madinfra.naming import k8s_labels
from madinfra_kubernetes.topology import env_from

DEFAULT_IMAGES = {"AMD": "rocm/pytorch:latest", "NVIDIA": "nvcr.io/nvidia/pytorch:24.05-py3"}
"""Used when ``model.image`` is unset; real stacks should pin their own image."""

WORKSPACE = "/workspace"
SCRIPTS_MOUNT = "/madinfra/scripts"
TERMINATION_GRACE_SECONDS = 60
POD_INDEX_EXPR = "${HOSTNAME##*-}"


@dataclass(frozen=True)
class PodInputs:
    """What a pod template needs beyond the stack: its role and the names of its neighbours."""

    spec: StackSpec
    launch: LaunchPlan
    role: RoleLaunch
    workload: str
    restart_policy: str
    subdomain: str | None = None
    configmap: str | None = None
    script_paths: dict[str, str] = field(default_factory=dict)
    secret: str | None = None
    credential_secret: str | None = None
    """The Secret whose ``credential.json`` is mounted at /workspace/credential.json (k8s.secrets)."""
    topology: str | None = None
    """The stack's topology ConfigMap, read with ``envFrom`` (never part of ``annotations``)."""
    annotations: dict[str, str] = field(default_factory=dict)
    probe: str | None = None
    """None: no readiness probe; "each": every pod serves; "rank0": only pod 0 serves HTTP."""


def image(spec: StackSpec) -> str:
    return spec.model.image or DEFAULT_IMAGES[spec.gpu_vendor]


def escape_dollars(text: str) -> str:
    """Keep text literal through kubelet's ``$(VAR)`` expansion."""
    return text.replace("$", "$$")


def shell_script(role: RoleLaunch, *, indexed_default: bool) -> str:
    """The container's bash script: exports in launcher order, unsets, then the command.

    ``indexed_default`` gives JOB_COMPLETION_INDEX a value of 0 for single-node Jobs (not
    Indexed), so a rank expression that reads it is never empty.
    """
    lines = []
    if indexed_default:
        lines.append('export JOB_COMPLETION_INDEX="${JOB_COMPLETION_INDEX:-0}"')
    lines.extend(f'export {name}="{expression}"' for name, expression in role.runtime_env)
    if role.unset_env:
        lines.append("unset " + " ".join(role.unset_env))
    lines.append(role.command)
    return "\n".join(lines)


def env_list(inputs: PodInputs) -> list[dict[str, Any]]:
    """Literal launcher env, then what the pod knows about itself, then secret references."""
    entries: dict[str, dict[str, Any]] = {}
    for name, value in inputs.role.env.items():
        entries[name] = {"name": name, "value": escape_dollars(value)}
    entries["MADINFRA_WORKDIR"] = {"name": "MADINFRA_WORKDIR", "value": WORKSPACE}
    for name, path in (("POD_IP", "status.podIP"), ("MAD_K8S_POD_NAME", "metadata.name"), ("MAD_K8S_NAMESPACE", "metadata.namespace")):
        entries[name] = {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
    # madengine's contract is a flag ("running as a K8s Job"), not the workload's name.
    entries["MAD_K8S_JOB"] = {"name": "MAD_K8S_JOB", "value": "true"}
    if inputs.secret:
        for name in inputs.spec.secret_env:
            entries.pop(name, None)
            entries[name] = {"name": name, "valueFrom": {"secretKeyRef": {"name": inputs.secret, "key": name}}}
    return list(entries.values())


HELPER_REQUESTS = {"cpu": "2", "memory": "4Gi"}
HELPER_LIMITS = {"cpu": "4", "memory": "8Gi"}
"""A GPU-less role of a GPU stack (the disaggregated proxy, mini_lb) only routes HTTP: sizing it
like a GPU server (64 CPUs / 256Gi in the ready-made stacks) would waste a node and block its
surge pod during a rolling update."""


def resources(spec: StackSpec, gpus: int) -> dict[str, dict[str, str]]:
    """GPU requests equal limits (extended resources cannot be overcommitted); 0 GPUs -> none."""
    k8s = spec.k8s
    assert k8s is not None
    if gpus == 0 and spec.gpus_per_node > 0:
        return {"requests": dict(HELPER_REQUESTS), "limits": dict(HELPER_LIMITS)}
    requests = {"cpu": k8s.cpu, "memory": k8s.memory}
    limits = {"cpu": k8s.cpu_limit, "memory": k8s.memory_limit}
    if gpus > 0:
        requests[k8s.gpu_resource_name] = str(gpus)
        limits[k8s.gpu_resource_name] = str(gpus)
    return {"requests": requests, "limits": limits}


def port_name(name: str) -> str:
    """An IANA_SVC_NAME: <= 15 chars, lower-case alphanumerics and '-', at least one letter."""
    clean = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:15].strip("-")
    return clean if re.search(r"[a-z]", clean) else f"p-{clean}"[:15]


def container_ports(role: RoleLaunch) -> list[dict[str, Any]]:
    seen: set[int] = set()
    ports = []
    for name, number in role.ports.items():
        if number in seen:
            continue
        seen.add(number)
        ports.append({"name": port_name(name), "containerPort": number})
    return ports


def readiness_probe(inputs: PodInputs) -> dict[str, Any] | None:
    """From ``service.health_check``: HTTP on the role's server port, or the given command.

    In a multi-node SGLang server only rank 0 serves HTTP, so the probe is a command that
    passes on the other ranks and asks rank 0's server on the pod itself.
    """
    if not inputs.probe:
        return None
    service = inputs.spec.service
    check = service.health_check if service is not None else None
    http_path = check.http_path if check is not None else "/health"
    timing = {"initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": 3}
    if check is not None and check.command:
        return {"exec": {"command": ["sh", "-c", check.command]}, **timing}
    port = inputs.role.ports.get("http")
    if not http_path or port is None:
        return None
    if inputs.probe == "rank0" and inputs.role.nodes > 1:
        code = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)"
        url = f'"http://${{POD_IP}}:{port}"{shlex.quote(http_path)}'
        command = f'[ "{POD_INDEX_EXPR}" != 0 ] || python3 -c {shlex.quote(code)} {url}'
        return {"exec": {"command": ["sh", "-c", command]}, **timing}
    return {"httpGet": {"path": http_path, "port": port}, **timing}


def results_claim(spec: StackSpec) -> str | None:
    """The PVC mounted at /results: ``k8s.results_pvc`` (an existing claim), else the claim
    madinfra creates when a results storage class is set (see storage.py), else none."""
    from madinfra_kubernetes.storage import results_volume

    assert spec.k8s is not None
    made = results_volume(spec)
    return spec.k8s.results_pvc or (made.name if made is not None else None)


def data_claim(spec: StackSpec) -> str | None:
    from madinfra_kubernetes.storage import data_volume

    assert spec.k8s is not None
    made = data_volume(spec)
    return spec.k8s.data_pvc or (made.name if made is not None else None)


def volumes_and_mounts(inputs: PodInputs) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    k8s = inputs.spec.k8s
    assert k8s is not None
    volumes: list[dict[str, Any]] = [
        {"name": "workspace", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k8s.shm_size}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "workspace", "mountPath": WORKSPACE},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if inputs.configmap:
        items = [{"key": key, "path": path} for key, path in inputs.script_paths.items()]
        volumes.append({"name": "scripts", "configMap": {"name": inputs.configmap, "items": items}})
    for name, claim, path in (("data", data_claim(inputs.spec), "/data"), ("results", results_claim(inputs.spec), "/results")):
        if claim:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim}})
            mounts.append({"name": name, "mountPath": path})
    if inputs.credential_secret:
        from madinfra_kubernetes.credentials import credential_volume

        volume, mount = credential_volume(inputs.credential_secret)
        volumes.append(volume)
        mounts.append(mount)
    return volumes, mounts


def pod_template(inputs: PodInputs) -> dict[str, Any]:
    spec, role = inputs.spec, inputs.role
    k8s = spec.k8s
    assert k8s is not None
    volumes, mounts = volumes_and_mounts(inputs)
    script = shell_script(role, indexed_default=inputs.restart_policy == "Never")
    container: dict[str, Any] = {
        "name": port_name(role.role) if len(role.role) <= 15 else "main",
        "image": image(spec),
        "imagePullPolicy": k8s.image_pull_policy,
        "command": ["bash", "-c", escape_dollars(script)],
        "workingDir": WORKSPACE,
        "env": env_list(inputs),
        **({"envFrom": env_from(inputs.topology)} if inputs.topology else {}),
        "resources": resources(spec, role.gpus_per_node),
        "volumeMounts": mounts,
    }
    ports = container_ports(role)
    if ports:
        container["ports"] = ports
    probe = readiness_probe(inputs)
    if probe:
        container["readinessProbe"] = probe
    pod: dict[str, Any] = {}
    if inputs.configmap:
        pod["initContainers"] = [
            {
                "name": "stage-scripts",
                "image": image(spec),
                "imagePullPolicy": k8s.image_pull_policy,
                "command": ["sh", "-c", f"cp -rL {SCRIPTS_MOUNT}/. {WORKSPACE}/"],
                "volumeMounts": [
                    {"name": "scripts", "mountPath": SCRIPTS_MOUNT, "readOnly": True},
                    {"name": "workspace", "mountPath": WORKSPACE},
                ],
            }
        ]
    pod["containers"] = [container]
    pod["volumes"] = volumes
    pod["restartPolicy"] = inputs.restart_policy
    pod["terminationGracePeriodSeconds"] = TERMINATION_GRACE_SECONDS
    pod["enableServiceLinks"] = False  # service env vars like VLLM_PORT=tcp://... break servers
    host_ipc = k8s.host_ipc if k8s.host_ipc is not None else role.nodes > 1 or spec.distributed.nnodes > 1
    if host_ipc:
        pod["hostIPC"] = True
    if inputs.subdomain:
        pod["subdomain"] = inputs.subdomain
    if k8s.node_selector:
        pod["nodeSelector"] = dict(k8s.node_selector)
    if k8s.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in k8s.tolerations]
    if k8s.service_account:
        pod["serviceAccountName"] = k8s.service_account
    if k8s.secrets.image_pull_secret_names:
        pod["imagePullSecrets"] = [{"name": n} for n in k8s.secrets.image_pull_secret_names]
    metadata: dict[str, Any] = {"labels": k8s_labels(spec.name, role.role, spec.model_name)}
    if inputs.annotations:
        metadata["annotations"] = dict(inputs.annotations)
    return {"metadata": metadata, "spec": pod}
