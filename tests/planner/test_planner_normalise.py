from madinfra.planner.normalise import matches, normalise, overlaps, spec_hash
from madinfra.resources import UpdateRules


def test_server_owned_fields_none_and_empty_values_are_dropped():
    rules = UpdateRules(server_owned=("metadata.uid", "status"))
    spec = {"metadata": {"uid": "abc", "name": "x", "annotations": {}}, "status": {"phase": "Running"}, "spec": {"a": None, "b": []}}
    assert normalise(spec, rules) == {"metadata": {"name": "x"}}


def test_env_lists_ignore_order_and_are_keyed_by_name():
    one = {"spec": {"env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}}
    two = {"spec": {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}}
    assert normalise(one) == normalise(two)
    assert list(normalise(one)["spec"]["env"]) == ["[A]", "[B]"]
    assert spec_hash(one) == spec_hash(two)


def test_unordered_lists_rule_sorts_but_other_lists_keep_their_order():
    rules = UpdateRules(unordered_lists=("spec.tags",))
    assert normalise({"spec": {"tags": ["b", "a"]}}, rules) == normalise({"spec": {"tags": ["a", "b"]}}, rules)
    assert normalise({"spec": {"args": ["b", "a"]}}, rules) != normalise({"spec": {"args": ["a", "b"]}}, rules)


def test_env_list_with_duplicate_names_is_sorted_not_keyed():
    spec = {"env": [{"name": "A", "value": "2"}, {"name": "A", "value": "1"}]}
    assert normalise(spec)["env"] == [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]


def test_normalise_does_not_modify_its_input():
    spec = {"spec": {"env": [{"name": "B"}, {"name": "A"}], "x": None}}
    normalise(spec)
    assert spec == {"spec": {"env": [{"name": "B"}, {"name": "A"}], "x": None}}


def test_rule_paths_match_prefixes_and_ignore_list_positions():
    assert matches(("spec", "template", "spec", "containers", 0, "image"), ["spec.template"])
    assert matches(("spec", "env", "[A]", "value"), ["spec.env.value"])
    assert not matches(("spec", "templates"), ["spec.template"])
    assert overlaps(("spec",), ["spec.template"])
    assert not overlaps(("metadata",), ["spec.template"])


def test_spec_hash_differs_for_a_real_change():
    assert spec_hash({"a": 1}) != spec_hash({"a": 2})
    assert spec_hash({"a": 1}).startswith("sha256:")
