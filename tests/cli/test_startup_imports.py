"""What `madinfra --help`, `validate` and `render` import, read from `python -X importtime`.

Start-up speed is measured by benchmarks/cli_startup.py; these tests only pin down the cause of
a slow start: the heavy libraries (Pulumi, the kubernetes client, Fabric/Paramiko, deepdiff) must
never load for commands that work from the stack file alone, and `--help` must not even build the
pydantic stack model.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests_support import ROOT

HEAVY = ("pulumi", "pulumi_kubernetes", "kubernetes", "fabric", "paramiko", "invoke", "deepdiff")
CLUSTER_CLIENTS = ("pulumi", "pulumi_kubernetes", "kubernetes")
SLURM_STACK = ROOT / "stacks" / "slurm" / "sglang-disagg.yaml"
K8S_STACK = ROOT / "stacks" / "k8s" / "vllm-multi-node.yaml"
SANDBOX_STACK = ROOT / "stacks" / "sandbox" / "allreduce.yaml"


def imported_modules(*args: str) -> set[str]:
    """Every module `python -X importtime -m madinfra ARGS` imports; the command must succeed."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "madinfra", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=60,
    )
    assert proc.returncode == 0, f"madinfra {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}"
    modules = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                modules.add(name)
    assert "typer" in modules and "madinfra.cli" in modules, "could not read the importtime report"
    return modules


def loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in roots)


def test_help_imports_no_heavy_library_and_builds_no_model():
    modules = imported_modules("--help")
    assert loaded(modules, HEAVY) == []
    assert "madinfra.config.schema" not in modules and "madinfra.resources" not in modules
    assert "pydantic" not in modules


@pytest.mark.parametrize("stack", [SLURM_STACK, K8S_STACK], ids=["slurm", "k8s"])
def test_validate_imports_no_heavy_library(stack):
    modules = imported_modules("validate", str(stack))
    assert loaded(modules, HEAVY) == []
    assert not any(m.split(".")[0] in ("madinfra_slurm", "madinfra_kubernetes") for m in modules), "validate must not load a provider"


@pytest.mark.parametrize("stack", [SANDBOX_STACK, K8S_STACK], ids=["slurm", "k8s"])
def test_render_imports_neither_pulumi_nor_the_kubernetes_client(stack):
    modules = imported_modules("render", str(stack))
    assert loaded(modules, CLUSTER_CLIENTS) == []
