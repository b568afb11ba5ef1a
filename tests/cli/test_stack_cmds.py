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


def test_render_slurm_writes_one_sbatch_script_per_pool(capsys, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "render", str(ROOT / "examples/slurm-configs/minimal/sglang-disagg-minimal.json"), "--out", str(out_dir))
    assert code == 0, err
    # One script per pool replica on SLURM (this 3-node stack: one prefill and one decode replica).
    assert sorted(p.name for p in out_dir.iterdir()) == ["decode-0.sbatch", "prefill-0.sbatch", "proxy.sbatch"]
    for script in out_dir.iterdir():
        assert script.read_text().startswith("#!/bin/bash")
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "## role proxy: 1 node(s), ranks 0, 0 GPU(s) per node" in out
    assert "python3 -m sglang.srt.disaggregation.mini_lb" in out


def rendered_files(out: str) -> dict[str, str]:
    """Split `render` output into {file name: text}; the role summary follows the last file."""
    body = out.split("\n# launcher=")[0]
    files = {}
    for chunk in body.split("# ---- ")[1:]:
        header, _, text = chunk.partition("\n")
        files[header.removesuffix(" ----")] = text
    return files


def test_render_k8s_prints_manifests_and_role_env(capsys):
    code, out, err = run_cli(capsys, "render", str(ROOT / "examples/k8s-configs/basic/sglang-disagg-custom-split.json"))
    assert code == 0, err
    kinds = sorted(yaml.safe_load(text)["kind"] for text in rendered_files(out).values())
    assert kinds.count("StatefulSet") == 2 and kinds.count("Deployment") == 1
    assert "ConfigMap" in kinds and kinds.count("Service") >= 3
    assert "# launcher=sglang-disagg target=k8s workload=service nnodes=7" in out
    assert "## role decode: 2 node(s), ranks 5-6" in out


def test_render_target_option_for_a_file_without_a_section(capsys, write_stack):
    path = write_stack({"name": "pick", "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 2}}, "pick.json")
    code, out, err = run_cli(capsys, "render", str(path), "--target", "slurm")
    assert code == 0, err and "# ---- worker.sbatch ----" in out
    code, out, err = run_cli(capsys, "render", str(path), "--target", "k8s")
    assert code == 0, err
    assert "kind: Job" in out and "completionMode: Indexed" in out


def test_validate_checks_the_launcher_contracts_naming_the_file_and_fields(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: demo\nk8s: {gpu_count: 8}\ndistributed: {launcher: vllm, nnodes: 2, nproc_per_node: 8}\n"
        "model: {model_path: /m, args: ['--tensor-parallel-size', '4']}\nservice: {port: 6379}\n"
    )
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == 1 and "Traceback" not in err
    assert f"{path}: 2 problem(s) found:" in err
    assert "  - model.args: TP 4 x PP 1 = 4, but one server spans 8 GPU(s) (distributed.nproc_per_node 8); make them equal" in err
    assert "  - service.port: is 6379, which Ray's head binds on the same node; choose another port" in err
