"""Persistent inference stacks changed in place (issue 6) on kmock: what each plan touches, and
how apply rolls it out (one targeted ``pulumi up`` per step, readiness in between).

The stack is deployed into kmock as the API server would store it; ``plan`` is computed from the
provider's desired resources and its live read of kmock, as ``madinfra plan`` does. For apply,
``pulumi up`` is replaced by ``FakePulumi``, which writes the targeted changes into kmock like the
API server (an update keeps the object's uid, a replacement gets a new one), so the provider's
own readiness wait runs against kmock between steps.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from k8s_support import PLURALS, server_view, store

from madinfra.config import resolve
from madinfra.errors import ProviderError
from madinfra.launchers import compile
from madinfra.planner import plan
from madinfra.resources import ProviderOptions
from providers.kubernetes import KubernetesProvider
from providers.kubernetes import automation
from providers.kubernetes.live import to_live_resource
from providers.kubernetes.program import resource_id_from_urn

pytestmark = [pytest.mark.k8s, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]

CM = "k8s/ConfigMap/llm-topology"
PROXY = "k8s/Deployment/llm-proxy"
PREFILL = "k8s/StatefulSet/llm-prefill"
DECODE = "k8s/StatefulSet/llm-decode"
PREFILL_SVC = "k8s/Service/llm-prefill"
DECODE_SVC = "k8s/Service/llm-decode"
API = "k8s/Service/llm-api"


def disagg(nnodes=5, split=None, image="rocm/sgl-dev:v1", args=(), tp=8, **k8s):
    distributed = {"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": tp, "master_port": 8000}
    if split is not None:
        distributed["sglang_disagg"] = {"prefill_nodes": split[0], "decode_nodes": split[1]}
    return resolve({
        "name": "llm",
        "k8s": {"namespace": "ml", "gpu_count": tp, "ready_timeout": 5, **k8s},
        "model": {"image": image, "model_path": "/models/llama", "args": list(args)},
        "distributed": distributed,
        "service": {"health_check": {"http_path": "/health"}},
    })


def provider_for(cluster) -> KubernetesProvider:
    return KubernetesProvider(ProviderOptions(kubeconfig=str(cluster.kubeconfig)))


def deploy(cluster, spec) -> dict[str, str]:
    """The stack as running on the cluster; returns each object's uid."""
    uids = {}
    for resource in KubernetesProvider().desired(spec, compile(spec)):
        obj = store(cluster.kmock, resource.spec)
        uids[resource.id] = obj["metadata"]["uid"]
    return uids


async def plan_for(provider, spec):
    """What ``madinfra plan`` computes: desired vs the live read, with the provider's hooks."""
    desired = provider.desired(spec, compile(spec))
    live = await asyncio.to_thread(provider.read, spec.name)
    result = plan(desired, live, None, provider.update_rules, stack=spec.name, restarts_on_update=provider.restarts_on_update)
    result.warnings.extend(provider.plan_warnings(result.changes))
    return result


def touched(result) -> dict[str, str]:
    return {c.resource_id: c.action for c in result.changes}


def fields(result, rid) -> dict[str, tuple]:
    change = next(c for c in result.changes if c.resource_id == rid)
    return {f.path: (f.before, f.after) for f in change.fields}


def live_uids(cluster) -> dict[str, str]:
    out = {}
    for kind, plural in PLURALS.items():
        for name in ("llm-topology", "llm-proxy", "llm-prefill", "llm-decode", "llm-api"):
            try:
                obj = cluster.kmock.objects[plural, "ml", name]
            except KeyError:
                continue
            out[f"k8s/{kind}/{name}"] = obj["metadata"]["uid"]
    return out


