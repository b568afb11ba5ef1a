from madinfra.planner.diff import ABSENT, diff_specs, flatten, format_path
from madinfra.planner.normalise import normalise


def paths(diffs):
    return {format_path(d.path): (d.before, d.after) for d in diffs}


def test_values_added_removed_and_changed_are_named_by_path():
    before = {"spec": {"replicas": 2, "old": "x"}}
    after = {"spec": {"replicas": 4, "new": {"deep": True}}}
    assert paths(diff_specs(before, after)) == {
        "spec.replicas": (2, 4),
        "spec.old": ("x", ABSENT),
        "spec.new": (ABSENT, {"deep": True}),
    }


def test_equal_specs_have_no_diff():
    assert diff_specs({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []


def test_list_length_change_is_reported_once_as_the_whole_list():
    diffs = paths(diff_specs({"args": [1, 2]}, {"args": [3, 2, 5]}))
    assert diffs == {"args": ([1, 2], [3, 2, 5])}


def test_same_length_list_reports_the_element():
    assert paths(diff_specs({"c": [{"image": "a"}]}, {"c": [{"image": "b"}]})) == {"c[0].image": ("a", "b")}


def test_env_change_names_the_variable():
    before = normalise({"spec": {"env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}})
    after = normalise({"spec": {"env": [{"name": "NCCL_DEBUG", "value": "WARN"}]}})
    assert paths(diff_specs(before, after)) == {"spec.env[NCCL_DEBUG].value": ("INFO", "WARN")}


def test_type_change_is_a_change():
    assert paths(diff_specs({"port": 80}, {"port": "80"})) == {"port": (80, "80")}


def test_keys_with_dots_are_quoted():
    assert format_path(("metadata", "labels", "app.kubernetes.io/name")) == 'metadata.labels["app.kubernetes.io/name"]'
    assert format_path(("a", 0, "b")) == "a[0].b"


def test_flatten_lists_leaves_and_skips_the_redundant_item_name():
    spec = normalise({"spec": {"nodes": 2, "env": [{"name": "A", "value": "1"}]}})
    assert {format_path(d.path): d.after for d in flatten(spec)} == {"spec.nodes": 2, "spec.env[A].value": "1"}
