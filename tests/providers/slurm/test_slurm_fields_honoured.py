"""The madengine ``slurm`` settings madinfra carries out reach the job script, and changing one
changes what the planner sees (the script hash), so no accepted setting is a silent no-op.

``network_interface`` -> NCCL/GLOO socket interface for every rank; ``shared_workspace`` -> the
stack's directory on shared storage; ``results_dir`` -> ``MADINFRA_RESULTS_DIR``, created by the
job. The scripts are run with bash and a stand-in ``srun`` to prove what a task really sees.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from madinfra.config import load
from madinfra.launchers import compile as compile_launch
from madinfra.planner import plan as make_plan
from madinfra.resources import ProviderOptions, Resource
from madinfra_slurm import SlurmProvider, scripts
from tests_support import ROOT

FAKE_SRUN = """#!/bin/bash
# Stand-in for srun: skip options up to the command, run it as task 0 of a one-node step.
while [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
export SLURM_PROCID=0 SLURM_JOB_ID=4242 SLURM_JOB_NODELIST=node1
exec "$@"
"""

SHOW = 'printf "%s|%s|%s|%s" "$NCCL_SOCKET_IFNAME" "$GLOO_SOCKET_IFNAME" "${MADINFRA_RESULTS_DIR:-}" "$PWD" > "$HOME/seen"'
"""The command the tests' worker runs: what one rank sees, written where the test can read it."""


def worker_job(spec) -> Resource:
    (job,) = [r for r in SlurmProvider(ProviderOptions()).desired(spec, compile_launch(spec)) if r.kind == scripts.KIND]
    return job


def run_task(script: str, tmp_path: Path, workdir: Path) -> list[str]:
    """Run a generated script as job 4242 (HOME under ``tmp_path``) and return what its task saw:
    NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, MADINFRA_RESULTS_DIR, working directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (tmp_path / "job.sbatch").write_text(script)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "SLURM_JOB_ID": "4242"}
    proc = subprocess.run(["bash", str(tmp_path / "job.sbatch")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return (home / "seen").read_text().split("|")


def multi_node(slurm_stack, slurm: dict[str, Any] | None = None, **overrides: Any):
    """A two-node torchrun stack through the real preset layering (so the multi-node preset's
    ``NCCL_SOCKET_IFNAME=eth0`` is in env_vars, as for a madengine user)."""
    base = {"partition": "debug", "nodes": 2, "gpus_per_node": 1, "time": "10", "exclusive": False}
    return slurm_stack(
        slurm={**base, **(slurm or {})},
        distributed={"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
        roles={"worker": {"command": SHOW, **overrides.pop("worker", {})}},
        **overrides,
    )


# -- network_interface ---------------------------------------------------------------------


def test_network_interface_reaches_every_rank_as_nccl_and_gloo_socket_ifname(slurm_stack, tmp_path: Path) -> None:
    spec = multi_node(slurm_stack, {"network_interface": "ib0"})
    assert spec.env_vars.get("NCCL_SOCKET_IFNAME") == "eth0", "the multi-node preset sets eth0; network_interface must beat it"
    script = worker_job(spec).spec["submit"]["script"]
    nccl, gloo, _, _ = run_task(script, tmp_path, tmp_path / "home" / ".madinfra" / "demo")
    assert (nccl, gloo) == ("ib0", "ib0")
    assert script.count("export NCCL_SOCKET_IFNAME=") == 1, "one export per variable, no fight between env_vars and the setting"


def test_without_network_interface_env_vars_decide_as_before(slurm_stack, tmp_path: Path) -> None:
    spec = multi_node(slurm_stack, env_vars={"NCCL_SOCKET_IFNAME": "eno1"})
    nccl, gloo, _, _ = run_task(worker_job(spec).spec["submit"]["script"], tmp_path, tmp_path / "home" / ".madinfra" / "demo")
    assert (nccl, gloo) == ("eno1", "")


def test_a_role_override_env_beats_network_interface(slurm_stack, tmp_path: Path) -> None:
    """``roles.<role>.env`` is the most specific setting: it wins over the stack-wide interface."""
    spec = multi_node(slurm_stack, {"network_interface": "ib0"}, worker={"env": {"NCCL_SOCKET_IFNAME": "lo"}})
    nccl, gloo, _, _ = run_task(worker_job(spec).spec["submit"]["script"], tmp_path, tmp_path / "home" / ".madinfra" / "demo")
    assert (nccl, gloo) == ("lo", "ib0")


# -- shared_workspace ----------------------------------------------------------------------


def test_shared_workspace_is_the_stacks_directory_for_upload_submit_and_the_job(slurm_stack, tmp_path: Path) -> None:
    workspace = tmp_path / "shared" / "workspace"
    spec = multi_node(slurm_stack, {"shared_workspace": str(workspace)})
    job = worker_job(spec)
    submit = job.spec["submit"]
    assert submit["remote_dir"] == f"{workspace}/demo", "upload and sbatch use the stack's directory under the workspace"
    _, _, _, cwd = run_task(submit["script"], tmp_path, workspace / "demo")
    assert cwd == str(workspace / "demo"), "the job runs in the workspace, as madengine's does"


def test_a_home_relative_shared_workspace_expands_on_the_cluster(slurm_stack) -> None:
    spec = multi_node(slurm_stack, {"shared_workspace": "~/work space"})
    assert scripts.remote_dir(spec) == "~/work space/demo"
    assert "export MADINFRA_WORKDIR=\"$HOME\"/'work space/demo'\n" in worker_job(spec).spec["submit"]["script"]


# -- results_dir ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [("{tmp}/shared/results", "{tmp}/shared/results"), ("results/run 1", "{tmp}/home/.madinfra/demo/results/run 1"), ("~/res", "{tmp}/home/res")],
    ids=["absolute", "relative-to-the-stack-directory", "home"],
)
def test_results_dir_is_created_and_exported_to_every_task(slurm_stack, tmp_path: Path, value: str, where: str) -> None:
    spec = multi_node(slurm_stack, {"results_dir": value.format(tmp=tmp_path)})
    _, _, results, _ = run_task(worker_job(spec).spec["submit"]["script"], tmp_path, tmp_path / "home" / ".madinfra" / "demo")
    assert results == where.format(tmp=tmp_path)
    assert Path(results).is_dir(), "the job makes the directory before the workload starts"


def test_without_results_dir_nothing_is_exported(slurm_stack, tmp_path: Path) -> None:
    script = worker_job(multi_node(slurm_stack)).spec["submit"]["script"]
    assert f"export {scripts.RESULTS_ENV}=" not in script and f'mkdir -p "${scripts.RESULTS_ENV}"' not in script
    assert run_task(script, tmp_path, tmp_path / "home" / ".madinfra" / "demo")[2] == ""


# -- the planner sees every change ---------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {"network_interface": "ib0"}),
        ({"network_interface": "ib0"}, {"network_interface": "ib1"}),
        ({}, {"shared_workspace": "/shared/ws"}),
        ({"shared_workspace": "/shared/ws"}, {"shared_workspace": "/shared/other"}),
        ({}, {"results_dir": "/shared/results"}),
        ({"results_dir": "/shared/results"}, {"results_dir": "results"}),
    ],
    ids=["interface-set", "interface-changed", "workspace-set", "workspace-moved", "results-set", "results-moved"],
)
def test_changing_a_honoured_setting_replaces_the_job_in_the_plan(slurm_stack, before: dict, after: dict) -> None:
    """The hash covers these lines, and the planner replaces a job whose script hash moved: a
    submitted script cannot be edited, so the plan must say the job is resubmitted."""
    old, new = worker_job(multi_node(slurm_stack, before)), worker_job(multi_node(slurm_stack, after))
    assert old.spec["script_sha256"] != new.spec["script_sha256"]
    live = Resource(old.kind, old.name, {k: v for k, v in old.spec.items() if k != "submit"}, workload=True, role=old.role, provider_id="7")
    provider = SlurmProvider()
    result = make_plan([new], [live], None, provider.update_rules, stack="demo")
    (change,) = [c for c in result.changes if c.resource_id == new.id]
    assert change.action == "replace"
    assert any(f.path.startswith("script_sha256") for f in change.fields)


def test_madengine_defaults_leave_the_script_as_madinfra_always_wrote_it(slurm_stack) -> None:
    """output_dir's and the node check's defaults change nothing: loading madengine's defaults
    must not restart every deployed stack on upgrade."""
    plain = worker_job(multi_node(slurm_stack))
    spelled = worker_job(multi_node(slurm_stack, {
        "output_dir": "slurm_results/", "enable_node_check": True, "auto_cleanup_nodes": False,
        "verbose_node_check": False, "allow_submit_without_clean_nodes": False,
    }))
    assert plain.spec == spelled.spec


def test_madengines_advanced_example_uses_its_workspace_interface_and_results(tmp_path: Path) -> None:
    spec = load(ROOT / "examples" / "slurm-configs" / "basic" / "04-multi-node-advanced.json")
    script = worker_job(spec).spec["submit"]["script"]
    assert scripts.remote_dir(spec) == f"/shared/workspace/{spec.name}"
    assert f"export MADINFRA_WORKDIR=/shared/workspace/{spec.name}\n" in script
    assert "export MADINFRA_RESULTS_DIR=/shared/results\nmkdir -p \"$MADINFRA_RESULTS_DIR\"\n" in script
    assert "export NCCL_SOCKET_IFNAME=ib0\n" in script and "export GLOO_SOCKET_IFNAME=ib0\n" in script
    assert "export MADINFRA_SHARED_DATA=/shared/datasets\n" in script, "madengine's shared_data reaches every task"


def test_a_role_env_naming_madinfra_shared_data_wins(slurm_stack) -> None:
    spec = multi_node(slurm_stack, shared_data="/data/a", worker={"env": {"MADINFRA_SHARED_DATA": "/data/b"}})
    script = worker_job(spec).spec["submit"]["script"]
    assert "export MADINFRA_SHARED_DATA=/data/b\n" in script and "/data/a" not in script


def test_a_results_dir_the_job_cannot_make_fails_the_job_and_is_recorded(slurm_stack, tmp_path: Path) -> None:
    """The directory is made before the workload starts and after the end-marker trap, so a
    training run that cannot write its results ends FAILED with a marker (plan then reports
    it, rather than proposing to submit it again as if it had vanished)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    spec = multi_node(slurm_stack, {"results_dir": str(blocker / "results")})
    script = worker_job(spec).spec["submit"]["script"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    workdir = tmp_path / "home" / ".madinfra" / "demo"
    workdir.mkdir(parents=True)
    (tmp_path / "job.sbatch").write_text(script)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"), "SLURM_JOB_ID": "4242"}
    proc = subprocess.run(["bash", str(tmp_path / "job.sbatch")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert proc.returncode != 0 and "mkdir" in proc.stderr
    assert not (tmp_path / "home" / "seen").exists(), "the workload never started"
    assert list((workdir / "status").glob("worker.4242*")), "the failure is recorded by the end marker"