class FakePulumi:
    """``automation.select_stack``/``up`` writing the targeted changes into kmock."""

    def __init__(self, cluster, log: list):
        self.kmock = cluster.kmock
        self.log = log

    def select_stack(self, stack, work_dir, program):
        return SimpleNamespace(name=stack)

    def up(self, stack, targets, router):
        rids = [resource_id_from_urn(t) for t in targets[1:]]
        self.log.append(("up", rids))
        for rid in rids:
            change = router.changes[rid]
            _, kind, name = rid.split("/")
            key = (PLURALS[kind], "ml", name)
            if change.action == "delete":
                del self.kmock.objects[key]
                router.report(rid, None, None)
                continue
            obj = server_view(change.desired.spec)
            if change.action == "update":
                old = self.kmock.objects[key]["metadata"]
                obj["metadata"].update(uid=old["uid"], generation=old.get("generation", 1) + 1)
                if "status" in obj:
                    obj["status"]["observedGeneration"] = obj["metadata"]["generation"]
            self.kmock.objects[key] = obj
            router.report(rid, to_live_resource(obj, kind), None)


@pytest.fixture
def pulumi_on_kmock(cluster, monkeypatch):
    """Fake Pulumi plus a spy on the provider's (real) readiness wait; returns the call log."""
    log: list = []
    fake = FakePulumi(cluster, log)
    monkeypatch.setattr(automation, "require_pulumi", lambda action="apply": "/usr/bin/pulumi")
    monkeypatch.setattr(automation, "select_stack", fake.select_stack)
    monkeypatch.setattr(automation, "up", fake.up)
    real_wait = KubernetesProvider.wait_ready

    def spy(self, resource_ids, progress, timeout, interval=2.0):
        log.append(("wait", [rid for rid in resource_ids]))
        return real_wait(self, resource_ids, progress, timeout, interval=0.01)

    monkeypatch.setattr(KubernetesProvider, "wait_ready", spy)
    return log


async def apply(provider, result):
    records = []
    await asyncio.to_thread(provider.apply, result.changes, lambda rid, msg: None, lambda c, live, err: records.append((c.resource_id, err)))
    return records


# -- resize one pool ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_shrinking_decode_touches_only_decode_replicas_topology_and_proxy(cluster, pulumi_on_kmock):
    deploy(cluster, disagg(5))  # 1 proxy, 1 prefill, 3 decode
    before = live_uids(cluster)
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(4))  # 1 prefill, 2 decode
    assert touched(result) == {CM: "update", DECODE: "update", PROXY: "update"}
    assert fields(result, DECODE) == {"spec.replicas": (3, 2)}
    assert set(fields(result, CM)) == {"data.DECODE_COUNT", "data.NNODES", "data.TOTAL_PODS", "data.WORLD_SIZE"}
    assert set(fields(result, PROXY)) == {"spec.template.spec.containers[0].command[2]"}
    assert "llm-decode-2" in fields(result, PROXY)["spec.template.spec.containers[0].command[2]"][0]
    assert "llm-decode-2" not in fields(result, PROXY)["spec.template.spec.containers[0].command[2]"][1]
    assert [(r.resource_id, r.action) for r in result.restarts] == [(PROXY, "update")]
    assert (result.gpus_before, result.gpus_after) == (32, 24)
    assert result.warnings == []

    records = await apply(provider, result)
    # The proxy stops routing to llm-decode-2 before the decode pool shrinks.
    assert pulumi_on_kmock == [("up", [CM, PROXY]), ("wait", [PROXY]), ("up", [DECODE]), ("wait", [DECODE])]
    assert sorted(records) == sorted([(CM, None), (PROXY, None), (DECODE, None)])
    assert live_uids(cluster) == before, "every object is updated in place"
    assert (await plan_for(provider, disagg(4))).changes == []


@pytest.mark.asyncio
async def test_growing_prefill_touches_only_prefill_replicas_topology_and_proxy(cluster, pulumi_on_kmock):
    deploy(cluster, disagg(4))  # 1 proxy, 1 prefill, 2 decode
    before = live_uids(cluster)
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(5, split=(2, 2)))
    assert touched(result) == {CM: "update", PREFILL: "update", PROXY: "update"}
    assert fields(result, PREFILL) == {"spec.replicas": (1, 2)}
    assert fields(result, CM)["data.MADINFRA_FIRST_RANK_DECODE"] == ("2", "3")
    assert [c.resource_id for c in result.changes] == [CM, PREFILL, PROXY]
    assert result.warnings == []

    await apply(provider, result)
    # New prefill pods are ready before the proxy sends them requests.
    assert pulumi_on_kmock == [("up", [CM, PREFILL]), ("wait", [PREFILL]), ("up", [PROXY]), ("wait", [PROXY])]
    assert live_uids(cluster) == before
    assert (await plan_for(provider, disagg(5, split=(2, 2)))).changes == []


