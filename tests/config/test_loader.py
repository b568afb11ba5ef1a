"""Loading stack files: formats, madengine compatibility, target inference and aliases."""

from __future__ import annotations

import json

import pytest

from madinfra.config import load, resolve
from madinfra.errors import ConfigError
from tests_support import REFERENCE_EXAMPLES  # noqa: F401  (see conftest: provides the path)


def test_madengine_reference_examples_load_as_is():
    for path in sorted(REFERENCE_EXAMPLES.glob("*.json")):
        spec = load(path)
        assert spec.target == ("k8s" if path.name.startswith("k8s") else "slurm"), path


def test_yaml_and_json_give_the_same_stack(write_stack):
    data = {"name": "demo", "slurm": {"partition": "debug", "gpus_per_node": 2}, "distributed": {"launcher": "torchrun", "nnodes": 2}}
    from_json = load(write_stack(data, "a.json"))
    import yaml

    from_yaml = load(write_stack(yaml.safe_dump(data), "a.yaml"))
    assert from_json == from_yaml


def test_stack_name_defaults_to_sanitised_file_stem(write_stack):
    spec = load(write_stack({"slurm": {}}, "My_Model.Run.json"))
    assert spec.name == "my-model-run"


def test_comment_keys_are_dropped_at_every_level():
    spec = resolve({"_comment": "x", "slurm": {"_note": "y", "partition": "debug"}, "distributed": {"_c": 1}})
    assert spec.slurm.partition == "debug"


def test_kubernetes_key_is_k8s_and_both_targets_conflict():
    assert resolve({"kubernetes": {"namespace": "ml"}}).k8s.namespace == "ml"
    with pytest.raises(ConfigError, match="Conflicting deployment configuration: Both 'k8s' and 'slurm' fields present"):
        resolve({"k8s": {}, "slurm": {}})


def test_no_target_is_an_error_and_target_field_selects_defaults():
    with pytest.raises(ConfigError, match="no deployment target"):
        resolve({"distributed": {"launcher": "torchrun"}})
    assert resolve({"target": "slurm"}).slurm.partition == "amd-rccl"


def test_target_option_must_agree_with_the_file(write_stack):
    path = write_stack({"distributed": {"launcher": "vllm"}}, "t.json")
    assert load(path, target="k8s").target == "k8s"
    with pytest.raises(ConfigError, match="is 'k8s' but the file has a 'slurm' section"):
        load(write_stack({"slurm": {}}, "u.json"), target="k8s")


@pytest.mark.parametrize("name,canonical", [("megatron", "megatron"), ("megatron-lm", "megatron"), ("Megatron-LM", "megatron"), ("sglang_disagg", "sglang-disagg"), ("SGLANG-DISAGG", "sglang-disagg")])
def test_launcher_aliases(name, canonical):
    spec = resolve({"slurm": {"nodes": 3}, "distributed": {"launcher": name}})
    assert spec.distributed.launcher == canonical


def test_master_port_is_honoured_and_port_is_its_slurm_alias():
    assert resolve({"slurm": {}, "distributed": {"master_port": 23456}}).distributed.master_port == 23456
    assert resolve({"slurm": {}, "distributed": {"port": 23457}}).distributed.master_port == 23457
    assert resolve({"k8s": {}, "launcher": {"type": "torchrun", "master_port": 23458}}).distributed.master_port == 23458


def test_context_env_vars_are_honoured_under_env_vars():
    spec = resolve({"k8s": {}, "context": {"env_vars": {"A": "1"}}, "env_vars": {"B": "2"}})
    assert spec.env_vars["A"] == "1" and spec.env_vars["B"] == "2"


def test_yaml_scalars_become_env_strings(write_stack):
    spec = load(write_stack("slurm: {}\nenv_vars:\n  OMP_NUM_THREADS: 4\n  FLAG: true\n  RATIO: 0.5\n"))
    assert spec.env_vars["OMP_NUM_THREADS"] == "4" and spec.env_vars["FLAG"] == "true" and spec.env_vars["RATIO"] == "0.5"


def test_native_fields(write_stack):
    spec = load(write_stack(
        "name: llama-serve\nslurm: {partition: debug, gpus_per_node: 4, container: apptainer}\n"
        "model: {image: img, model_path: /models/llama, script: serve.sh, args: ['--x', '1']}\n"
        "distributed: {launcher: vllm}\nservice: {port: 8001}\n"
        "secret_env: {HF_TOKEN: {from_env: HF_TOKEN}}\nroles: {server: {command: 'sleep 1'}}\n"
    ))
    assert spec.name == "llama-serve" and spec.is_service and spec.service.port == 8001
    assert spec.model.args == ["--x", "1"] and spec.roles["server"].command == "sleep 1"
    assert spec.secret_env["HF_TOKEN"].from_env == "HF_TOKEN"
    assert spec.slurm.container.runtime == "apptainer"


def test_empty_sections_mean_defaults():
    spec = resolve({"slurm": None, "distributed": None, "env_vars": None})
    assert spec.slurm.partition == "amd-rccl" and spec.distributed.nnodes == 1


def test_a_billion_laughs_file_is_refused_before_it_is_expanded(tmp_path):
    """Nine aliases of nine aliases...: 9^9 values from ten lines. The expanded size is
    counted on the node graph, so validate refuses it in a small, fixed amount of memory."""
    import resource

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines + ["k8s: {}"]) + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="expands to more than 100,000 values through YAML aliases"):
        load(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000, "KB: the tree must not be expanded"
    small = tmp_path / "anchors.yaml"
    small.write_text("common: &env {A: '1'}\nenv_vars: *env\nk8s: {}\n")
    with pytest.raises(ConfigError, match="common"):
        load(small)  # a small alias loads fine; the unknown top-level key is the only problem
