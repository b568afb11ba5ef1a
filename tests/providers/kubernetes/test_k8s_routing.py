"""Who carries out each planned change (Pulumi or the Kubernetes API) and which step Pulumi must
take, from what Pulumi's own state knows."""

from __future__ import annotations

import json

import pytest

from madinfra.resources import Change, Resource
from madinfra_kubernetes.pulumi_state import KnownObject, known_objects
from madinfra_kubernetes.routing import API_DELETE, API_DELETE_THEN_PULUMI, PULUMI, disagreements, pulumi_must_diff, route

pytestmark = pytest.mark.k8s

RID = "k8s/Deployment/web"


def live(namespace: str = "ml") -> Resource:
    return Resource("k8s/Deployment", "web", {"metadata": {"name": "web", "namespace": namespace}})


KNOWN = {RID: KnownObject(RID, f"urn:pulumi:s::madinfra::kubernetes:apps/v1:Deployment::{RID}", "ml/web")}


@pytest.mark.parametrize(
    "action, known, how, pulumi",
    [
        ("create", {}, PULUMI, "create"),
        ("update", KNOWN, PULUMI, "update"),
        ("update", {}, PULUMI, "create"),  # server-side apply adopts the live object in place
        ("replace", KNOWN, PULUMI, "replace"),
        ("replace", {}, API_DELETE_THEN_PULUMI, "create"),
        ("delete", KNOWN, PULUMI, "delete"),
        ("delete", {}, API_DELETE, None),
    ],
)
def test_routes(action, known, how, pulumi):
    current = None if action == "create" else live()
    desired = None if action == "delete" else live()
    chosen = route(Change(action, RID, desired, current), known)
    assert (chosen.how, chosen.pulumi_action) == (how, pulumi)


def test_an_object_pulumi_knows_in_another_namespace_is_not_the_live_one():
    change = Change("delete", RID, None, live("team-b"))
    assert route(change, KNOWN).how == API_DELETE


def test_plan_notes_say_where_pulumi_and_the_cluster_disagree():
    notes = disagreements([Change("update", RID, live(), live())], {}, [live()])
    assert notes == [f"{RID} exists on the cluster but not in Pulumi's state (applied from another directory or machine, or the state was lost); apply adopts it in place"]
    stale = disagreements([], KNOWN, [])
    assert stale == [f"Pulumi's state lists {RID} as ml/web, which is not on the cluster; apply forgets it (refresh)"]
    assert disagreements([Change("update", RID, live(), live())], KNOWN, [live()]) == []


def test_pulumi_state_is_read_from_the_file_backend_checkpoint(tmp_path):
    base = tmp_path / "pulumi" / "state" / ".pulumi" / "stacks" / "madinfra"
    base.mkdir(parents=True)
    checkpoint = {
        "version": 3,
        "checkpoint": {
            "latest": {
                "resources": [
                    {"urn": "urn:pulumi:s::madinfra::pulumi:pulumi:Stack::madinfra-s", "type": "pulumi:pulumi:Stack"},
                    {"urn": "urn:pulumi:s::madinfra::pulumi:providers:kubernetes::madinfra-k8s", "type": "pulumi:providers:kubernetes", "id": "x"},
                    {"urn": KNOWN[RID].urn, "type": "kubernetes:apps/v1:Deployment", "id": "ml/web"},
                    {"urn": "urn:pulumi:s::madinfra::kubernetes:core/v1:Service::k8s/Service/web", "type": "kubernetes:core/v1:Service", "id": "ml/web", "delete": True},
                ]
            }
        },
    }
    (base / "s.json").write_text(json.dumps(checkpoint))
    assert known_objects(tmp_path, "s") == KNOWN
    assert known_objects(tmp_path, "other") == {}


def test_pulumi_is_refreshed_and_previewed_only_where_its_diff_decides_the_step():
    create, delete = Change("create", RID, live(), None), Change("delete", RID, None, live())
    update = Change("update", RID, live(), live())
    assert not pulumi_must_diff([create], {}) and not pulumi_must_diff([delete], KNOWN)
    assert pulumi_must_diff([update], KNOWN) and not pulumi_must_diff([update], {}), "an adoption is always a create"
    assert pulumi_must_diff([create], KNOWN), "a stale entry must be refreshed away first"
