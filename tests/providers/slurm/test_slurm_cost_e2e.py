"""The plan's GPU cost on the SLURM sandbox, through the real CLI (issue 14, part 2): what a run
commits (GPUs x time limit) and the progress a replacement throws away (elapsed x GPUs)."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.slurm


def training(command: str) -> dict:
    return {
        "slurm": {"partition": "debug", "nodes": 2, "gpus_per_node": 1, "time": "60", "exclusive": False, "ready_timeout": 60},
        "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
        "roles": {"worker": {"command": command}},
        "cost": {"gpu_hour_price": 3.0},
    }


def test_the_plan_prices_what_it_commits_and_what_a_replacement_throws_away(sandbox_stack) -> None:
    stack = sandbox_stack
    stack.write(training("sleep 300"))
    planned = stack.cli("plan", str(stack.path)).stdout
    assert "Cost: commits up to 2 GPU-hours (GPUs x time limit) ≈ 6.00 USD" in planned, planned
    stack.cli("apply", str(stack.path), "--yes")
    time.sleep(12)

    stack.write(training("sleep 301"))
    data = json.loads(stack.cli("plan", str(stack.path), "--json").stdout)
    (lost,) = data["cost"]["lost"]
    assert lost["address"] == "slurm/Job/worker" and lost["gpus"] == 2 and lost["elapsed_seconds"] >= 10
    assert data["cost"]["committed_gpu_hours"] == 2 and data["cost"]["gpu_hour_price"] == 3.0
    warning = next(w for w in data["warnings"] if w.startswith("slurm/Job/worker has run for"))
    assert "on 2 GPU(s): this plan throws away up to" in warning and "GPU-hours of its progress ≈" in warning
