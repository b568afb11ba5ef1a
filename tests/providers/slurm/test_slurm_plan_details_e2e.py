"""On the SLURM sandbox: a changed environment variable is named in the plan, not only a new script digest."""

from __future__ import annotations

import pytest

from test_slurm_sandbox_e2e import sleeper

pytestmark = pytest.mark.slurm


def test_a_changed_env_var_is_named_under_the_script_digest(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(sleeper(env_vars={"NCCL_DEBUG": "WARN", "MY_FLAG": "1"}))
    stack.cli("apply", str(stack.path), "--yes")

    stack.write(sleeper(env_vars={"NCCL_DEBUG": "INFO", "MY_FLAG": "1"}))
    planned = stack.cli("plan", str(stack.path)).stdout
    assert "script_sha256" in planned and "forces replacement" in planned, planned
    assert "env NCCL_DEBUG: WARN -> INFO" in planned, planned
    assert "MY_FLAG" not in planned, "an unchanged variable is not a difference"
