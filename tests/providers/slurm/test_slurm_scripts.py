"""sbatch script generation: every launcher renders valid bash, user values never execute, and
the script hash moves exactly when something only a resubmission can change moves."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from madinfra.config import load
from madinfra.errors import ConfigError
from madinfra.launchers import compile as compile_launch
from madinfra.launchers.model import LaunchPlan, RoleLaunch
from madinfra.resources import ProviderOptions
from madinfra_slurm import SlurmProvider, markers, scripts, squeue
from tests_support import ROOT

EXAMPLES = sorted((ROOT / "examples" / "slurm-configs").glob("*/*.json"))

HOSTILE = {
    "SUBST": "$(touch {tmp}/pwned)",
    "BACKTICK": "`touch {tmp}/pwned-backtick`",
    "QUOTES": "it's \"quoted\" and 'single'",
    "NEWLINE": "first line\nsecond; touch {tmp}/pwned-newline",
    "SEMICOLON": "x; touch {tmp}/pwned-semicolon",
    "VARIABLE": "${HOME} and $PATH",
    "BACKSLASH": "a\\b\\\\c\\",
    "GLOB": "* ?",
    "DASHES": "--flag=value",
    "EMPTY": "",
}


def hostile(tmp: Path) -> dict[str, str]:
    return {name: value.replace("{tmp}", str(tmp)) for name, value in HOSTILE.items()}


def bash_syntax_ok(text: str, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, f"{name} is not valid bash: {proc.stderr}\n{text}"


def desired(spec, stack_dir: Path = Path(".")):
    return SlurmProvider(ProviderOptions(stack_dir=stack_dir)).desired(spec, compile_launch(spec))


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_config_renders_valid_sbatch_scripts(config: Path, tmp_path: Path) -> None:
    spec = load(config)
    resources = desired(spec, config.parent)
    files = SlurmProvider().render_files(resources)
    assert set(files) == {f"{r.name}.sbatch" for r in resources if r.kind == scripts.KIND}
    for name, text in files.items():
        assert text.startswith("#!/bin/bash\n#SBATCH --job-name=madinfra.")
        bash_syntax_ok(text, tmp_path, name)
    for topology in (r for r in resources if r.id == "slurm/File/topology.env"):
        bash_syntax_ok(topology.spec["submit"]["text"], tmp_path, "topology.env")


LAUNCHER_CASES = [
    ("torchrun", 1), ("torchrun", 2), ("deepspeed", 1), ("deepspeed", 2), ("megatron", 1), ("megatron", 3),
    ("torchtitan", 1), ("torchtitan", 2), ("vllm", 1), ("vllm", 2), ("sglang", 1), ("sglang", 2),
    ("sglang-disagg", 3), ("sglang-disagg", 5), (None, 1), (None, 2),
]


@pytest.mark.parametrize(("launcher", "nnodes"), LAUNCHER_CASES)
def test_every_launcher_renders_one_valid_script_per_role(slurm_stack, tmp_path: Path, launcher: str | None, nnodes: int) -> None:
    spec = slurm_stack(
        slurm={"partition": "debug", "nodes": nnodes, "gpus_per_node": 2, "time": "30"},
        distributed={"launcher": launcher, "nnodes": nnodes, "nproc_per_node": 2},
        env_vars={"MODEL_PATH": "/models/m", **hostile(tmp_path)},
    )
    launch = compile_launch(spec)
    jobs = {r.name: r for r in desired(spec) if r.kind == scripts.KIND}
    # A disaggregated pool is one one-node job per replica (decode-0, decode-1, ...).
    pooled = launcher == "sglang-disagg"
    expected = [
        (scripts.replica_role(role.role, i), role) for role in launch.roles for i in range(role.nodes)
    ] if pooled else [(role.role, role) for role in launch.roles]
    expected = [(name, role) for name, role in expected if not (pooled and role.role == "proxy" and name != "proxy-0")]
    expected = [("proxy" if name == "proxy-0" else name, role) for name, role in expected]
    assert sorted(jobs) == sorted(name for name, _ in expected)
    for name, role in expected:
        resource = jobs[name]
        nodes = 1 if pooled else role.nodes
        script = resource.spec["submit"]["script"]
        bash_syntax_ok(script, tmp_path, f"{name}.sbatch")
        assert f"#SBATCH --nodes={nodes}\n" in script
        assert ("#SBATCH --gres=gpu:" in script) == (role.gpus_per_node > 0)
        assert resource.gpus == nodes * role.gpus_per_node
        lines = script.rstrip("\n").split("\n")
        hashed = lines[lines.index("#SBATCH --ntasks-per-node=1"):]
        assert resource.spec["script_sha256"] == scripts.digest(hashed)


def role_launch(**overrides) -> RoleLaunch:
    values = dict(role="worker", nodes=1, first_rank=0, gpus_per_node=0, env={}, runtime_env=(), command="true")
    values.update(overrides)
    return RoleLaunch(**values)


def launch_of(role: RoleLaunch, stack: str = "demo") -> LaunchPlan:
    return LaunchPlan(stack=stack, target="slurm", launcher="torchrun", workload="training", nnodes=role.nodes, nproc_per_node=1, master_port=29500, roles=(role,))


FAKE_SRUN = """#!/bin/bash
# Stand-in for srun: skip options up to the command, run it as task 0 of a one-node step.
while [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
export SLURM_PROCID=0 SLURM_JOB_ID=4242 SLURM_JOB_NODELIST=node1
exec "$@"
"""


FAKE_SQUEUE = """#!/bin/bash
# Stand-in for an unreachable controller: the end marker must not need squeue at all.
echo called >> "$HOME/squeue-called"
echo "squeue: error: slurm_load_jobs error: Unable to contact slurm controller" >&2
exit 1
"""


def local_job(script: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """Command and environment that run a generated sbatch script with bash (``#SBATCH`` lines
    are comments), a fake srun and a fake squeue, as job 4242 with HOME under ``tmp_path``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("squeue", FAKE_SQUEUE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    home = tmp_path / "home"
    (home / ".madinfra" / "demo").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    # apply uploads the script to the stack directory too; the trap reads its directives there.
    (home / ".madinfra" / "demo" / "worker.sbatch").write_text(script)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node1"}
    return ["bash", str(path)], env


def run_script_locally(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command, env = local_job(script, tmp_path)
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)


def marker_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".madinfra" / "demo" / "status" / "worker.4242"


@pytest.mark.parametrize(("command", "code", "state"), [("true", 0, "COMPLETED"), ("echo out; exit 3", 3, "FAILED (exit code 3)")])
def test_a_training_job_records_how_it_ended(slurm_stack, tmp_path: Path, command: str, code: int, state: str) -> None:
    """The marker is complete although squeue fails (a controller blip): it needs no controller."""
    role = role_launch(command=command)
    job = scripts.render_job(slurm_stack(), launch_of(role), role)
    proc = run_script_locally(job.script, tmp_path)
    assert proc.returncode == code, "the trap must not change the job's exit status"
    marker = markers.parse_marker("worker.4242", marker_path(tmp_path).read_text())
    assert marker is not None and (marker.exit_code, marker.state) == (code, state)
    assert marker.ended_at and marker.ended_at.endswith("Z")
    assert marker.workdir == str(tmp_path / "home" / ".madinfra" / "demo")
    row = squeue.directive_row(marker)
    assert row is not None and (row.job_id, row.name, row.comment) == ("4242", "madinfra.demo.worker", job.comment)
    assert not (tmp_path / "home" / "squeue-called").exists(), "the trap made a controller round trip"
    assert not list(marker_path(tmp_path).parent.glob("*.tmp"))


def test_a_finished_job_reads_back_with_the_spec_it_was_submitted_with(slurm_stack, tmp_path: Path) -> None:
    """Every diffed option survives the marker: an unchanged stack plans no change after the end."""
    from madinfra_slurm import SlurmProvider

    spec = slurm_stack(
        slurm={"partition": "debug", "nodes": 2, "gpus_per_node": 2, "time": "90", "exclusive": True, "qos": "high", "account": "ml",
               "constraint": "a|b", "exclude": "node9", "mem": "64G", "reservation": "r1"},
        distributed={"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
        roles={"worker": {"command": "true"}},
    )
    provider = SlurmProvider()
    from madinfra.launchers import compile as compile_launch

    (desired,) = [r for r in provider.desired(spec, compile_launch(spec)) if r.kind == scripts.KIND]
    script = desired.spec["submit"]["script"]
    assert run_script_locally(script, tmp_path).returncode == 0
    marker = markers.parse_marker("worker.4242", marker_path(tmp_path).read_text())
    assert marker is not None
    resources = squeue.to_resources([], "demo", [marker])
    (live,) = resources
    want = {k: v for k, v in desired.spec.items() if k != "submit"}
    assert live.spec == want
    assert live.status["finished"] and live.status["exit_code"] == 0 and live.status["nodes"] == ["node1"]


def test_a_cancelled_job_records_nothing(slurm_stack, tmp_path: Path) -> None:
    """scancel sends SIGTERM to every process of the job: no marker, so plan creates it again."""
    role = role_launch(command="touch started; sleep 30")
    command, env = local_job(scripts.render_job(slurm_stack(), launch_of(role), role).script, tmp_path)
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "home" / ".madinfra" / "demo" / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not marker_path(tmp_path).exists()


def test_services_record_no_end(slurm_stack) -> None:
    role = role_launch(role="server")
    launch = LaunchPlan(stack="demo", target="slurm", launcher="vllm", workload="service", nnodes=1, nproc_per_node=1, master_port=29500, roles=(role,))
    script = scripts.render_job(slurm_stack(), launch, role).script
    assert "madinfra_end" not in script and "status/" not in script


def test_hostile_env_values_reach_the_task_unchanged_and_run_nothing(slurm_stack, tmp_path: Path) -> None:
    values = hostile(tmp_path)
    out = tmp_path / "seen"
    out.mkdir()
    dump = "; ".join(f'printf %s "${name}" > {shlex.quote(str(out / name))}' for name in values)
    role = role_launch(env=values, command=dump)
    spec = slurm_stack()
    job = scripts.render_job(spec, launch_of(role), role)
    proc = run_script_locally(job.script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name, value in values.items():
        assert (out / name).read_text() == value, name
    assert not list(tmp_path.glob("pwned*")), "a user value was executed"


def test_runtime_env_is_exported_in_order_on_the_node_and_unset_is_applied(slurm_stack, tmp_path: Path) -> None:
    role = role_launch(
        env={"BASE": "10", "DROP_ME": "still here"},
        runtime_env=(("FIRST", "${BASE}1"), ("SECOND", "${FIRST}2"), ("RANKED", "rank-${SLURM_PROCID}")),
        unset_env=("DROP_ME",),
        command=f'cd "${{MADINFRA_WORKDIR:-.}}" || exit 1\necho "$FIRST $SECOND $RANKED ${{DROP_ME-unset}} $PWD" > {shlex.quote(str(tmp_path / "out"))}',
    )
    job = scripts.render_job(slurm_stack(), launch_of(role), role)
    proc = run_script_locally(job.script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_text().split() == ["101", "1012", "rank-0", "unset", str(tmp_path / "home" / ".madinfra" / "demo")]


def test_secret_values_come_from_a_sourced_file_never_from_the_script(slurm_stack, tmp_path: Path) -> None:
    secret = "s3cr3t value; $(touch pwned-secret) 'q'"
    role = role_launch(command=f'printf %s "$API_TOKEN" > {shlex.quote(str(tmp_path / "token"))}')
    job = scripts.render_job(slurm_stack(), launch_of(role), role, secret_digests={"API_TOKEN": "sha256:abc"})
    assert secret not in job.script
    assert "# madinfra:secret API_TOKEN sha256:abc" in job.script
    assert '. "$MADINFRA_WORKDIR"/worker.secrets.env' in job.script
    (tmp_path / "home" / ".madinfra" / "demo").mkdir(parents=True)
    (tmp_path / "home" / ".madinfra" / "demo" / "worker.secrets.env").write_text(scripts.secrets_text({"API_TOKEN": secret}))
    proc = run_script_locally(job.script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "token").read_text() == secret
    assert not list(tmp_path.rglob("pwned-secret"))


@pytest.mark.parametrize("field", ["partition", "qos", "account", "constraint", "nodelist", "exclude", "reservation", "mail_user"])
@pytest.mark.parametrize("bad", ["debug\ntouch /tmp/pwned", "two words", "quo'te", "semi;colon"])
def test_sbatch_option_values_must_be_one_word(slurm_stack, field: str, bad: str) -> None:
    """Refused at validate (the stack never resolves), by the same rule the scripts apply."""
    with pytest.raises(ConfigError, match=f"slurm.{field}"):
        desired(slurm_stack(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "10", field: bad}))


def test_modules_and_remote_dir_are_quoted(slurm_stack) -> None:
    spec = slurm_stack(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 0, "time": "10", "modules": ["rocm/6.2", "x; touch /tmp/pwned"], "remote_dir": "/scratch/my dir"})
    script = desired(spec)[0].spec["submit"]["script"]
    assert "module load rocm/6.2\nmodule load 'x; touch /tmp/pwned'\n" in script
    assert "export MADINFRA_WORKDIR='/scratch/my dir/demo'\n" in script
    assert "#SBATCH --gres" not in script


@pytest.mark.parametrize(("path", "word"), [("~/.madinfra/s", '"$HOME"/.madinfra/s'), ("~", '"$HOME"'), ("/abs/path", "/abs/path"), ("rel dir", "'rel dir'")])
def test_remote_paths_expand_home_but_nothing_else(path: str, word: str) -> None:
    assert scripts.shell_path(path) == word


def test_header_lists_every_option_and_the_comment_records_hash_and_asked_defaults(slurm_stack) -> None:
    spec = slurm_stack(
        slurm={
            "partition": "gpu", "nodes": 2, "gpus_per_node": 4, "time": "24:00:00", "exclusive": True, "qos": "high",
            "account": "proj", "constraint": "mi300x&ib", "nodelist": "n[1-2]", "exclude": "n3", "reservation": "resv",
            "mem": "64000", "mail_user": "me@example.com", "mail_type": "END,FAIL",
        },
        distributed={"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 4},
    )
    resource = desired(spec)[0]
    script = resource.spec["submit"]["script"]
    for line in (
        "--job-name=madinfra.demo.worker", "--partition=gpu", "--nodes=2", "--time=1-00:00:00", "--gres=gpu:4", "--exclusive",
        "--qos=high", "--account=proj", "--constraint=mi300x&ib", "--nodelist=n[1-2]", "--exclude=n3", "--reservation=resv",
        "--mem=64000M", "--ntasks-per-node=1", "--output=logs/%x_%j.out", "--error=logs/%x_%j.err",
        "--mail-user=me@example.com", "--mail-type=END,FAIL",
    ):
        assert f"#SBATCH {line}\n" in script
    comment = resource.spec["submit"]["comment"]
    assert scripts.parse_comment(comment) == {
        "stack": "demo", "resource": "slurm/Job/worker", "script": resource.spec["script_sha256"],
        "exclusive": "1", "qos": "high", "account": "proj", "mem": "64000M",
    }
    assert resource.spec["comment"] == "madinfra:stack=demo;resource=slurm/Job/worker"
    assert resource.spec["time"] == "1-00:00:00" and resource.spec["mem"] == "64000M" and resource.spec["exclusive"] is True


def test_parse_comment_ignores_foreign_comments() -> None:
    assert scripts.parse_comment("nightly benchmark") is None
    assert scripts.parse_comment("madinfra:stack=a;resource=slurm/Job/w;junk") == {"stack": "a", "resource": "slurm/Job/w"}


def sha(spec, **kw) -> str:
    role = compile_launch(spec).roles[0]
    return scripts.render_job(spec, compile_launch(spec), role, **kw).script_sha256


def test_script_hash_ignores_options_that_change_in_place(slurm_stack) -> None:
    base = sha(slurm_stack())
    assert sha(slurm_stack(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "99"})) == base
    assert sha(slurm_stack(slurm={"partition": "other", "nodes": 1, "gpus_per_node": 1, "time": "10"})) == base
    assert sha(slurm_stack(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "10", "qos": "high", "exclusive": True})) == base


def test_script_hash_moves_with_everything_a_running_job_cannot_change(slurm_stack) -> None:
    base = sha(slurm_stack())
    assert sha(slurm_stack(env_vars={"X": "1"})) != base
    assert sha(slurm_stack(roles={"worker": {"command": "sleep 1"}})) != base
    assert sha(slurm_stack(slurm={"partition": "debug", "nodes": 1, "gpus_per_node": 1, "time": "10", "modules": ["rocm"]})) != base
    assert sha(slurm_stack(), files_digest="sha256:1") != sha(slurm_stack(), files_digest="sha256:2")
    assert sha(slurm_stack(), secret_digests={"T": "sha256:1"}) != sha(slurm_stack(), secret_digests={"T": "sha256:2"})


def test_endpoint_file_lists_one_url_per_node() -> None:
    assert scripts.endpoints_text(["10.0.0.1", "10.0.0.2"], 30000) == "http://10.0.0.1:30000\nhttp://10.0.0.2:30000\n"
