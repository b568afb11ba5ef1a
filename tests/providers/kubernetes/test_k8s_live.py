"""Live read, planner integration and readiness against kmock's Kubernetes emulator.

kmock ignores label selectors, cannot hold Namespaces and has no PUT; ``server_view`` plays the
API server's part of filling defaults, so the tests see what a real cluster returns. The
kubernetes client is synchronous, so calls run in a thread while kmock serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from types import SimpleNamespace

import kmock
import pytest
from k8s_support import server_view, store

from madinfra.config import resolve
from madinfra.errors import MadinfraError, ProviderError
from madinfra.launchers import compile
from madinfra.planner import CHANGED_OUTSIDE, plan
from madinfra.resources import ProviderOptions
from providers.kubernetes import KubernetesProvider
from providers.kubernetes.client import KubeTarget
from providers.kubernetes.live import clean, to_live_resource
from providers.kubernetes.readiness import assess, wait

pytestmark = [pytest.mark.k8s, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]

def stack(name="demo", **extra):
    raw = {"name": name, "k8s": {"namespace": "ml", "gpu_count": 1, **extra.pop("k8s", {})}, **extra}
    return resolve(raw)


def provider_for(cluster, context=None) -> KubernetesProvider:
    return KubernetesProvider(ProviderOptions(kubeconfig=str(cluster.kubeconfig), kube_context=context))


def rules_for(kind):
    return KubernetesProvider().update_rules(kind)


async def read(provider, name="demo"):
    return await asyncio.to_thread(provider.read, name)


# -- pure conversion ---------------------------------------------------------------------------


def test_clean_strips_server_noise_but_keeps_user_fields():
    spec = stack(distributed={"launcher": "torchrun", "nnodes": 2})
    resources = KubernetesProvider().desired(spec, compile(spec))
    for r in resources:
        live = to_live_resource(server_view(r.spec), r.kind.split("/")[1])
        assert plan([r], [live], None, rules_for).changes == [], r.id
        assert live.provider_id and live.provider_id.startswith("uid-")
    job = next(r for r in resources if r.kind == "k8s/Job")
    cleaned = clean(server_view(job.spec), "Job")
    assert "batch.kubernetes.io/job-name" not in cleaned["spec"]["template"]["metadata"]["labels"]
    assert "annotations" not in cleaned["metadata"] and "status" not in cleaned


def test_live_secret_values_become_digests(monkeypatch):
    monkeypatch.setenv("SRC", "value-1")
    spec = stack(distributed={"launcher": "torchrun"}, secret_env={"TOKEN": {"from_env": "SRC"}})
    secret = next(r for r in KubernetesProvider().desired(spec, compile(spec)) if r.kind == "k8s/Secret")
    live_obj = server_view({**secret.spec, "data": {"TOKEN": base64.b64encode(b"value-1").decode()}})
    live = to_live_resource(live_obj, "Secret")
    assert live.spec["data"] == secret.spec["data"] and "value-1" not in repr(live.spec)
    rotated = to_live_resource({**live_obj, "data": {"TOKEN": base64.b64encode(b"value-2").decode()}}, "Secret")
    change = plan([secret], [rotated], None, rules_for).changes[0]
    assert change.action == "update"


def test_kube_target_follows_kubectl_precedence(monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert KubeTarget.choose("/flag", "ctx-flag", "/stack", "ctx-stack") == KubeTarget("/flag", "ctx-flag")
    assert KubeTarget.choose(None, None, "/stack", "ctx-stack") == KubeTarget("/stack", "ctx-stack")
    assert KubeTarget.choose(None, None, "~/.kube/config", None).kubeconfig == str(Path("~/.kube/config").expanduser())
    monkeypatch.setenv("KUBECONFIG", "/a:/b")
    assert KubeTarget.choose(None, None, "~/.kube/config", None) == KubeTarget(None, None)


# -- kmock: live read and planner --------------------------------------------------------------


@pytest.mark.asyncio
async def test_read_lists_one_call_per_kind_and_keeps_only_this_stack(cluster):
    spec = stack(distributed={"launcher": "torchrun", "nnodes": 2})
    provider = provider_for(cluster)
    desired = provider.desired(spec, compile(spec))
    for r in desired:
        store(cluster.kmock, r.spec)
    other = stack("other", distributed={"launcher": "torchrun"})
    for r in KubernetesProvider().desired(other, compile(other)):
        store(cluster.kmock, r.spec)
    before = len(list(cluster.kmock))
    live = await read(provider)
    assert sorted(r.id for r in live) == sorted(r.id for r in desired)
    requests = list(cluster.kmock)[before:]
    assert len(requests) == 6 and all(req.action == kmock.action.LIST and req.namespace == "ml" for req in requests)
    assert {req.resource.plural for req in requests} == {"secrets", "configmaps", "services", "jobs", "deployments", "statefulsets"}
    assert all(req.params["labelSelector"] == "app.kubernetes.io/managed-by=madinfra,madinfra.io/stack=demo" for req in requests)
    job = next(r for r in live if r.kind == "k8s/Job")
    assert job.status["phase"] == "Running" and job.status["active"] == 2 and job.gpus == 2
    assert plan(desired, live, None, rules_for).changes == []


@pytest.mark.asyncio
async def test_planner_create_update_replace_delete_and_drift(cluster):
    provider = provider_for(cluster)
    spec = stack(distributed={"launcher": "vllm", "nnodes": 2, "nproc_per_node": 1}, env_vars={"MODEL_PATH": "/m"})
    desired = provider.desired(spec, compile(spec))
    live = await read(provider)
    assert live == []
    created = plan(desired, live, None, rules_for)
    assert {c.action for c in created.changes} == {"create"} and len(created.changes) == 2
    assert created.gpus_after == 2

    for r in desired:
        store(cluster.kmock, r.spec)
    state = {r.id: SimpleNamespace(spec=r.spec, tainted=False) for r in desired}

    bigger = stack(distributed={"launcher": "vllm", "nnodes": 3, "nproc_per_node": 1}, env_vars={"MODEL_PATH": "/m"})
    update = plan(provider.desired(bigger, compile(bigger)), await read(provider), state, rules_for)
    (change,) = [c for c in update.changes if c.resource_id == "k8s/Deployment/demo"]
    assert change.action == "update" and any(f.path == "spec.replicas" for f in change.fields)

    obj = cluster.kmock.objects["apps/v1/deployments", "ml", "demo"]
    obj.patch({"spec": {"selector": {"matchLabels": {"madinfra.io/stack": "demo", "madinfra.io/role": "other"}}}})
    replace = plan(desired, await read(provider), state, rules_for)
    (change,) = [c for c in replace.changes if c.resource_id == "k8s/Deployment/demo"]
    assert change.action == "replace" and change.drift and CHANGED_OUTSIDE in " ".join(change.reasons)
    assert any(f.forces_replace and f.path.startswith("spec.selector") for f in change.fields)

    obj.patch({"spec": {"selector": {"matchLabels": {"madinfra.io/role": "server"}}, "replicas": 5}})
    drift = plan(desired, await read(provider), state, rules_for)
    (change,) = [c for c in drift.changes if c.resource_id == "k8s/Deployment/demo"]
    assert change.action == "update" and change.drift

    without_service = [r for r in desired if r.kind != "k8s/Service"]
    deleted = plan(without_service, await read(provider), state, rules_for)
    assert [(c.action, c.resource_id) for c in deleted.changes if c.action == "delete"] == [("delete", "k8s/Service/demo-api")]


@pytest.mark.asyncio
async def test_job_template_change_forces_replace(cluster):
    provider = provider_for(cluster)
    spec = stack(distributed={"launcher": "torchrun", "nnodes": 2})
    desired = provider.desired(spec, compile(spec))
    for r in desired:
        store(cluster.kmock, r.spec)
    changed = stack(distributed={"launcher": "torchrun", "nnodes": 2}, env_vars={"NEW_VAR": "1"})
    result = plan(provider.desired(changed, compile(changed)), await read(provider), None, rules_for)
    (change,) = result.changes
    assert change.action == "replace" and change.resource_id == "k8s/Job/demo"
    assert any(f.forces_replace and f.path.startswith("spec.template") for f in change.fields)


@pytest.mark.asyncio
async def test_missing_namespace_is_one_clear_error(cluster):
    provider = provider_for(cluster)
    spec = stack(k8s={"namespace": "nowhere"}, distributed={"launcher": "torchrun"})
    provider.desired(spec, compile(spec))
    with pytest.raises(ProviderError, match=r"namespace 'nowhere' does not exist .*k8s.create_namespace: true"):
        await read(provider)


@pytest.mark.asyncio
async def test_context_selection_and_unreachable_server(cluster):
    spec = stack(distributed={"launcher": "torchrun"})
    dead = provider_for(cluster, context="dead")
    dead.desired(spec, compile(spec))
    with pytest.raises(ProviderError, match=r"cannot reach the Kubernetes API server at http://127.0.0.1:9"):
        await read(dead)
    missing = KubernetesProvider(ProviderOptions(kubeconfig=str(cluster.kubeconfig) + ".nope"))
    with pytest.raises(ProviderError, match="does not exist"):
        missing.api()
    unknown = provider_for(cluster, context="no-such-context")
    with pytest.raises(ProviderError, match="context"):
        unknown.api()


# -- readiness -----------------------------------------------------------------------------------


def pod(name, role_name="server", phase="Running", waiting=None, scheduled=True):
    status = {"phase": phase, "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": waiting, "message": "back-off pulling"}} if waiting else {"running": {}}}]}
    if not scheduled:
        status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes: insufficient amd.com/gpu"}]}
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ml", "labels": {"madinfra.io/role": role_name, "madinfra.io/stack": "demo", "app.kubernetes.io/managed-by": "madinfra"}}, "status": status}


def deployment_obj(ready):
    spec = stack(distributed={"launcher": "vllm", "nnodes": 2, "nproc_per_node": 1}, env_vars={"MODEL_PATH": "/m"})
    manifest = next(r for r in KubernetesProvider().desired(spec, compile(spec)) if r.kind == "k8s/Deployment").spec
    return server_view(manifest, readyReplicas=ready)


def test_assess_rules():
    assert assess([deployment_obj(2)], []).ready == ["k8s/Deployment/demo"]
    waiting = assess([deployment_obj(1)], [pod("demo-a"), pod("demo-b", scheduled=False)])
    assert "insufficient amd.com/gpu" in waiting.waiting["k8s/Deployment/demo"]
    failed = assess([deployment_obj(1)], [pod("demo-b", waiting="ImagePullBackOff")])
    assert "ImagePullBackOff" in failed.failed["k8s/Deployment/demo"]
    job = server_view(next(r for r in KubernetesProvider().desired(stack(distributed={"launcher": "torchrun"}), compile(stack(distributed={"launcher": "torchrun"}))) if r.kind == "k8s/Job").spec)
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}
    assert "BackoffLimitExceeded" in assess([job], []).failed["k8s/Job/demo"]
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    assert assess([job], []).ready == ["k8s/Job/demo"]


def test_statefulset_is_rolled_out_only_when_every_pod_runs_the_new_revision():
    spec = stack(distributed={"launcher": "sglang", "nnodes": 2, "nproc_per_node": 1}, env_vars={"MODEL_PATH": "/m"})
    manifest = next(r for r in KubernetesProvider().desired(spec, compile(spec)) if r.kind == "k8s/StatefulSet").spec
    rolling = server_view(manifest, currentRevision="demo-1", updateRevision="demo-2")
    assert assess([rolling], []).waiting and not assess([rolling], []).ready
    assert assess([server_view(manifest, currentRevision="demo-2", updateRevision="demo-2")], []).ready == ["k8s/StatefulSet/demo"]


def test_wait_times_out_with_the_pods_reason():
    now = [0.0]
    lines = []
    fetch = lambda: ([deployment_obj(0)], [pod("demo-x", scheduled=False)])  # noqa: E731
    with pytest.raises(ProviderError, match=r"not ready after 30 s \(k8s.ready_timeout\).*Unschedulable"):
        wait(fetch, lambda rid, msg: lines.append(msg), 30, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert lines and "0/2 ready" in lines[0]


@pytest.mark.asyncio
async def test_wait_ready_against_kmock(cluster):
    provider = provider_for(cluster)
    spec = stack(distributed={"launcher": "vllm", "nnodes": 2, "nproc_per_node": 1}, env_vars={"MODEL_PATH": "/m"})
    desired = provider.desired(spec, compile(spec))
    deploy = next(r for r in desired if r.kind == "k8s/Deployment")
    store(cluster.kmock, deploy.spec, readyReplicas=1)
    bad = pod("demo-1", waiting="CrashLoopBackOff")
    cluster.kmock.objects["v1/pods", "ml", "demo-1"] = bad
    progress = []
    with pytest.raises(ProviderError, match="CrashLoopBackOff"):
        await asyncio.to_thread(provider.wait_ready, [deploy.id], lambda rid, msg: progress.append((rid, msg)), 5, 0.01)
    cluster.kmock.objects["apps/v1/deployments", "ml", "demo"].patch({"status": {"readyReplicas": 2}})
    del cluster.kmock.objects["v1/pods", "ml", "demo-1"]
    assert await asyncio.to_thread(provider.wait_ready, [deploy.id], lambda rid, msg: progress.append((rid, msg)), 5, 0.01) == [deploy.id]
    assert (deploy.id, "ready") in progress


def test_apply_before_desired_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/pulumi")
    from madinfra.resources import Change, Resource

    change = Change("create", "k8s/Job/x", Resource("k8s/Job", "x", {}), None)
    with pytest.raises(MadinfraError, match="plan"):
        KubernetesProvider(ProviderOptions(work_dir=tmp_path)).apply([change], lambda *a: None, lambda *a: None)
