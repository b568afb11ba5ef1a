"""planner.ignore: fields a stack creates but leaves to someone else (lifecycle.ignore_changes)."""

from __future__ import annotations

import pytest

from madinfra.errors import ConfigError
from madinfra.planner.ignore import keep_live_values
from madinfra.resources import Resource


def deployment(replicas: int, image: str = "v1") -> Resource:
    return Resource("k8s/Deployment", "api", {"spec": {"replicas": replicas, "template": {"image": image}}}, gpus=8 * replicas, workload=True, role="server")


def test_the_live_value_is_kept_and_named_in_a_note() -> None:
    desired, notes = keep_live_values([deployment(2, "v2")], [deployment(5)], {"server": ["spec.replicas"]}, "stack.yaml")
    assert desired[0].spec == {"spec": {"replicas": 5, "template": {"image": "v2"}}}
    assert desired[0].gpus == 40, "the kept replicas hold the GPUs"
    assert notes == ["k8s/Deployment/api spec.replicas: the live value 5 is kept, not the stack's 2 (roles.server.ignore_changes)"]


def test_a_resource_that_does_not_exist_yet_gets_the_stacks_value() -> None:
    desired, notes = keep_live_values([deployment(2)], [], {"server": ["spec.replicas"]}, "stack.yaml")
    assert desired[0].spec["spec"]["replicas"] == 2 and notes == []


def test_the_desired_list_passed_in_is_not_changed() -> None:
    original = deployment(2)
    keep_live_values([original], [deployment(5)], {"server": ["spec.replicas"]}, "stack.yaml")
    assert original.spec["spec"]["replicas"] == 2


def test_a_path_that_names_no_field_is_an_error_listing_the_fields() -> None:
    with pytest.raises(ConfigError) as info:
        keep_live_values([deployment(2)], [deployment(5)], {"server": ["spec.replica"]}, "stack.yaml")
    (path, message), = info.value.problems
    assert path == "roles.server.ignore_changes"
    assert message.startswith("'spec.replica' names no field of the server resources (fields there: spec, spec.replicas, spec.template")
