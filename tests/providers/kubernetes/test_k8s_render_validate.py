"""Rendered manifests of every K8s example and stack: valid YAML, stable, schema-valid (strict)."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from k8s_support import EXAMPLES, ROOT, build

from madinfra_kubernetes.render import render_files

pytestmark = pytest.mark.k8s

SCHEMA_VERSIONS = ("1.30", kubernetes_validate.latest_version())
GUIDE_EXAMPLES = (
    "minimal/torchrun-multi-gpu-minimal.json",
    "minimal/megatron-lm-minimal.json",
    "basic/megatron-lm-multi-node-basic.json",
    "minimal/torchtitan-single-node-minimal.json",
    "minimal/vllm-single-node-minimal.json",
    "minimal/sglang-single-node-minimal.json",
    "minimal/sglang-disagg-minimal.json",
    "basic/sglang-disagg-multi-node-basic.json",
    "basic/sglang-disagg-custom-split.json",
)


def test_newest_schema_is_newer_than_1_30():
    major, minor = (int(x) for x in kubernetes_validate.latest_version().split(".")[:2])
    assert (major, minor) > (1, 30)


@pytest.mark.parametrize("name", GUIDE_EXAMPLES)
def test_every_example_the_guide_names_exists(name):
    assert (ROOT / "examples" / "k8s-configs" / name).is_file()


def test_examples_cover_every_launcher():
    launchers = {build(path)[0].distributed.launcher for path in EXAMPLES}
    assert launchers >= {"torchrun", "deepspeed", "megatron", "torchtitan", "vllm", "sglang", "sglang-disagg", None}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_rendered_manifests_pass_strict_schema_validation(stack_file, version):
    _, _, resources = build(stack_file)
    files = render_files(resources)
    assert len(files) == len(resources)
    for name, text in files.items():
        documents = [d for d in yaml.safe_load_all(text) if d]
        assert len(documents) == 1, name
        kubernetes_validate.validate(documents[0], version, strict=True)


def test_rendering_is_stable_and_round_trips(stack_file):
    _, _, resources = build(stack_file)
    first, second = render_files(resources), render_files(build(stack_file)[2])
    assert first == second
    for resource in resources:
        name = f"{resource.kind.split('/')[1].lower()}-{resource.name}.yaml"
        assert yaml.safe_load(first[name]) == resource.spec
        assert list(yaml.safe_load(first[name]))[:3] == ["apiVersion", "kind", "metadata"]


def test_strict_validation_catches_a_misspelt_field():
    """The check above can fail: a typo in a manifest is rejected in strict mode."""
    _, _, resources = build(EXAMPLES[0])
    job = next(r for r in resources if r.kind == "k8s/Job").spec
    broken = {**job, "spec": {**job["spec"], "paralelism": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_render_path_never_imports_pulumi_or_the_kubernetes_client():
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from madinfra.config import load\n"
        "from madinfra.launchers import compile\n"
        "from madinfra.resources import ProviderOptions\n"
        "from madinfra_kubernetes import KubernetesProvider\n"
        f"spec = load({str(EXAMPLES[0])!r})\n"
        "p = KubernetesProvider(ProviderOptions())\n"
        "p.render_files(p.desired(spec, compile(spec)))\n"
        "p.update_rules('k8s/Job')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_kubernetes', 'kubernetes')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
