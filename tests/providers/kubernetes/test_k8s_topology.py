"""The stack's shape (LaunchPlan.topology_env) as the ConfigMap ``<stack>-topology`` read by envFrom."""

from __future__ import annotations

import dataclasses

import pytest
from k8s_support import ROOT, build

from madinfra.config import resolve
from madinfra.launchers import compile
from madinfra.naming import dns_label
from madinfra.planner import plan
from madinfra_kubernetes.manifests import desired_resources
from madinfra_kubernetes.rules import update_rules
from madinfra_kubernetes.topology import topology_configmap_name

pytestmark = pytest.mark.k8s

DISAGG = ROOT / "stacks" / "k8s" / "sglang-disagg.yaml"


def by_id(resources):
    return {r.id: r for r in resources}


def containers(resource):
    return resource.spec["spec"]["template"]["spec"]["containers"]


def disagg_spec(name="demo", nnodes=5, **extra):
    return resolve({
        "name": name,
        "k8s": {"namespace": "ml", "gpu_count": 8},
        "distributed": {"launcher": "sglang-disagg", "nnodes": nnodes, "nproc_per_node": 8},
        "env_vars": {"MODEL_PATH": "/m"},
        **extra,
    })


def test_topology_configmap_holds_topology_env_and_every_pod_reads_it():
    spec, launch, resources = build(DISAGG)
    res = by_id(resources)
    name = f"{spec.name}-topology"
    cm = res[f"k8s/ConfigMap/{name}"]
    assert cm.spec["data"] == launch.topology_env and launch.topology_env["DECODE_COUNT"] == "3"
    assert cm.spec["metadata"]["namespace"] == spec.k8s.namespace
    assert cm.spec["metadata"]["labels"]["madinfra.io/stack"] == spec.name
    workloads = [r for r in resources if r.workload]
    assert {r.role for r in workloads} == {"proxy", "prefill", "decode"}
    for workload in workloads:
        (main,) = containers(workload)
        assert main["envFrom"] == [{"configMapRef": {"name": name}}], workload.id
        assert cm.id in workload.depends_on, workload.id
        names = {entry["name"] for entry in main["env"]}
        assert not names & set(launch.topology_env), f"{workload.id} must take the topology from the ConfigMap"


def test_topology_is_in_no_pod_template_and_changes_only_the_configmap():
    """Not in env, not in a digest annotation: new topology values leave every workload as is."""
    spec = disagg_spec()
    launch = compile(spec)
    before = by_id(desired_resources(spec, launch))
    reshaped = dataclasses.replace(launch, topology_env={**launch.topology_env, "DECODE_COUNT": "9", "EXTRA": "x"})
    after = by_id(desired_resources(spec, reshaped))
    changed = {rid for rid in before if before[rid].spec != after[rid].spec}
    assert changed == {"k8s/ConfigMap/demo-topology"}
    for workload in (r for r in before.values() if r.workload):
        annotations = workload.spec["spec"]["template"]["metadata"].get("annotations", {})
        assert not any("topology" in key for key in annotations), workload.id


def test_topology_update_is_in_place():
    spec = disagg_spec()
    before = by_id(desired_resources(spec, compile(spec)))["k8s/ConfigMap/demo-topology"]
    smaller = disagg_spec(nnodes=4)
    after = by_id(desired_resources(smaller, compile(smaller)))["k8s/ConfigMap/demo-topology"]
    (change,) = plan([after], [before], None, update_rules).changes
    assert change.action == "update" and not change.reasons
    assert {f.path for f in change.fields} == {"data.DECODE_COUNT", "data.NNODES", "data.TOTAL_PODS", "data.WORLD_SIZE"}


def test_a_user_value_in_a_roles_env_still_wins_over_the_configmap():
    """Kubernetes gives ``env`` precedence over ``envFrom``: the user's own NNODES stays in env."""
    spec = disagg_spec(roles={"decode": {"env": {"NNODES": "42"}}})
    decode = by_id(desired_resources(spec, compile(spec)))["k8s/StatefulSet/demo-decode"]
    env = {e["name"]: e.get("value") for e in containers(decode)[0]["env"]}
    assert env["NNODES"] == "42" and containers(decode)[0]["envFrom"]


@pytest.mark.parametrize("launcher", ["vllm", "sglang", "torchrun"])
def test_stacks_without_topology_get_no_configmap_and_no_env_from(launcher):
    spec = resolve({"name": "demo", "k8s": {"namespace": "ml", "gpu_count": 1}, "distributed": {"launcher": launcher, "nnodes": 2, "nproc_per_node": 1}, "env_vars": {"MODEL_PATH": "/m"}})
    launch = compile(spec)
    assert launch.topology_env == {}
    resources = desired_resources(spec, launch)
    assert not any(r.kind == "k8s/ConfigMap" for r in resources)
    assert not any("envFrom" in c for r in resources if r.workload for c in containers(r))


def test_topology_name_is_scoped_by_stack_and_a_dns_label():
    very_long = "x" * 80
    assert topology_configmap_name(very_long) == dns_label(f"{very_long}-topology") and len(topology_configmap_name(very_long)) <= 63
    assert topology_configmap_name("one") != topology_configmap_name("two")
    longest = "s" * 40  # the longest stack name the loader accepts
    spec = disagg_spec(name=longest)
    assert f"k8s/ConfigMap/{longest}-topology" in by_id(desired_resources(spec, compile(spec)))
