"""The Pulumi program under Pulumi's official mocks: what only a unit test can see cheaply
(Secret data marked as a Pulumi secret, URNs). What the program does is proven end to end
against the real engine and API server (test_k8s_e2e_*)."""

from __future__ import annotations

import asyncio
import base64

import pulumi
import pytest
from k8s_support import launch_plan, role

from madinfra.config import resolve
from madinfra_kubernetes.manifests import desired_resources
from madinfra_kubernetes.program import (
    KubeSettings,
    program_manifest,
    provider_urn,
    register_resources,
    resource_id_from_urn,
    resource_urn,
)

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

