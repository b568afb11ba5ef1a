"""Desired manifests in the API server's own spelling. The table below is what kube-apiserver
answers for each input (k8s.io/apimachinery resource.Quantity); test_k8s_e2e_live checks the
same rule against the real server for many random quantities."""

from __future__ import annotations

import pytest

from madinfra.errors import MadinfraError
from madinfra_kubernetes.canonical import canonical_manifest, canonical_quantity

pytestmark = pytest.mark.k8s


@pytest.mark.parametrize(
    "given, server",
    [
        ("0.5", "500m"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1.5Ki", "1536"),
        ("1Ki", "1Ki"),
        ("1023", "1023"),
        (8, "8"),
        ("2000m", "2"),
        ("1500m", "1500m"),
        ("1.5", "1500m"),
        ("100000", "100k"),
        ("1e3", "1e3"),
        ("0.1", "100m"),
        ("0.0000000001", "1n"),
        ("64Gi", "64Gi"),
        ("0", "0"),
        # kept as written: apimachinery reuses text already in a form it accepts as canonical
        ("2E6", "2E6"),
        ("1.500", "1.500"),
        ("1025Mi", "1025Mi"),
        ("007", "007"),
    ],
)
def test_quantities_are_written_as_the_server_returns_them(given, server):
    assert canonical_quantity(given) == server


def test_a_bad_quantity_names_where_it_is():
    with pytest.raises(MadinfraError, match=r"spec.cpu: '2 cores' is not a Kubernetes quantity"):
        canonical_quantity("2 cores", "spec.cpu")
    with pytest.raises(MadinfraError, match="unknown suffix 'mi'"):
        canonical_quantity("3mi")


def test_resource_lists_are_rounded_up_to_milli_units_first():
    """The server's defaulting of a ResourceList (requests, limits, PVC storage) rounds up."""
    assert canonical_quantity("7.1u", resource_list=True) == "1m"
    assert canonical_quantity("3.02889E0", resource_list=True) == "3029e-3"
    assert canonical_quantity("600.88378Mi", resource_list=True) == "630072310498m"
    assert canonical_quantity("7.1u") == "7100n"
    assert canonical_quantity("9668887Ti") == "9223372036854775807", "binary quantities are capped at the int64 maximum"


def test_empty_strings_go_from_struct_fields_but_stay_in_maps():
    manifest = {
        "metadata": {"labels": {"team": ""}, "annotations": {"note": ""}},
        "data": {"empty.sh": ""},
        "spec": {"containers": [{"name": "c", "env": [{"name": "EMPTY", "value": ""}], "args": [""], "resources": {"requests": {"cpu": "0.5"}}}]},
    }
    out = canonical_manifest(manifest)
    assert out["metadata"] == {"labels": {"team": ""}, "annotations": {"note": ""}}
    assert out["data"] == {"empty.sh": ""}
    container = out["spec"]["containers"][0]
    assert container["env"] == [{"name": "EMPTY"}] and container["args"] == [""]
    assert container["resources"]["requests"]["cpu"] == "500m"
    assert manifest["spec"]["containers"][0]["env"][0]["value"] == "", "the input is not modified"