@pytest.mark.asyncio
async def test_the_untouched_pool_and_services_are_not_in_any_step(cluster, pulumi_on_kmock):
    deploy(cluster, disagg(5))
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(7, split=(1, 5)))
    await apply(provider, result)
    targeted = {rid for op, rids in pulumi_on_kmock if op == "up" for rid in rids}
    assert targeted == {CM, DECODE, PROXY}
    assert not targeted & {PREFILL, PREFILL_SVC, DECODE_SVC, API}


# -- image or server flags: one pool at a time, proxy last -------------------------------------------


@pytest.mark.asyncio
async def test_new_image_rolls_prefill_then_decode_then_proxy_waiting_for_each(cluster, pulumi_on_kmock):
    deploy(cluster, disagg(5))
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(5, image="rocm/sgl-dev:v2"))
    assert [(c.resource_id, c.action) for c in result.changes] == [(PREFILL, "update"), (DECODE, "update"), (PROXY, "update")]
    for rid in (PREFILL, DECODE, PROXY):
        assert fields(result, rid) == {"spec.template.spec.containers[0].image": ("rocm/sgl-dev:v1", "rocm/sgl-dev:v2")}
    assert [r.resource_id for r in result.restarts] == [PREFILL, DECODE, PROXY]
    # The one prefill pod restarts: its role has no ready replica meanwhile. Three decode pods
    # roll one by one, and the proxy surges (the new pod is ready before the old one stops).
    assert len(result.warnings) == 1 and "role 'prefill' has no ready replica" in result.warnings[0]

    records = await apply(provider, result)
    assert pulumi_on_kmock == [
        ("up", [PREFILL]), ("wait", [PREFILL]),
        ("up", [DECODE]), ("wait", [DECODE]),
        ("up", [PROXY]), ("wait", [PROXY]),
    ]
    assert [rid for rid, err in records] == [PREFILL, DECODE, PROXY] and all(err is None for _, err in records)


@pytest.mark.asyncio
async def test_new_server_flags_roll_the_pools_only(cluster, pulumi_on_kmock):
    deploy(cluster, disagg(5))
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(5, args=("--mem-fraction-static", "0.8")))
    assert touched(result) == {PREFILL: "update", DECODE: "update"}
    for rid in (PREFILL, DECODE):
        (command,) = fields(result, rid).values()
        assert command[1].endswith("--mem-fraction-static 0.8")
    await apply(provider, result)
    assert pulumi_on_kmock == [("up", [PREFILL]), ("wait", [PREFILL]), ("up", [DECODE]), ("wait", [DECODE])]


