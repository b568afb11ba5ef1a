"""Settings madengine has and madinfra does not carry out are refused at validate, each with its
field and what to do instead; their defaults still load (every madengine context JSON does)."""

from __future__ import annotations

import pytest

from madinfra.config import resolve
from madinfra.errors import ConfigError


def problems(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        resolve(data)
    return info.value.problems


def k8s(**fields) -> dict:
    return {"k8s": fields, "distributed": {"launcher": "torchrun"}}


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"slurm": {}, "tools": [{"name": "rocprof"}]}, "tools", "not supported by madinfra"),
        ({"slurm": {}, "pre_scripts": [{"path": "a.sh"}]}, "pre_scripts", "run them from your model.script"),
        ({"k8s": {}, "post_scripts": [{"path": "b.sh"}]}, "post_scripts", "run them from your model.script"),
        (k8s(allow_privileged_profiling=True), "k8s.allow_privileged_profiling", "profiling tools"),
        (k8s(local_path_storage_class="local"), "k8s.local_path_storage_class", "set k8s.storage_class"),
        (k8s(recreate_shared_data_pvc=True), "k8s.recreate_shared_data_pvc", "never deletes a data volume"),
        (k8s(results_storage_size="50Gi"), "k8s.results_storage_size", "set k8s.storage_class"),
        (k8s(data_storage_size="1Ti"), "k8s.data_storage_size", "set k8s.data_storage_class"),
        (k8s(results_pvc="mine", storage_class="fast"), "k8s.results_pvc", "remove one of"),
        (k8s(secrets={"runtime_secret_name": "creds"}), "k8s.secrets.runtime_secret_name", "strategy: existing"),
    ],
)
def test_each_unsupported_setting_is_refused_with_its_field(data, field, words):
    found = problems(data)
    assert [p for p in found if p[0] == field], found
    assert words in dict(found)[field]


def test_defaults_and_the_supported_forms_load():
    spec = resolve(k8s(storage_class="fast", results_storage_size="50Gi", secrets={"strategy": "existing", "runtime_secret_name": "creds"}))
    assert spec.k8s.storage_class == "fast" and spec.k8s.secrets.runtime_secret_name == "creds"
    assert resolve({"k8s": {}}).k8s.storage_class is None, "madengine's site-specific nfs-banff class is not a default"
