"""Fixtures for launcher tests: build a resolved stack, compile it, render a role as a shell script."""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from madinfra.config import resolve
from madinfra.config.schema import StackSpec
from madinfra.launchers import compile
from madinfra.launchers.model import LaunchPlan, RoleLaunch

FAKE_SCONTROL = """#!/bin/bash
# Two-node allocation: node1 (10.0.0.1) and node2 (10.0.0.2).
case "$1 $2" in
  "show hostnames") printf 'node1\\nnode2\\n' ;;
  "show node") echo "NodeName=$3 Arch=x86_64 CoresPerSocket=1 NodeAddr=10.0.0.${3#node} NodeHostName=$3 Version=22.05" ;;
  *) exit 1 ;;
esac
"""

ARGV_RECORDER = """#!/bin/bash
printf '%s\\n' "$@" > "$ARGV_FILE"
"""


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def make_spec(
    target: str,
    launcher: str | None,
    nnodes: int = 1,
    nproc: int = 2,
    *,
    port: int | None = None,
    extra: dict[str, Any] | None = None,
) -> StackSpec:
    distributed: dict[str, Any] = {"nnodes": nnodes, "nproc_per_node": nproc}
    if launcher is not None:
        distributed["launcher"] = launcher
    if port is not None:
        distributed["master_port"] = port
    section = {"gpu_count": nproc, "namespace": "ml"} if target == "k8s" else {"gpus_per_node": nproc}
    raw: dict[str, Any] = {"name": "demo", "distributed": distributed, target: section}
    if launcher in ("vllm", "sglang", "sglang-disagg"):
        raw["model"] = {"model_path": "/models/llama"}
    return resolve(_merge(raw, extra or {}))


@pytest.fixture
def spec():
    return make_spec


@pytest.fixture
def plan():
    def _plan(*args: Any, **kwargs: Any) -> LaunchPlan:
        return compile(make_spec(*args, **kwargs))

    return _plan


def render(role: RoleLaunch, command: str | None = None) -> str:
    """The role as a SLURM-style script: literal env quoted, runtime env in double quotes."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in role.env.items()]
    lines += [f"unset {name}" for name in role.unset_env]
    lines += [f'export {name}="{value}"' for name, value in role.runtime_env]
    lines.append(role.command if command is None else command)
    return "\n".join(lines) + "\n"


@pytest.fixture
def render_role():
    return render


@pytest.fixture
def run_role(tmp_path: Path):
    """Run a rendered role with stub ``scontrol`` and an argv-recording stand-in for one tool.

    Returns (completed process, recorded argv lines, work dir).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def _run(role: RoleLaunch, tool: str, env: dict[str, str] | None = None, command: str | None = None):
        stub = bin_dir / tool
        stub.write_text(ARGV_RECORDER)
        stub.chmod(0o755)
        argv_file = tmp_path / "argv"
        script = tmp_path / "role.sh"
        script.write_text(render(role, command))
        environment = {
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ARGV_FILE": str(argv_file),
            "MADINFRA_WORKDIR": str(workdir),
            **(env or {}),
        }
        proc = subprocess.run(["bash", str(script)], env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        argv = argv_file.read_text().splitlines() if argv_file.exists() else []
        return proc, argv, workdir

    return _run