@pytest.mark.asyncio
async def test_a_pool_that_never_gets_ready_stops_the_rollout_before_the_next(cluster, pulumi_on_kmock, monkeypatch):
    deploy(cluster, disagg(5))
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(5, image="rocm/sgl-dev:broken"))
    real_up = automation.up

    def up_then_crash(stack, targets, router):
        real_up(stack, targets, router)
        if any(t.endswith(PREFILL) for t in targets):
            cluster.kmock.objects["apps/v1/statefulsets", "ml", "llm-prefill"].patch({"status": {"readyReplicas": 0}})
            crashing = {"kind": "Pod", "metadata": {"name": "llm-prefill-0", "namespace": "ml", "labels": {"app.kubernetes.io/managed-by": "madinfra", "madinfra.io/stack": "llm", "madinfra.io/role": "prefill"}},
                        "status": {"phase": "Running", "containerStatuses": [{"name": "prefill", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}}
            cluster.kmock.objects["v1/pods", "ml", "llm-prefill-0"] = crashing

    monkeypatch.setattr(automation, "up", up_then_crash)
    records = []
    with pytest.raises(ProviderError, match="ImagePullBackOff"):
        await asyncio.to_thread(provider.apply, result.changes, lambda *a: None, lambda c, live, err: records.append((c.resource_id, err)))
    assert pulumi_on_kmock == [("up", [PREFILL]), ("wait", [PREFILL])]
    ((rid, error),) = records
    assert rid == PREFILL and "ImagePullBackOff" in str(error)


# -- nnodes and tensor parallel size -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tensor_parallel_change_updates_both_pools_and_names_the_fields(cluster):
    deploy(cluster, disagg(5))
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(5, tp=4))
    # TP_SIZE is part of the stack's topology: the proxy is not touched by a TP change.
    assert touched(result) == {CM: "update", PREFILL: "update", DECODE: "update"}
    assert fields(result, CM)["data.TP_SIZE"] == ("8", "4")
    for rid in (PREFILL, DECODE):
        changed = fields(result, rid)
        command = changed["spec.template.spec.containers[0].command[2]"]
        assert "--tp-size 8" in command[0] and "--tp-size 4" in command[1]
        assert changed["spec.template.spec.containers[0].resources.limits[\"amd.com/gpu\"]"] == ("8", "4")
    assert all(not c.reasons for c in result.changes), "a StatefulSet's template changes in place: nothing is replaced"
    assert {r.resource_id for r in result.restarts} >= {PREFILL, DECODE}
    assert (result.gpus_before, result.gpus_after) == (32, 16)


@pytest.mark.asyncio
async def test_nnodes_change_resizes_pools_in_place(cluster):
    deploy(cluster, disagg(5))  # 1/3
    provider = provider_for(cluster)
    result = await plan_for(provider, disagg(11))  # default split 4/6
    assert touched(result) == {CM: "update", PREFILL: "update", DECODE: "update", PROXY: "update"}
    assert fields(result, PREFILL) == {"spec.replicas": (1, 4)} and fields(result, DECODE) == {"spec.replicas": (3, 6)}
    assert [r.resource_id for r in result.restarts] == [PROXY]


@pytest.mark.asyncio
async def test_training_nnodes_change_replaces_the_job_naming_the_immutable_fields(cluster):
    spec = resolve({"name": "llm", "k8s": {"namespace": "ml", "gpu_count": 8}, "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 8}})
    deploy(cluster, spec)
    provider = provider_for(cluster)
    bigger = resolve({"name": "llm", "k8s": {"namespace": "ml", "gpu_count": 8}, "distributed": {"launcher": "torchrun", "nnodes": 4, "nproc_per_node": 8}})
    result = await plan_for(provider, bigger)
    (change,) = result.changes
    assert (change.resource_id, change.action) == ("k8s/Job/llm", "replace")
    assert {"spec.completions forces replacement", "spec.parallelism forces replacement"} <= set(change.reasons)
    assert any(r.startswith("spec.template.") and r.endswith("forces replacement") for r in change.reasons)
    assert result.warnings == [], "training Jobs are not serving roles"


@pytest.mark.asyncio
async def test_replacing_the_only_decode_pod_is_a_warning_naming_the_forcing_field(cluster):
    deploy(cluster, disagg(3))  # 1 proxy, 1 prefill, 1 decode
    provider = provider_for(cluster)
    cluster.kmock.objects["apps/v1/statefulsets", "ml", "llm-decode"].patch({"spec": {"podManagementPolicy": "OrderedReady"}})
    result = await plan_for(provider, disagg(3))
    (change,) = result.changes
    assert (change.resource_id, change.action) == (DECODE, "replace")
    assert change.reasons == ["spec.podManagementPolicy forces replacement"]
    assert result.warnings == [
        f"replacing {DECODE} deletes all its pods first (spec.podManagementPolicy cannot change in place): role 'decode' has no ready replica until the new pods are ready"
    ]


# -- outputs ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_output_endpoint_is_the_api_service_dns_name(cluster):
    provider = provider_for(cluster)
    spec = disagg(5)
    provider.desired(spec, compile(spec))
    assert provider.outputs(spec, await asyncio.to_thread(provider.read, "llm")) == {"endpoint": "(not deployed)"}
    deploy(cluster, spec)
    live = await asyncio.to_thread(provider.read, "llm")
    assert provider.outputs(spec, live) == {"endpoint": "http://llm-api.ml.svc.cluster.local:8000/v1"}
