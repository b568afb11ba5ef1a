"""Providers are distributions of their own; a missing one is one sentence naming what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from madinfra import provider_registry
from madinfra.errors import MadinfraError


def test_the_installed_providers_are_found_through_their_entry_points():
    from madinfra_kubernetes import KubernetesProvider
    from madinfra_slurm import SlurmProvider

    provider_registry.unregister("slurm")
    provider_registry.unregister("k8s")
    assert provider_registry.factory_for("slurm") is SlurmProvider
    assert provider_registry.factory_for("k8s") is KubernetesProvider


@pytest.mark.parametrize("target, words", [("k8s", "install madinfra-kubernetes (`pip install -e providers/kubernetes`"), ("slurm", "install madinfra-slurm (`pip install -e providers/slurm`")])
def test_a_missing_provider_names_its_distribution(monkeypatch, target, words):
    monkeypatch.setattr(provider_registry, "entry_points", lambda group: [])
    monkeypatch.setattr(provider_registry, "_registered", {})
    with pytest.raises(MadinfraError) as err:
        provider_registry.factory_for(target)
    assert f"No provider is installed for target '{target}' (installed: none)" in str(err.value) and words in str(err.value)


def test_the_cli_says_it_in_one_sentence_without_a_traceback(tmp_path):
    """Through the real CLI in a process where the entry points find nothing."""
    (tmp_path / "s.yaml").write_text("name: s\nslurm: {partition: debug, gpus_per_node: 0}\nroles: {worker: {command: 'true'}}\n")
    code = (
        "import sys, importlib.metadata as md; md.entry_points = lambda **kw: [];"
        "import madinfra.provider_registry as r; r.entry_points = md.entry_points;"
        "from madinfra.cli import main; sys.argv = ['madinfra', 'render', 's.yaml']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "Error: No provider is installed for target 'slurm' (installed: none); "
        "install madinfra-slurm (`pip install -e providers/slurm` in a clone of madinfra)"
    )
