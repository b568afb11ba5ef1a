"""The Pulumi program, run under Pulumi's official mocks, for every K8s example and stack."""

from __future__ import annotations

import asyncio
import base64

import pulumi
import pytest
from k8s_support import ROOT, build, launch_plan, role

from madinfra.config import resolve
from providers.kubernetes.manifests import desired_resources
from providers.kubernetes.program import (
    PROVIDER_NAME,
    SKIP_AWAIT,
    KubeSettings,
    registration_order,
    build_program,
    program_manifest,
    provider_urn,
    register_resources,
    resource_id_from_urn,
    resource_urn,
    type_token,
)
from providers.kubernetes.rules import update_rules

pytestmark = pytest.mark.k8s

SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"
"""How Pulumi marks a secret value on the wire (pulumi.runtime.rpc._special_sig_key)."""


class Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.created: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.created.append(args)
        return [f"{args.name}-id", dict(args.inputs)]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@pytest.fixture(autouse=True)
def event_loop_for_pulumi():
    """Pulumi's mocks use the thread's current event loop; async tests elsewhere may unset it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def run(monkeypatch):
    """Run ``register_resources`` under mocks; returns (mock records, options by name, objects)."""

    def _run(resources, kube=KubeSettings(), secrets=None, probe=None):
        mocks = Recorder()
        pulumi.runtime.set_mocks(mocks, preview=False)
        options: list[dict] = []
        real = pulumi.ResourceOptions

        class Spy(real):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                if "replace_on_changes" in kwargs:
                    options.append(kwargs)

        monkeypatch.setattr(pulumi, "ResourceOptions", Spy)
        seen: dict = {}

        @pulumi.runtime.test
        def program():
            objects = register_resources(resources, kube, secrets or {})
            seen.update(objects)
            outputs = [o.urn for o in objects.values()]
            if probe is not None:
                outputs.append(probe(objects))
            return pulumi.Output.all(*outputs)

        program()
        return mocks.created, options, seen

    return _run


def test_program_creates_one_typed_object_per_resource_with_manifest_inputs(stack_file, run):
    _, _, resources = build(stack_file)
    created, options, _ = run(resources, KubeSettings(kubeconfig="/tmp/kc", context="lab"))
    providers = [a for a in created if a.typ == "pulumi:providers:kubernetes"]
    assert [(p.name, p.inputs.get("context"), p.inputs.get("kubeconfig")) for p in providers] == [(PROVIDER_NAME, "lab", "/tmp/kc")]
    objects = {a.name: a for a in created if a.typ != "pulumi:providers:kubernetes"}
    assert set(objects) == {r.id for r in resources}
    by_id = {r.id: r for r in resources}
    for name, args in objects.items():
        resource = by_id[name]
        assert args.typ == type_token(resource.kind)
        expected = program_manifest(resource, {})
        assert args.inputs["apiVersion"] == expected["apiVersion"] and args.inputs["kind"] == expected["kind"]
        assert args.inputs["metadata"] == expected["metadata"]
        assert args.inputs["metadata"]["annotations"][SKIP_AWAIT] == "true"
        for key, value in expected.items():
            if key not in ("apiVersion", "kind", "metadata"):
                assert args.inputs[key] == value, (name, key)
    assert len(options) == len(resources)
    assert all(opts["delete_before_replace"] is True for opts in options)
    by_rules = sorted(tuple(o["replace_on_changes"]) for o in options)
    assert by_rules == sorted(tuple(update_rules(r.kind).force_replace) for r in resources)


def test_dependencies_are_registered_first_and_passed_as_depends_on(run):
    spec = resolve({"name": "demo", "k8s": {"gpu_count": 1}, "distributed": {"launcher": "torchrun", "nnodes": 2}})
    resources = desired_resources(spec, launch_plan("demo", (role(nodes=2, gpus=1),)))
    resources = list(reversed(resources))  # Job first: the program must still register the Service before it
    created, options, objects = run(resources)
    names = [a.name for a in created if a.typ != "pulumi:providers:kubernetes"]
    assert names.index("k8s/Service/demo") < names.index("k8s/Job/demo")
    job_opts = next(o for o in options if o["replace_on_changes"] == list(update_rules("k8s/Job").force_replace))
    assert job_opts["depends_on"] == [objects["k8s/Service/demo"]]
    assert "spec.template" in job_opts["replace_on_changes"]


def test_outputs_read_back_in_snake_case(run):
    spec = resolve({"name": "demo", "k8s": {"gpu_count": 1}, "distributed": {"launcher": "torchrun", "nnodes": 2}})
    resources = desired_resources(spec, launch_plan("demo", (role(nodes=2, gpus=1),)))
    got: dict = {}

    def probe(objects):
        return objects["k8s/Job/demo"].spec.apply(lambda s: got.update(mode=s["completion_mode"], restart=s["template"]["spec"]["restart_policy"]))

    run(resources, probe=probe)
    assert got == {"mode": "Indexed", "restart": "Never"}


def test_secret_values_reach_only_the_program(run, monkeypatch):
    monkeypatch.setenv("TOKEN_SRC", "s3cr3t-value")
    spec = resolve({"name": "demo", "k8s": {"gpu_count": 1}, "distributed": {"launcher": "torchrun"}, "secret_env": {"TOKEN": {"from_env": "TOKEN_SRC"}}})
    resources = desired_resources(spec, launch_plan("demo", (role(gpus=1),)))
    secret = next(r for r in resources if r.kind == "k8s/Secret")
    assert "s3cr3t-value" not in repr(secret.spec)
    created, _, _ = run(resources, secrets={"TOKEN": "s3cr3t-value"})
    args = next(a for a in created if a.name == secret.id)
    data = args.inputs["data"]
    assert data[SECRET_SIG] == SECRET_SIG_VALUE, "Secret data must be a Pulumi secret"
    assert base64.b64decode(data["value"]["TOKEN"]).decode() == "s3cr3t-value"
    with pytest.raises(KeyError):
        program_manifest(secret, {})


def test_urns_map_back_to_resource_ids():
    urn = resource_urn("demo", "k8s/StatefulSet/demo-prefill")
    assert urn == "urn:pulumi:demo::madinfra::kubernetes:apps/v1:StatefulSet::k8s/StatefulSet/demo-prefill"
    assert resource_id_from_urn(urn) == "k8s/StatefulSet/demo-prefill"
    assert provider_urn("demo").endswith("::pulumi:providers:kubernetes::madinfra-k8s")


def test_build_program_is_a_callable_that_registers_everything(run, monkeypatch):
    spec = resolve({"name": "demo", "k8s": {"gpu_count": 1}, "distributed": {"launcher": "torchrun"}})
    resources = desired_resources(spec, launch_plan("demo", (role(gpus=1),)))
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, preview=False)
    program = build_program(resources, KubeSettings(), {})

    @pulumi.runtime.test
    def go():
        program()

    go()
    assert {a.name for a in mocks.created} == {PROVIDER_NAME, "k8s/Job/demo"}


def test_disaggregated_stack_registers_topology_first_and_pools_in_rollout_order(run):
    """Pulumi gets the order as depends_on: topology before every pod, prefill -> decode -> proxy."""
    _, _, resources = build(ROOT / "stacks" / "k8s" / "sglang-disagg.yaml")
    created, options, objects = run(resources)
    names = [a.name for a in created if a.typ != "pulumi:providers:kubernetes"]
    stack = "llama70b-disagg-k8s"
    topology, prefill, decode, proxy = (f"k8s/ConfigMap/{stack}-topology", f"k8s/StatefulSet/{stack}-prefill", f"k8s/StatefulSet/{stack}-decode", f"k8s/Deployment/{stack}-proxy")
    assert names.index(topology) < names.index(prefill) < names.index(decode) < names.index(proxy)
    by_name = {a.name: a for a in created}
    assert by_name[topology].inputs["data"]["DECODE_COUNT"] == "3"
    for workload in (prefill, decode, proxy):
        assert by_name[workload].inputs["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"configMapRef": {"name": f"{stack}-topology"}}]
    id_of = {id(obj): rid for rid, obj in objects.items()}
    registered = [r.id for r in registration_order(resources)]  # the order ResourceOptions are built in
    depends_on = {rid: [id_of[id(o)] for o in opts["depends_on"]] for rid, opts in zip(registered, options)}
    assert depends_on[decode] == [topology, f"k8s/Service/{stack}-decode", prefill]
    assert depends_on[proxy] == [topology, prefill, decode]
    assert depends_on[prefill] == [topology, f"k8s/Service/{stack}-prefill"]
