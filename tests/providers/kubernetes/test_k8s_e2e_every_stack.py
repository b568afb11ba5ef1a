"""Every ready-made K8s stack and every K8s example, applied for real: right after an apply the
plan is empty (a non-empty plan is a bug: server defaults or non-canonical values), then destroy
leaves nothing labelled with the stack. Each apply also checks that Pulumi took exactly the
planned steps (the provider stops with both actions named otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from k8s_sandbox import K8sStack, prepare_cluster_for
from k8s_support import K8S_STACK_FILES, ROOT

pytestmark = pytest.mark.k8s_e2e


@pytest.mark.parametrize("source", K8S_STACK_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_apply_then_the_plan_is_empty_then_destroy_leaves_nothing(source: Path, k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write_from(source)
    prepare_cluster_for(stack.sandbox, stack.path)

    applied = stack.apply()
    assert "Apply complete!" in applied.stdout, applied.stdout
    stack.assert_plan_empty()
    assert stack.sandbox.stack_objects(stack.name), "apply created nothing labelled with the stack"

    destroyed = stack.cli("destroy", str(stack.path), "--yes")
    assert "Destroy complete!" in destroyed.stdout, destroyed.stdout
    assert stack.sandbox.stack_objects(stack.name, ("Job", "Deployment", "StatefulSet", "Service", "ConfigMap", "Secret")) == []
