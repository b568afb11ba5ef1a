"""`madinfra validate` and `render` through the real CLI entry point (exit codes, messages)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from madinfra.cli import main

from tests_support import REFERENCE_EXAMPLES, ROOT


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_validate_prints_the_resolved_stack(capsys):
    code, out, _ = run_cli(capsys, "validate", str(REFERENCE_EXAMPLES / "k8s-basic-sglang-disagg-custom-split.json"))
    assert code == 0
    document = yaml.safe_load(out)
    assert document["distributed"]["launcher"] == "sglang-disagg"
    assert document["distributed"]["sglang_disagg"] == {"prefill_nodes": 4, "decode_nodes": 2}
    assert document["k8s"]["gpu_resource_name"] == "amd.com/gpu"
    assert document["env_vars"]["SGLANG_RADIX_CACHE_SIZE"] == "0.9"


def test_validate_reports_every_problem_without_traceback(capsys, write_stack):
    path = write_stack({"slurm": {"nodes": 3}, "distributed": {"launcher": "sglang_disagg", "nnodes": 3, "sglang_disagg": {"prefill_nodes": 2, "decode_nodes": 2}, "master_port": 99999}})
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == 1 and out == ""
    assert "Traceback" not in err
    assert f"{path}: 2 problem(s) found:" in err
    assert "distributed.master_port: Invalid master_port: 99999. Must be between 1 and 65535" in err
    assert "distributed.sglang_disagg: Custom split validation failed: prefill_nodes (2) + decode_nodes (2) + 1 proxy must equal nnodes (3), but got 5" in err


def test_validate_redacts_secret_values(capsys, write_stack):
    path = write_stack({"slurm": {}, "secret_env": {"HF_TOKEN": {"value": "hf_supersecret"}}})
    code, out, _ = run_cli(capsys, "validate", str(path))
    assert code == 0 and "hf_supersecret" not in out and "(sensitive value)" in out


def test_validate_missing_file_is_one_sentence(capsys, tmp_path):
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "absent.yaml"))
    assert code == 1
    assert err.strip() == f"Error: {tmp_path / 'absent.yaml'}: file not found; check the path"


def test_unknown_option_is_a_usage_error_not_a_traceback(capsys):
    code, _, err = run_cli(capsys, "validate", "--bogus")
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "madinfra", "validate", str(ROOT / "stacks" / "slurm" / "sglang.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "valid slurm stack 'sglang-qwen'" in proc.stdout
