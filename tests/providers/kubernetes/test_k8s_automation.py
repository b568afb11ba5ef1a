"""Automation API glue: the missing-CLI error, engine events -> records, passphrase (the real
engine runs in test_k8s_e2e_*)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from k8s_support import EXAMPLES, build
from pulumi.automation.events import EngineEvent

from madinfra.errors import MadinfraError, ProviderError
from madinfra.resources import Change, ProviderOptions, Resource
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.automation import EventRouter, passphrase_env, require_pulumi
from madinfra_kubernetes.live import to_live_resource
from madinfra_kubernetes.program import resource_urn

pytestmark = pytest.mark.k8s


def test_missing_pulumi_stops_apply_before_anything_happens(monkeypatch, tmp_path: Path):
    example = next(p for p in EXAMPLES if p.name == "torchrun-multi-node.json")
    spec, launch, resources = build(example)
    provider = KubernetesProvider(ProviderOptions(work_dir=tmp_path / ".madinfra"))
    provider.desired(spec, launch)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    recorded: list = []
    changes = [Change("create", r.id, r, None) for r in resources]
    with pytest.raises(MadinfraError) as err:
        provider.apply(changes, lambda *a: recorded.append(a), lambda *a: recorded.append(a))
    message = str(err.value)
    assert "`pulumi` command is not installed" in message and "https://get.pulumi.com" in message
    assert "plan, render and validate work without it" in message and "\n" not in message
    assert recorded == [] and not (tmp_path / ".madinfra").exists()
    with pytest.raises(MadinfraError, match="destroy"):
        provider.destroy(spec.name, lambda *a: None)


def test_no_changes_needs_no_pulumi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    KubernetesProvider().apply([], lambda *a: None, lambda *a: None)
    with pytest.raises(MadinfraError):
        require_pulumi()


def event(kind: str, op: str, rid: str, outputs: dict | None = None, **extra) -> EngineEvent:
    urn = resource_urn("demo", rid)
    meta = {"op": op, "urn": urn, "type": "t", "provider": ""}
    if outputs is not None:
        meta["new"] = {"type": "t", "urn": urn, "outputs": outputs, "inputs": {}}
    return EngineEvent.from_json({"sequence": 1, "timestamp": 0, kind: {"metadata": meta, **extra}})


def diagnostic(rid: str, message: str, severity: str = "info") -> EngineEvent:
    return EngineEvent.from_json({"sequence": 2, "timestamp": 0, "diagnosticEvent": {"urn": resource_urn("demo", rid), "message": message, "color": "never", "severity": severity}})


def live_job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "ml", "uid": "u-1", "labels": {"madinfra.io/role": "worker"}},
            "spec": {"parallelism": 2, "template": {"spec": {"containers": [{"name": "w", "resources": {"limits": {"amd.com/gpu": "4"}}}]}}},
            "status": {"active": 2}}


def test_engine_events_become_progress_and_one_record_per_change():
    job = Resource("k8s/Job", "demo", {})
    svc = Resource("k8s/Service", "demo", {})
    old = Resource("k8s/ConfigMap", "demo-scripts", {})
    changes = [Change("replace", job.id, job, job), Change("create", svc.id, svc, None), Change("delete", old.id, None, old)]
    progress, records = [], []
    router = EventRouter(changes, lambda rid, msg: progress.append((rid, msg)), lambda c, live, err: records.append((c.resource_id, live, err)), to_live_resource)
    router(event("resourcePreEvent", "delete-replaced", job.id))
    router(event("resOutputsEvent", "delete-replaced", job.id, {}))
    router(diagnostic(job.id, "  Job is being   created "))
    router(event("resOutputsEvent", "create-replacement", job.id, live_job("demo")))
    router(event("resOutputsEvent", "replace", job.id, live_job("demo")))
    router(event("resOutputsEvent", "delete", old.id, {}))
    router(diagnostic(svc.id, "services \"demo\" is forbidden", "error"))
    router(event("resOpFailedEvent", "create", svc.id, status=1, steps=1))
    assert [r[0] for r in records] == [job.id, old.id, svc.id]
    live = records[0][1]
    assert live.provider_id == "u-1" and live.gpus == 8 and live.status["phase"] == "Running"
    assert records[1][1] is None and records[1][2] is None
    assert isinstance(records[2][2], ProviderError) and "forbidden" in str(records[2][2])
    assert (job.id, "delete-replaced started") in progress and (job.id, "Job is being created") in progress
    assert router.unrecorded() == []


def test_unrecorded_changes_are_reported():
    res = Resource("k8s/Service", "x", {})
    router = EventRouter([Change("update", res.id, res, res)], lambda *a: None, lambda *a: None, to_live_resource)
    router(event("resOutputsEvent", "update", "k8s/Service/other", {"metadata": {"name": "other"}}))
    assert [c.resource_id for c in router.unrecorded()] == [res.id]


def test_passphrase_file_is_private_and_reused(monkeypatch, tmp_path):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    env = passphrase_env(tmp_path / "pulumi")
    path = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text()) >= 32
    first = path.read_text()
    assert passphrase_env(tmp_path / "pulumi") == env and path.read_text() == first
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "mine")
    assert passphrase_env(tmp_path / "other") == {}


def test_a_missing_pulumi_sdk_names_the_extra_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pulumi_kubernetes" else real(name, *a))
    with pytest.raises(MadinfraError) as err:
        require_pulumi("apply")
    assert "pulumi_kubernetes" in str(err.value) and "pip install -e providers/kubernetes" in str(err.value)
