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
        ({"slurm": {}, "guest_os": "CENTOS"}, "guest_os", "runs model.image as given"),
        ({**k8s(), "shared_data": "/datasets"}, "shared_data", "set k8s.data_pvc"),
        ({"slurm": {}, "shared_data": "datasets"}, "shared_data", "must be an absolute path"),
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


# -- SLURM ---------------------------------------------------------------------------------


def slurm(**fields) -> dict:
    return {"slurm": fields, "distributed": {"launcher": "torchrun"}}


def service_on_slurm(**health) -> dict:
    return {"slurm": {}, "distributed": {"launcher": "vllm"}, "service": {"port": 8000, "health_check": health}}


@pytest.mark.parametrize(
    "data, field, words",
    [
        (slurm(output_dir="./results"), "slurm.output_dir", "set slurm.remote_dir or slurm.shared_workspace"),
        (slurm(output_dir="/scratch/logs"), "slurm.output_dir", "logs/<job name>_<job id>.out"),
        (slurm(auto_cleanup_nodes=True), "slurm.auto_cleanup_nodes", "runs no node preflight"),
        (slurm(verbose_node_check=True), "slurm.verbose_node_check", "runs no node preflight"),
        (slurm(network_interface=""), "slurm.network_interface", "not a network interface name"),
        (slurm(network_interface="ib0 ib1"), "slurm.network_interface", "NCCL_SOCKET_IFNAME"),
        (slurm(shared_workspace="workspace"), "slurm.shared_workspace", "must be an absolute path"),
        (slurm(shared_workspace="~alice/ws"), "slurm.shared_workspace", "must be an absolute path"),
        (slurm(shared_workspace="/shared/ws", remote_dir="/scratch/me"), "slurm.shared_workspace", "keep one of them"),
        (slurm(results_dir="  "), "slurm.results_dir", "not a usable directory"),
        (slurm(results_dir="~bob/results"), "slurm.results_dir", "not a usable directory"),
        (service_on_slurm(timeout=1200), "service.health_check.timeout", "set slurm.ready_timeout instead"),
    ],
)
def test_each_slurm_setting_madinfra_cannot_honour_is_refused_with_its_field(data, field, words):
    found = problems(data)
    assert [p for p in found if p[0] == field], found
    assert words in dict(found)[field]


def test_slurm_defaults_and_the_honoured_forms_load():
    """madengine's defaults (its preset writes output_dir out, its vLLM example enable_node_check)
    and every value madinfra carries out, or that says what madinfra does anyway, load."""
    spec = resolve(slurm(
        output_dir="slurm_results/", enable_node_check=True, auto_cleanup_nodes=False, verbose_node_check=False,
        allow_submit_without_clean_nodes=False, network_interface="^lo,docker", shared_workspace="/shared/ws",
        results_dir="results",
    ))
    assert (spec.slurm.network_interface, spec.slurm.shared_workspace, spec.slurm.results_dir) == ("^lo,docker", "/shared/ws", "results")
    resolve(slurm(enable_node_check=False, allow_submit_without_clean_nodes=True, shared_workspace="~/ws", remote_dir="~/ws"))
    assert resolve(service_on_slurm(timeout=600)).service.health_check.timeout == 600
    assert resolve({"k8s": {}, "distributed": {"launcher": "vllm"}, "service": {"health_check": {"timeout": 1200}}}).service.health_check.timeout == 1200, (
        "on Kubernetes the health check timeout is used, so it is not refused there"
    )


@pytest.mark.parametrize("key", ["deploy", "live_output", "monitor", "cleanup_on_failure", "rocenv_mode"])
def test_madengine_run_options_are_refused_not_dropped(key):
    found = dict(problems({"slurm": {}, key: True}))
    assert found[key].startswith("is a madengine run option madinfra does not have: ") and found[key].endswith("; remove it")
