"""Every validation message: one problem per line, each with its field path and the fix."""

from __future__ import annotations

import pytest

from madinfra.config import disagg_split, load, resolve
from madinfra.errors import ConfigError


def problems(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        resolve(data)
    return info.value.problems


def only(data: dict) -> tuple[str, str]:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


def test_unknown_launcher_lists_valid_ones():
    path, message = only({"slurm": {}, "distributed": {"launcher": "xyz"}})
    assert path == "distributed.launcher"
    assert message == "Unknown launcher type 'xyz'. Valid launchers: torchrun, deepspeed, megatron, torchtitan, primus, vllm, sglang, sglang-disagg"


@pytest.mark.parametrize("field", ["nnodes", "nproc_per_node"])
def test_counts_must_be_positive(field):
    path, message = only({"k8s": {}, "distributed": {field: 0}} if field == "nproc_per_node" else {"k8s": {}, "distributed": {field: 0}})
    assert path == f"distributed.{field}"
    assert message == f"Invalid {field}: 0. Must be positive integer >= 1"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_master_port_range(port):
    path, message = only({"k8s": {}, "distributed": {"master_port": port}})
    assert (path, message) == ("distributed.master_port", f"Invalid master_port: {port}. Must be between 1 and 65535")


def test_disagg_needs_three_nodes():
    path, message = only({"k8s": {"gpu_count": 1}, "distributed": {"launcher": "sglang-disagg", "nnodes": 2}})
    assert path == "distributed.nnodes"
    assert message == "SGLang Disaggregated requires minimum 3 nodes (1 proxy + 1 prefill + 1 decode), got 2"


def test_disagg_custom_split_sum():
    path, message = only({"k8s": {}, "distributed": {"launcher": "sglang-disagg", "nnodes": 7, "sglang_disagg": {"prefill_nodes": 4, "decode_nodes": 3}}})
    assert path == "distributed.sglang_disagg"
    assert message == "Custom split validation failed: prefill_nodes (4) + decode_nodes (3) + 1 proxy must equal nnodes (7), but got 8"


def test_disagg_split_counts_must_be_positive():
    path, message = only({"k8s": {}, "distributed": {"launcher": "sglang-disagg", "nnodes": 5, "sglang_disagg": {"prefill_nodes": 0, "decode_nodes": 4}}})
    assert (path, message) == ("distributed.sglang_disagg.prefill_nodes", "prefill_nodes must be >= 1, got 0")
    path, message = only({"k8s": {}, "distributed": {"launcher": "sglang-disagg", "nnodes": 5, "sglang_disagg": {"prefill_nodes": 4}}})
    assert (path, message) == ("distributed.sglang_disagg.decode_nodes", "decode_nodes must be >= 1, got 0")


@pytest.mark.parametrize("nnodes,expected", [(3, (1, 1)), (5, (1, 3)), (7, (2, 4)), (11, (4, 6)), (21, (8, 12))])
def test_default_split_follows_the_formula_not_the_guides_table(nnodes, expected):
    assert disagg_split(nnodes, None, None) == expected


def test_custom_split_and_single_key_inference():
    assert disagg_split(7, 4, 2) == (4, 2)
    assert disagg_split(7, 3, None) == (3, 3)
    assert disagg_split(7, None, 5) == (1, 5)


def test_sglang_disagg_section_needs_the_disagg_launcher():
    path, message = only({"k8s": {}, "distributed": {"launcher": "vllm", "sglang_disagg": {"prefill_nodes": 1}}})
    assert path == "distributed.sglang_disagg" and "only applies to launcher 'sglang-disagg'" in message


def test_unknown_field_and_wrong_type_name_the_path():
    found = dict(problems({"slurm": {"partiton": "x", "nodes": "two"}}))
    assert "unknown field" in found["slurm.partiton"]
    assert "valid integer" in found["slurm.nodes"] and "'two'" in found["slurm.nodes"]


def test_nested_path_in_lists():
    path, message = only({"k8s": {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}})
    assert path == "k8s.tolerations.0.effect"


def test_slurm_time_format():
    path, message = only({"slurm": {"time": "1 hour"}})
    assert path == "slurm.time" and "HH:MM:SS" in message
    for good in ("00:10:00", "2-00:00:00", "30", "1:00"):
        assert resolve({"slurm": {"time": good}}).slurm.time == good


def test_nnodes_must_match_slurm_nodes():
    path, message = only({"slurm": {"nodes": 2}, "distributed": {"nnodes": 3}})
    assert path == "distributed.nnodes" and "slurm.nodes is 2" in message


def test_more_processes_than_gpus():
    path, message = only({"slurm": {"gpus_per_node": 2}, "distributed": {"nproc_per_node": 4}})
    assert path == "distributed.nproc_per_node" and "slurm.gpus_per_node is 2" in message


def test_sections_must_be_mappings():
    path, message = only({"slurm": ["debug"]})
    assert (path, message) == ("slurm", "must be a mapping, got list")


def test_bad_stack_name_and_env_names():
    found = dict(problems({"name": "Bad Name", "slurm": {}, "env_vars": {"9X": "1"}}))
    assert "not a valid stack name" in found["name"]
    assert "not a valid environment variable name" in found["env_vars.9X"]


def test_secret_needs_exactly_one_source():
    path, message = only({"slurm": {}, "secret_env": {"TOKEN": {}}})
    assert path == "secret_env.TOKEN" and "exactly one" in message


def test_role_overrides_must_name_real_roles():
    path, message = only({"k8s": {}, "distributed": {"launcher": "torchrun"}, "roles": {"decode": {"command": "x"}}})
    assert path == "roles.decode" and "valid roles: worker" in message


def test_service_section_only_for_inference():
    path, message = only({"k8s": {}, "distributed": {"launcher": "torchrun"}, "service": {"port": 8000}})
    assert path == "service"


def test_all_problems_reported_together():
    found = problems({"slurm": {"nodes": 2}, "distributed": {"launcher": "nope", "nnodes": 2, "master_port": 0}, "env_vars": {"1X": "y"}})
    paths = [p for p, _ in found]
    assert paths == ["distributed.launcher", "distributed.master_port", "env_vars.1X"]


@pytest.mark.parametrize(
    "text,suffix,expected",
    [
        ("{", ".json", "invalid JSON at line 1"),
        ("a: [", ".yaml", "invalid YAML at line"),
        ("", ".yaml", "the file is empty"),
        ("- 1\n- 2\n", ".yaml", "the file is a list"),
    ],
)
def test_unparseable_files(write_stack, text, suffix, expected):
    with pytest.raises(ConfigError, match=expected):
        load(write_stack(text, "s" + suffix))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.yaml")


def test_nul_characters_are_refused_with_their_path():
    found = dict(problems({"slurm": {}, "env_vars": {"A": "x\x00y"}, "model": {"args": ["ok", "a\x00"]}}))
    assert "NUL character" in found["env_vars.A"] and "NUL character" in found["model.args.1"]


def test_slurm_option_words_are_checked_at_validate_by_the_rule_render_uses():
    path, message = only({"slurm": {"partition": "debug; touch x"}, "distributed": {"launcher": "torchrun"}})
    assert path == "slurm.partition" and "is not a single SLURM option word" in message


@pytest.mark.parametrize("spelling", ["slurm_multi", "slurm-multi", "SLURM_MULTI"])
def test_slurm_multi_is_refused_with_what_to_use_instead(spelling):
    path, message = only({"slurm": {"nodes": 3}, "distributed": {"launcher": spelling, "nnodes": 3}})
    assert path == "distributed.launcher"
    assert message.startswith("'slurm_multi' runs a model's own .slurm script through madengine's wrapper")
    assert "set distributed.launcher to the framework the script starts" in message
    assert message.count(". ") == 0  # one sentence


def test_slurm_multi_refusal_does_not_hide_other_problems():
    found = problems({"slurm": {}, "distributed": {"launcher": "slurm_multi", "master_port": 0}})
    assert [p for p, _ in found] == ["distributed.launcher", "distributed.master_port"]


def test_primus_settings_are_checked_field_by_field():
    path, message = only({"k8s": {}, "distributed": {"launcher": "primus", "primus": {"config_path": "a.yaml", "cli_extras": "--x"}}})
    assert path == "distributed.primus.cli_extras"
    assert message.startswith("unknown field")
    path, _ = only({"k8s": {}, "distributed": {"launcher": "primus", "primus": {"backend": 3}}})
    assert path == "distributed.primus.backend"


DISAGG = {"slurm": {}, "distributed": {"launcher": "sglang-disagg", "nnodes": 4}}


def test_rollout_settings_reach_each_pool_with_the_role_winning():
    from madinfra.rollout import limits_for

    spec = resolve({**DISAGG, "service": {"rollout": {"max_surge": 2}}, "roles": {"decode": {"rollout": {"max_surge": 0, "max_unavailable": 3}}}})
    assert (limits_for(spec, "prefill").max_surge, limits_for(spec, "prefill").max_unavailable) == (2, 1)
    assert (limits_for(spec, "decode").max_surge, limits_for(spec, "decode").max_unavailable) == (0, 3)


def test_rollout_on_a_role_that_is_not_a_pool_is_refused():
    path, message = only({**DISAGG, "roles": {"proxy": {"rollout": {"max_surge": 1}}}})
    assert path == "roles.proxy.rollout"
    assert message == "'proxy' is not a pool of independent replicas (pools: prefill, decode); remove it"


def test_rollout_on_a_stack_without_pools_is_refused():
    path, message = only({"slurm": {}, "distributed": {"launcher": "vllm", "nnodes": 2}, "service": {"rollout": {"max_surge": 1}}})
    assert path == "service.rollout"
    assert "this stack has none, so remove it" in message


def test_multi_node_vllm_on_kubernetes_is_a_pool():
    spec = resolve({"k8s": {}, "distributed": {"launcher": "vllm", "nnodes": 2}, "roles": {"server": {"rollout": {"max_surge": 0}}}})
    assert spec.roles["server"].rollout.max_surge == 0


def test_a_rollout_that_could_never_move_is_refused():
    path, message = only({**DISAGG, "service": {"rollout": {"max_surge": 0, "max_unavailable": 0}}})
    assert path == "service.rollout"
    assert message == "max_surge and max_unavailable are both 0, so no replica could ever be changed; set one of them to at least 1"


def test_negative_rollout_numbers_are_refused():
    path, _ = only({**DISAGG, "service": {"rollout": {"max_surge": -1}}})
    assert path == "service.rollout.max_surge"


def test_a_negative_gpu_hour_price_is_refused():
    path, _ = only({"slurm": {}, "cost": {"gpu_hour_price": -1}})
    assert path == "cost.gpu_hour_price"


def test_a_disaggregated_pool_size_cannot_be_ignored():
    path, message = only({**DISAGG, "roles": {"decode": {"ignore_changes": ["spec.replicas"]}}})
    assert path == "roles.decode.ignore_changes" and message.endswith("change distributed.sglang_disagg instead")
