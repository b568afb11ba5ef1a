"""Kubernetes update rules as the planner applies them (that Pulumi then takes the same step is
checked on every real apply, see test_k8s_e2e_*)."""

from __future__ import annotations

import copy

import pytest

from madinfra.config import resolve
from madinfra.launchers import compile
from madinfra.planner import plan
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.rules import update_rules

pytestmark = pytest.mark.k8s


def test_immutable_fields_named_in_the_design():
    assert {"spec.template", "spec.selector", "spec.completions", "spec.completionMode"} <= set(update_rules("k8s/Job").force_replace)
    assert {"spec.selector", "spec.volumeClaimTemplates", "spec.serviceName", "spec.podManagementPolicy"} <= set(update_rules("k8s/StatefulSet").force_replace)
    assert "spec.replicas" not in update_rules("k8s/StatefulSet").force_replace
    assert "spec.template" not in update_rules("k8s/StatefulSet").force_replace
    assert {"spec.clusterIP", "spec.externalName"} <= set(update_rules("k8s/Service").force_replace)
    assert "immutable" in update_rules("k8s/ConfigMap").force_replace


def resources(nnodes=2, launcher="sglang"):
    spec = resolve({"name": "demo", "k8s": {"gpu_count": 1}, "distributed": {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": 1}, "env_vars": {"MODEL_PATH": "/m"}})
    return {r.id: r for r in KubernetesProvider().desired(spec, compile(spec))}


def rules_for(kind):
    return update_rules(kind)


def action(before, after):
    (change,) = plan([after], [before], None, rules_for).changes
    return change.action


def test_statefulset_resize_and_template_change_are_in_place():
    small, big = resources(2), resources(3)
    sts = "k8s/StatefulSet/demo"
    assert action(small[sts], big[sts]) == "update"


def test_statefulset_service_name_and_service_cluster_ip_force_replace():
    current = resources()
    sts = current["k8s/StatefulSet/demo"]
    renamed = copy.deepcopy(sts)
    renamed.spec["spec"]["serviceName"] = "elsewhere"
    assert action(sts, renamed) == "replace"
    headless = current["k8s/Service/demo"]
    clusterip = copy.deepcopy(headless)
    del clusterip.spec["spec"]["clusterIP"]
    assert action(headless, clusterip) == "replace"
    port_change = copy.deepcopy(headless)
    port_change.spec["spec"]["ports"][0]["port"] = 31000
    assert action(headless, port_change) == "update"
