"""What reaches the pods about who they are: Deployment pods are independent replicas (rank 0
of a one-node world), StatefulSet pods are ranks found from their ordinal and the topology."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest
from k8s_support import build

from madinfra.config import resolve
from madinfra.launchers import compile
from madinfra.launchers.common import CD_WORKDIR
from madinfra.naming import pod_dns
from madinfra.planner import diff_specs, normalise
from madinfra_kubernetes.identity import independent_replica
from madinfra_kubernetes.manifests import desired_resources
from madinfra_kubernetes.rules import update_rules

pytestmark = pytest.mark.k8s

DEPLOYMENT_POD = "7d9f8c6b5-x7k2p"
"""The suffix a ReplicaSet gives its pods: what ``${HOSTNAME##*-}`` would read there."""


def spec_of(launcher, nnodes, name="demo", **extra):
    raw = {
        "name": name,
        "k8s": {"namespace": "ml", "gpu_count": 8},
        "distributed": {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": 8},
        "env_vars": {"MODEL_PATH": "/m"},
    }
    raw.update(extra)
    return resolve(raw)


def resources_of(spec):
    return {r.id: r for r in desired_resources(spec, compile(spec))}


def main_container(resource):
    return resource.spec["spec"]["template"]["spec"]["containers"][0]


def literal_env(resource) -> dict[str, str]:
    return {e["name"]: e["value"].replace("$$", "$") for e in main_container(resource)["env"] if "value" in e}


def pod_view(resource, hostname: str, configmap: dict[str, str] | None = None) -> dict[str, str]:
    """Run the container's script up to the launcher's command in bash, the way kubelet starts
    it (envFrom first, env over it, ``$$`` unescaped), and return what the command would see."""
    script = main_container(resource)["command"][2].replace("$$", "$")
    preamble = script.split(CD_WORKDIR)[0]
    names = ("NODE_RANK", "RANK", "POD_INDEX", "MASTER_ADDR", "NNODES", "WORLD_SIZE")
    probe = preamble + "\n" + "; ".join(f'echo "{n}=${{{n}-<unset>}}"' for n in names)
    env = {"PATH": os.environ["PATH"], **(configmap or {}), **literal_env(resource), "HOSTNAME": hostname, "POD_IP": "10.1.2.3"}
    out = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_no_deployment_pod_reads_its_index_or_a_peer_dns_name(stack_file):
    _, _, resources = build(stack_file)
    for deployment in (r for r in resources if r.kind == "k8s/Deployment"):
        container = main_container(deployment)
        assert "HOSTNAME##*-" not in container["command"][2], deployment.id
        env = literal_env(deployment)
        assert all(env.get(name, "0").isdigit() for name in ("NODE_RANK", "RANK", "POD_INDEX")), deployment.id
        assert ".svc.cluster.local" not in env.get("MASTER_ADDR", ""), deployment.id


def test_vllm_replicas_are_each_rank_0_of_a_one_node_world():
    resources = resources_of(spec_of("vllm", 3))
    deployment = resources["k8s/Deployment/demo"]
    seen = pod_view(deployment, f"demo-{DEPLOYMENT_POD}")
    assert seen == {"NODE_RANK": "0", "RANK": "0", "POD_INDEX": "<unset>", "MASTER_ADDR": "localhost", "NNODES": "1", "WORLD_SIZE": "1"}
    assert deployment.spec["spec"]["replicas"] == 3
    assert "ray start --head" in main_container(deployment)["command"][2]


def test_scaling_vllm_replicas_changes_only_the_replica_count():
    rules = update_rules("k8s/Deployment")
    before = resources_of(spec_of("vllm", 2))["k8s/Deployment/demo"]
    after = resources_of(spec_of("vllm", 3))["k8s/Deployment/demo"]
    diffs = diff_specs(normalise(before.spec, rules), normalise(after.spec, rules))
    assert [(d.path, d.before, d.after) for d in diffs] == [(("spec", "replicas"), 2, 3)]


def test_disaggregated_proxy_is_rank_0_and_reads_the_stack_shape_from_the_configmap():
    spec = spec_of("sglang-disagg", 5)
    launch = compile(spec)
    proxy = resources_of(spec)["k8s/Deployment/demo-proxy"]
    seen = pod_view(proxy, f"demo-proxy-{DEPLOYMENT_POD}", launch.topology_env)
    assert seen == {"NODE_RANK": "0", "RANK": "0", "POD_INDEX": "0", "MASTER_ADDR": "localhost", "NNODES": "5", "WORLD_SIZE": "5"}


def test_pool_pods_compute_their_global_rank_from_ordinal_and_topology():
    spec = spec_of("sglang-disagg", 5)
    launch = compile(spec)
    resources = resources_of(spec)
    decode = pod_view(resources["k8s/StatefulSet/demo-decode"], "demo-decode-1", launch.topology_env)
    assert decode["NODE_RANK"] == decode["RANK"] == decode["POD_INDEX"] == "3"  # proxy 0, prefill 1, decode 2..4
    assert decode["MASTER_ADDR"] == pod_dns("demo", "decode", 0, "ml") and decode["NNODES"] == "5"
    prefill = pod_view(resources["k8s/StatefulSet/demo-prefill"], "demo-prefill-0", launch.topology_env)
    assert prefill["NODE_RANK"] == "1"


def test_one_pod_statefulset_names_its_master_by_dns_so_growing_keeps_the_template():
    resources = resources_of(spec_of("sglang-disagg", 4))  # 1 prefill, 2 decode
    prefill = resources["k8s/StatefulSet/demo-prefill"]
    assert literal_env(prefill)["MASTER_ADDR"] == pod_dns("demo", "prefill", 0, "ml")
    assert resources["k8s/Service/demo-prefill"].spec["spec"]["clusterIP"] == "None"
    single = resources_of(spec_of("sglang", 1))["k8s/StatefulSet/demo"]
    assert literal_env(single)["MASTER_ADDR"] == pod_dns("demo", "server", 0, "ml")


def test_values_the_user_set_for_the_role_are_kept():
    spec = spec_of("vllm", 2, roles={"server": {"env": {"NODE_RANK": "7", "MASTER_ADDR": "head.example", "NNODES": "2"}}})
    env = literal_env(resources_of(spec)["k8s/Deployment/demo"])
    assert (env["NODE_RANK"], env["MASTER_ADDR"], env["NNODES"], env["RANK"], env["WORLD_SIZE"]) == ("7", "head.example", "2", "0", "1")
    sglang = spec_of("sglang", 1, roles={"server": {"env": {"MASTER_ADDR": "localhost"}}})
    assert literal_env(resources_of(sglang)["k8s/StatefulSet/demo"])["MASTER_ADDR"] == "localhost"


def test_independent_replica_rewrites_index_expressions_anywhere_in_the_role():
    role = compile(spec_of("vllm", 2)).role("server")
    tricky = dataclasses.replace(role, command='echo "${HOSTNAME##*-}"', runtime_env=(("SHARD", "$(( 4 * ${HOSTNAME##*-} ))"),))
    fitted = independent_replica(tricky, "demo", "ml")
    assert fitted.command == 'echo "0"' and fitted.runtime_env == (("SHARD", "$(( 4 * 0 ))"),)
