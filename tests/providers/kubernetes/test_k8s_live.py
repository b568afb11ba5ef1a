"""Fast unit tests of the live side: kubeconfig choice, readiness rules, errors without a server.

What the API server really returns (defaults, canonical values, controller labels) is tested on
the real sandbox (test_k8s_e2e_live.py and the "apply then the plan is empty" property for every
stack); the readiness rules here are fed the status fields Kubernetes documents for each state.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from madinfra.config import resolve
from madinfra.errors import MadinfraError, ProviderError
from madinfra.launchers import compile
from madinfra.resources import ProviderOptions
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.client import KubeTarget
from madinfra_kubernetes.readiness import assess, pods_of, wait

pytestmark = pytest.mark.k8s


def stack(name="demo", **extra):
    raw = {"name": name, "k8s": {"namespace": "ml", "gpu_count": 1, **extra.pop("k8s", {})}, **extra}
    return resolve(raw)


def test_kube_target_follows_kubectl_precedence(monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert KubeTarget.choose("/flag", "ctx-flag", "/stack", "ctx-stack") == KubeTarget("/flag", "ctx-flag")
    assert KubeTarget.choose(None, None, "/stack", "ctx-stack") == KubeTarget("/stack", "ctx-stack")
    assert KubeTarget.choose(None, None, "~/.kube/config", None).kubeconfig == str(Path("~/.kube/config").expanduser())
    monkeypatch.setenv("KUBECONFIG", "/a:/b")
    assert KubeTarget.choose(None, None, "~/.kube/config", None) == KubeTarget(None, None)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dead", "cluster": {"server": f"https://127.0.0.1:{closed_port()}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
        "current-context": "dead",
    }))
    return path


def test_unreachable_server_missing_kubeconfig_and_unknown_context_are_one_sentence_each(tmp_path):
    config = kubeconfig(tmp_path)
    spec = stack(distributed={"launcher": "torchrun"})
    dead = KubernetesProvider(ProviderOptions(kubeconfig=str(config)))
    dead.desired(spec, compile(spec))
    with pytest.raises(ProviderError, match=r"cannot reach the Kubernetes API server at https://127.0.0.1:\d+ to list"):
        dead.read("demo")
    with pytest.raises(ProviderError, match="does not exist"):
        KubernetesProvider(ProviderOptions(kubeconfig=str(config) + ".nope")).api()
    with pytest.raises(ProviderError, match="context 'no-such-context' is not in kubeconfig"):
        KubernetesProvider(ProviderOptions(kubeconfig=str(config), kube_context="no-such-context")).api()


def test_apply_before_desired_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/pulumi")
    from madinfra.resources import Change, Resource

    change = Change("create", "k8s/Job/x", Resource("k8s/Job", "x", {}), None)
    with pytest.raises(MadinfraError, match="plan"):
        KubernetesProvider(ProviderOptions(work_dir=tmp_path)).apply([change], lambda *a: None, lambda *a: None)


# -- readiness rules ----------------------------------------------------------------------------


def owned(uid: str) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": uid}]


def pod(name, owner="uid-deploy-rs", phase="Running", waiting=None, scheduled=True):
    status = {"phase": phase, "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": waiting, "message": "back-off pulling"}} if waiting else {"running": {}}}]}
    if not scheduled:
        status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes: insufficient amd.com/gpu"}]}
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ml", "ownerReferences": owned(owner)}, "status": status}


def deployment(ready: int, replicas: int = 2) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-deploy", "generation": 1},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas},
    }


REPLICASET = {"kind": "ReplicaSet", "metadata": {"name": "demo-abc", "uid": "uid-deploy-rs", "ownerReferences": owned("uid-deploy")}}


def job(status: dict, uid: str = "uid-job") -> dict:
    return {"kind": "Job", "metadata": {"name": "demo", "namespace": "ml", "uid": uid}, "spec": {"parallelism": 2}, "status": status}


def test_assess_rules():
    assert assess([deployment(2)], [], [REPLICASET]).ready == ["k8s/Deployment/demo"]
    waiting = assess([deployment(1)], [pod("demo-a"), pod("demo-b", scheduled=False)], [REPLICASET])
    assert "insufficient amd.com/gpu" in waiting.waiting["k8s/Deployment/demo"]
    failed = assess([deployment(1)], [pod("demo-b", waiting="ImagePullBackOff")], [REPLICASET])
    assert "ImagePullBackOff" in failed.failed["k8s/Deployment/demo"]
    backoff = job({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})
    assert "BackoffLimitExceeded" in assess([backoff], []).failed["k8s/Job/demo"]
    assert assess([job({"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]})], []).ready == ["k8s/Job/demo"]
    assert assess([job({"active": 2})], [pod("demo-0", owner="uid-job"), pod("demo-1", owner="uid-job")]).ready == ["k8s/Job/demo"]


def test_pods_of_a_replaced_job_are_not_the_new_jobs_pods():
    """The old Job of the same name may still be going away: its failed pods carry the same
    labels but another owner UID, and must not fail the new Job's readiness."""
    old_failed = pod("demo-0-old", owner="uid-old", phase="Failed", waiting="CrashLoopBackOff")
    new = job({"active": 2}, uid="uid-new")
    mine = [pod("demo-0", owner="uid-new"), pod("demo-1", owner="uid-new")]
    assert pods_of(new, [old_failed, *mine]) == mine
    assert assess([new], [old_failed, *mine]).ready == ["k8s/Job/demo"]


def test_statefulset_is_rolled_out_only_when_every_pod_runs_the_new_revision():
    def sts(current: str, update: str) -> dict:
        return {
            "kind": "StatefulSet",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-sts", "generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": current, "updateRevision": update},
        }

    assert assess([sts("demo-1", "demo-2")], []).waiting and not assess([sts("demo-1", "demo-2")], []).ready
    assert assess([sts("demo-2", "demo-2")], []).ready == ["k8s/StatefulSet/demo"]


def test_wait_times_out_with_the_pods_reason_and_the_field_to_raise():
    now = [0.0]
    lines = []
    fetch = lambda: ([deployment(0)], [pod("demo-x", scheduled=False)], [REPLICASET])  # noqa: E731
    with pytest.raises(ProviderError, match=r"not ready after 30 s \(service.health_check.timeout\).*Unschedulable"):
        wait(fetch, lambda rid, msg: lines.append(msg), 30, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s), timeout_field="service.health_check.timeout")
    assert lines and "0/2 ready" in lines[0]


def test_a_running_jobs_elapsed_time_comes_from_its_start_time() -> None:
    from datetime import datetime, timedelta, timezone

    from madinfra_kubernetes.live import summarize_status

    start = (datetime.now(timezone.utc) - timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    running = summarize_status({"status": {"active": 2, "startTime": start}}, "Job")
    assert 5390 <= running["elapsed_seconds"] <= 5410
    done = summarize_status({"status": {"startTime": start, "succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]}}, "Job")
    assert "elapsed_seconds" not in done


def test_a_jobs_time_limit_is_its_active_deadline() -> None:
    from madinfra.resources import Resource
    from madinfra_kubernetes.provider import KubernetesProvider

    provider = KubernetesProvider()
    assert provider.time_limit_hours(Resource("k8s/Job", "j", {"spec": {"activeDeadlineSeconds": 7200}})) == 2
    assert provider.time_limit_hours(Resource("k8s/Job", "j", {"spec": {}})) is None
    assert provider.time_limit_hours(Resource("k8s/Deployment", "d", {"spec": {}})) is None
