"""Properties on the real API server: madinfra writes every value the way the server returns it,
so "apply, then plan" is empty for random stacks, not only for the ready-made ones."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from k8s_sandbox import K8sStack, KubeSandbox

from madinfra_kubernetes.canonical import canonical_quantity

pytestmark = pytest.mark.k8s_e2e

E2E = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
E2E_STACKS = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
"""Each example applies and destroys a stack (about 15 s): fewer of them."""

quantities = st.builds(
    lambda sign, whole, fraction, suffix: f"{sign}{whole}{'.' + fraction if fraction is not None else ''}{suffix}",
    st.sampled_from(["", "+"]),
    st.from_regex(r"[0-9]{1,7}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[0-9]{0,6}", fullmatch=True)),
    st.sampled_from(["", "m", "u", "n", "k", "M", "G", "T", "P", "Ki", "Mi", "Gi", "Ti", "e3", "E6", "e-3", "E0", "e-6"]),
)


@E2E
@given(values=st.lists(quantities, min_size=1, max_size=20))
def test_quantities_come_back_from_the_server_as_madinfra_writes_them(values, k8s_sandbox: KubeSandbox) -> None:
    """A PodTemplate is stored, never scheduled: the server's answer is its own form, for a
    ResourceList value (memory requests, rounded up to milli units) and a plain quantity
    (an emptyDir sizeLimit)."""
    core = k8s_sandbox.client("CoreV1Api")
    name = f"q-{uuid.uuid4().hex[:8]}"
    spec = {
        "containers": [{"name": f"c{i}", "image": "x", "resources": {"requests": {"memory": value}}} for i, value in enumerate(values)],
        "volumes": [{"name": f"v{i}", "emptyDir": {"sizeLimit": value}} for i, value in enumerate(values)],
    }
    created = json.loads(core.create_namespaced_pod_template("default", {"metadata": {"name": name}, "template": {"spec": spec}}, _preload_content=False).data)
    try:
        stored = created["template"]["spec"]
        assert [c["resources"]["requests"]["memory"] for c in stored["containers"]] == [canonical_quantity(v, resource_list=True) for v in values]
        assert [v["emptyDir"]["sizeLimit"] for v in stored["volumes"]] == [canonical_quantity(v) for v in values]
    finally:
        core.delete_namespaced_pod_template(name, "default")


env_values = st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), st.one_of(st.just(""), st.text("abc $()\"'=,", max_size=6)), max_size=4)


@E2E_STACKS
@given(
    launcher=st.sampled_from(["torchrun", "vllm", "sglang"]),
    nnodes=st.integers(1, 2),
    cpu=st.sampled_from(["0.5", "1", "1500m", "2"]),
    memory=st.sampled_from(["1024Mi", "1Gi", "2048Mi", "3G"]),
    shm=st.sampled_from(["1Gi", "512Mi", "0.5Gi"]),
    env=env_values,
    ttl=st.one_of(st.none(), st.integers(3600, 7200)),
)
def test_apply_then_plan_is_empty_for_random_stacks(launcher, nnodes, cpu, memory, shm, env, ttl, new_k8s_stack) -> None:
    stack: K8sStack = new_k8s_stack()
    k8s = {"namespace": "default", "gpu_count": 1, "cpu": cpu, "memory": memory, "cpu_limit": "4", "memory_limit": "8Gi", "shm_size": shm, "ready_timeout": 120}
    if ttl is not None and launcher == "torchrun":
        k8s["ttl_seconds_after_finished"] = ttl
    spec = {
        "model": {"image": "rocm/pytorch:latest", "script": "run.py", "model_path": "/models/m"},
        "distributed": {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": 1},
        "env_vars": env,
        "k8s": k8s,
    }
    if launcher != "torchrun":
        spec["service"] = {"health_check": {"timeout": 120}}
    stack.write(spec)
    stack.apply()
    stack.assert_plan_empty()
    stack.cli("destroy", str(stack.path), "--yes")
