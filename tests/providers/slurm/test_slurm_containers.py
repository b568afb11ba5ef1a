"""``slurm.container``: every launcher's tasks run in ``model.image`` under pyxis, apptainer
(singularity) and podman, with the node-evaluated runtime env, ``env_vars`` and
``docker_env_vars`` reaching the process inside, and the stack's paths mounted.

The scripts are executed with bash and stand-ins: a pyxis-aware ``srun`` that records its
``--container-*`` options (and, like pyxis, passes the environment), and ``apptainer`` /
``podman`` stand-ins that start the command with an *empty* environment except what the real
runtime would certainly pass (``SLURM_*`` and ``MADINFRA_WORKDIR``, ``PATH`` without the node's
tools). So a value reaches the inner process only through madinfra's own per-task env file,
and ``scontrol`` exists only on the "node", as on a real cluster image.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from madinfra.config import resolve
from madinfra.config.loader import roles_for
from madinfra.errors import ConfigError
from madinfra.launchers import compile as compile_launch
from madinfra.launchers.registry import COMPILERS
from madinfra.planner import plan as make_plan
from madinfra.resources import ProviderOptions, Resource
from madinfra_slurm import SlurmProvider, containers, scripts

LAUNCHERS = list(COMPILERS)
RUNTIMES = ("pyxis", "apptainer", "singularity", "podman")
IMAGE = "registry.example/ml/train:1.0"

FAKE_SRUN = r"""#!/bin/bash
# Stand-in for srun (with the pyxis plugin): records --container-* options, runs the command
# as task 0 of a one-node step of job 4242 with the caller's environment (pyxis passes it).
log="$FAKE_LOG/srun.$(date +%s%N)"
while [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; do
  case "$1" in --container-*) printf '%s\n' "$1" >> "$log" ;; esac
  shift
done
export SLURM_PROCID=0 SLURM_JOB_ID=4242 SLURM_JOB_NODELIST=node1 SLURM_NODEID=0
exec "$@"
"""

FAKE_RUNTIME = r"""#!/bin/bash
# Stand-in for apptainer/singularity exec and podman run: records its arguments and runs the
# command (after the image) with only SLURM_*, MADINFRA_WORKDIR and a PATH without node tools.
printf '%s\n' "$(basename "$0")" "$@" > "$FAKE_LOG/runtime"
shift   # exec | run
while [ "$#" -gt 0 ]; do
  case "$1" in
    --bind|--pwd|-v|--workdir|--env) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
image="$1"; shift
printf '%s\n' "$image" > "$FAKE_LOG/image"
keep=$(env | grep -E '^(SLURM_[A-Z_]*|MADINFRA_WORKDIR)=' | tr '\n' '\0' | xargs -0 -I{} printf '%q ' {})
eval exec env -i PATH=/usr/bin:/bin HOME=/nonexistent "$keep" '"$@"'
"""

FAKE_SCONTROL = r"""#!/bin/bash
# Stand-in for scontrol on the node: one host, node1 at 127.0.0.9.
case "$1 $2" in
  "show hostnames") echo node1 ;;
  "show node") echo "NodeName=node1 NodeAddr=127.0.0.9 State=ALLOCATED" ;;
esac
"""

SHOW_VARS = ("RANK", "NODE_RANK", "MASTER_ADDR", "FROM_ENV_VARS", "FROM_DOCKER", "SHARED", "MADINFRA_RESULTS_DIR", "SECRET_TOKEN")
SHOW = " ".join(['printf "%s|" "$PWD"', *[f'"${{{name}:-}}"' for name in SHOW_VARS]]).replace('"%s|"', '"' + "%s|" * (len(SHOW_VARS) + 1) + '"')
SHOW += ' > "$MADINFRA_WORKDIR"/seen.$SLURM_PROCID'
"""What each role's task runs in the container: its working directory and the variables."""


def base_stack(launcher: str | None, runtime: str | None, **overrides: Any) -> dict[str, Any]:
    """A minimal multi-node stack for ``launcher`` with ``model.image`` under ``runtime``."""
    # Multi-node vLLM's head runs Ray's supervisor, which needs Ray on the node
    # (tests/launchers/test_ray_cluster.py runs its script; the SLURM sandbox runs real Ray).
    nnodes = 3 if launcher == "sglang-disagg" else 1 if launcher == "vllm" else 2
    stack: dict[str, Any] = {
        "name": "demo",
        "model": {"image": IMAGE, "script": "run.sh"},
        "slurm": {"partition": "debug", "nodes": nnodes, "gpus_per_node": 1, "time": "10", "exclusive": False},
        "distributed": {"nnodes": nnodes, "nproc_per_node": 1},
        "env_vars": {"FROM_ENV_VARS": "env value", "SHARED": "from env_vars"},
        "docker_env_vars": {"FROM_DOCKER": "it's $(docker)", "SHARED": "from docker_env_vars"},
    }
    if launcher:
        stack["distributed"]["launcher"] = launcher
    if runtime:
        stack["slurm"]["container"] = {"runtime": runtime}
    for key, value in overrides.items():
        stack[key] = {**stack[key], **value} if isinstance(stack.get(key), dict) and isinstance(value, dict) else value
    return stack


def showing(stack: dict[str, Any]):
    """The stack with every role's command replaced by ``SHOW``."""
    spec = resolve(stack, source="test")
    return resolve({**stack, "roles": {role: {"command": SHOW} for role in roles_for(spec)}}, source="test")


def jobs(spec) -> dict[str, scripts.RenderedJob]:
    launch = compile_launch(spec)
    return {role.role: scripts.render_job(spec, launch, role) for role in launch.roles}


def run_job(script: str, tmp_path: Path, *, env: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Run one generated script as job 4242 with the stand-ins; returns (workdir, log dir)."""
    bin_dir, log, home = tmp_path / "bin", tmp_path / "log", tmp_path / "home"
    for path in (bin_dir, log, home):
        path.mkdir(exist_ok=True)
    for name, text in (("getent", "#!/bin/sh\necho \"$2 STREAM\"\n"), ("srun", FAKE_SRUN), ("apptainer", FAKE_RUNTIME), ("singularity", FAKE_RUNTIME), ("podman", FAKE_RUNTIME), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    workdir = home / ".madinfra" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "topology.env").write_text("export MADINFRA_FIRST_RANK_PREFILL=1 MADINFRA_FIRST_RANK_DECODE=2\n")
    (tmp_path / "job.sbatch").write_text(script)
    run_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "SLURM_JOB_ID": "4242", "FAKE_LOG": str(log), **(env or {})}
    proc = subprocess.run(["bash", str(tmp_path / "job.sbatch")], capture_output=True, text=True, env=run_env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return workdir, log


def seen(workdir: Path) -> dict[str, str]:
    values = (workdir / "seen.0").read_text().split("|")
    return dict(zip(("PWD", *SHOW_VARS), values))


# -- every launcher, every runtime, executed ---------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda name: name or "none")
def test_every_role_runs_in_the_image_with_node_env_user_env_and_docker_env(launcher: str | None, runtime: str, tmp_path: Path) -> None:
    spec = showing(base_stack(launcher, runtime))
    for role, job in jobs(spec).items():
        run_dir = tmp_path / role
        run_dir.mkdir()
        workdir, log = run_job(job.script, run_dir)
        values = seen(workdir)
        assert values["PWD"] == str(workdir), "the container starts in the stack's directory"
        assert values["FROM_ENV_VARS"] == "env value"
        assert values["FROM_DOCKER"] == "it's $(docker)", "docker_env_vars reach the process, quoted"
        assert values["SHARED"] == "from docker_env_vars", "docker_env_vars beat env_vars, as docker run -e does"
        if launcher is not None and launcher != "sglang-disagg":
            assert values["RANK"] == "0" or values["NODE_RANK"] == "0", "runtime env evaluated on the node reaches the process"
        if launcher in ("torchrun", "deepspeed", "megatron", "torchtitan", "primus"):
            assert values["MASTER_ADDR"] == "127.0.0.9", "scontrol ran on the node, not in the image"
        assert not list((workdir / containers.TASK_ENV_DIR).iterdir()), "the per-task env file is removed once read"
        if runtime == "pyxis":
            options = "".join(p.read_text() for p in sorted(log.glob("srun.*")))
            assert f"--container-image={IMAGE}\n" in options
            assert f"--container-workdir={workdir}\n" in options
            assert f"--container-mounts={workdir}:{workdir}\n" in options
        else:
            args = (log / "runtime").read_text().splitlines()
            assert args[0] == runtime
            assert (log / "image").read_text().strip() == IMAGE


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda name: name or "none")
def test_rendered_lines_per_runtime(launcher: str | None) -> None:
    """The step lines name the image, the mounts and the GPU flags of each runtime."""
    for runtime, expected in (
        ("pyxis", [f"--container-image={IMAGE}", '--container-mounts="$MADINFRA_WORKDIR":"$MADINFRA_WORKDIR"', '--container-workdir="$MADINFRA_WORKDIR"']),
        ("apptainer", ["exec apptainer exec ", '--bind "$MADINFRA_WORKDIR":"$MADINFRA_WORKDIR"', '--pwd "$MADINFRA_WORKDIR"', IMAGE]),
        ("singularity", ["exec singularity exec ", '--bind "$MADINFRA_WORKDIR":"$MADINFRA_WORKDIR"']),
        ("podman", ["exec podman run --rm --network=host --ipc=host", '-v "$MADINFRA_WORKDIR":"$MADINFRA_WORKDIR"', "--env MADINFRA_WORKDIR"]),
    ):
        spec = resolve(base_stack(launcher, runtime), source="test")
        for job in jobs(spec).values():
            srun = [line for line in job.script.splitlines() if "srun " in line or "exec " in line]
            text = "\n".join(srun)
            for word in expected:
                assert word in text, f"{runtime}/{launcher}: {word!r} missing in {text}"
            steps = [line for line in job.script.splitlines() if line.startswith(f"{scripts.STEP_SRUN} ")]
            assert len(steps) == (2 if runtime == "pyxis" else 1), "pyxis evaluates the node env in a step of its own"


@pytest.mark.parametrize("vendor, flag", [("AMD", "--rocm"), ("NVIDIA", "--nv")])
def test_apptainer_gpu_flag_follows_the_vendor(vendor: str, flag: str) -> None:
    spec = resolve(base_stack("torchrun", "apptainer", gpu_vendor=vendor), source="test")
    script = jobs(spec)["worker"].script
    assert f"exec apptainer exec {flag} " in script
    assert ({"--rocm", "--nv"} - {flag}).pop() + " " not in script


def test_podman_on_nvidia_asks_for_gpus_through_cdi() -> None:
    spec = resolve(base_stack("torchrun", "podman", gpu_vendor="NVIDIA"), source="test")
    script = jobs(spec)["worker"].script
    assert "--device=nvidia.com/gpu=all" in script and "/dev/kfd" not in script


def test_a_role_without_gpus_gets_no_gpu_flags() -> None:
    spec = resolve(base_stack("sglang-disagg", "apptainer"), source="test")
    rendered = jobs(spec)
    launch = compile_launch(spec)
    for role in launch.roles:
        has_flag = "exec apptainer exec --rocm" in rendered[role.role].script
        assert has_flag == (role.gpus_per_node > 0), role.role


def test_every_stack_path_is_mounted_at_the_same_place(tmp_path: Path) -> None:
    stack = base_stack(
        "torchrun",
        "pyxis",
        model={"image": IMAGE, "script": "run.sh", "model_path": "/models/llama"},
        shared_data="/datasets",
        slurm={"shared_workspace": "/shared/ws", "results_dir": "out", "container": {"runtime": "pyxis", "mounts": ["/scratch", "~/cache:/root/.cache:ro"]}},
    )
    spec = resolve(stack, source="test")
    script = jobs(spec)["worker"].script
    mounts = next(line for line in script.splitlines() if "--container-mounts=" in line).split("--container-mounts=")[1].split(" ")[0]
    assert mounts.split(",") == [
        '"$MADINFRA_WORKDIR":"$MADINFRA_WORKDIR"',
        "/shared/ws:/shared/ws",
        '"$MADINFRA_RESULTS_DIR":"$MADINFRA_RESULTS_DIR"',
        "/models/llama:/models/llama",
        "/datasets:/datasets",
        "/scratch:/scratch",
        '"$HOME"/cache:/root/.cache:ro',
    ]


def test_a_hub_model_id_is_not_mounted() -> None:
    spec = resolve(base_stack("vllm", "apptainer", model={"image": IMAGE, "model_path": "meta-llama/Llama-3-8B"}), source="test")
    assert "meta-llama" not in next(line for line in jobs(spec)["server"].script.splitlines() if "apptainer exec" in line).split(IMAGE)[0]


def test_results_dir_and_secrets_reach_the_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = base_stack("torchrun", "podman", slurm={"results_dir": "out", "container": {"runtime": "podman"}})
    spec = showing(stack)
    launch = compile_launch(spec)
    role = launch.role("worker")
    job = scripts.render_job(spec, launch, role, secret_digests={"SECRET_TOKEN": "d1"})
    workdir = tmp_path / "home" / ".madinfra" / "demo"
    workdir.mkdir(parents=True)
    (workdir / scripts.secrets_file("worker")).write_text(scripts.secrets_text({"SECRET_TOKEN": "s3cr3t value"}))
    workdir, _ = run_job(job.script, tmp_path)
    values = seen(workdir)
    assert values["MADINFRA_RESULTS_DIR"] == str(workdir / "out")
    assert values["SECRET_TOKEN"] == "s3cr3t value"


def test_docker_env_vars_never_beat_the_launcher_or_the_role_override() -> None:
    # A value the launcher sets itself (RANK, MAD_LAUNCHER_TYPE) would never reach the workload:
    # compile refuses it, naming the field (madinfra.launchers.contracts).
    refused = base_stack("torchrun", "apptainer", docker_env_vars={"RANK": "99", "MAD_LAUNCHER_TYPE": "mine"})
    with pytest.raises(ConfigError) as caught:
        compile_launch(resolve(refused, source="test"))
    assert "docker_env_vars.RANK" in str(caught.value) and "docker_env_vars.MAD_LAUNCHER_TYPE" in str(caught.value)
    stack = base_stack(
        "torchrun",
        "apptainer",
        docker_env_vars={"PINNED": "docker", "OWN": "yes"},
        roles={"worker": {"env": {"PINNED": "role"}}},
    )
    spec = resolve(stack, source="test")
    role = compile_launch(spec).role("worker")
    assert "RANK" not in role.env and "RANK" in dict(role.runtime_env), "computed on the node"
    assert role.env["MAD_LAUNCHER_TYPE"] == "torchrun" and role.env["PINNED"] == "role"
    assert (role.env["OWN"], role.env["FROM_DOCKER"], role.env["SHARED"]) == ("yes", "it's $(docker)", "from docker_env_vars")


def test_unset_variables_stay_unset_in_the_container(tmp_path: Path) -> None:
    spec = showing(base_stack("vllm", "apptainer", gpu_vendor="AMD"))
    role = compile_launch(spec).role("server")
    assert role.unset_env, "vLLM on AMD unsets CUDA_VISIBLE_DEVICES and friends"
    inner = containers.inner_script(role)
    assert "unset " + " ".join(role.unset_env) in inner
    assert inner.index("unset ") < inner.index(role.command)


# -- plan ----------------------------------------------------------------------------------------


def desired_job(stack: dict[str, Any]):
    spec = resolve(stack, source="test")
    (job,) = [r for r in SlurmProvider(ProviderOptions()).desired(spec, compile_launch(spec)) if r.kind == scripts.KIND]
    return job


@pytest.mark.parametrize(
    "before, after",
    [
        ({"model": {"image": IMAGE}}, {"model": {"image": IMAGE.replace("1.0", "1.1")}}),
        ({}, {"slurm": {"container": {"runtime": "apptainer"}}}),
        ({}, {"slurm": {"container": {"runtime": "pyxis", "mounts": ["/scratch"]}}}),
    ],
)
def test_changing_the_image_or_runtime_replaces_the_job(before: dict, after: dict) -> None:
    base = base_stack("torchrun", "pyxis")
    old = desired_job({**base, **{k: {**base[k], **v} for k, v in before.items()}})
    new = desired_job({**base, **{k: {**base[k], **v} for k, v in after.items()}})
    assert old.spec["script_sha256"] != new.spec["script_sha256"]
    live = Resource(old.kind, old.name, {k: v for k, v in old.spec.items() if k != "submit"}, workload=True, role=old.role, provider_id="7")
    result = make_plan([new], [live], None, SlurmProvider().update_rules, stack="demo")
    (change,) = [c for c in result.changes if c.resource_id == new.id]
    assert change.action == "replace"
    assert any(f.path.startswith("script_sha256") for f in change.fields)
    image_change = [f for f in change.fields if f.path == "image"]
    if old.spec["image"] != new.spec["image"]:
        (field,) = image_change
        assert (field.before, field.after, field.forces_replace) == (IMAGE, IMAGE.replace("1.0", "1.1"), True), "the plan names the image"
    else:
        assert image_change == []


def test_the_comment_records_the_image_a_job_runs() -> None:
    spec = resolve(base_stack("torchrun", "pyxis"), source="test")
    assert scripts.parse_comment(jobs(spec)["worker"].comment)["image"] == IMAGE
    bare = resolve(base_stack("torchrun", None, model={"image": None, "script": "run.sh"}), source="test")
    assert "image" not in scripts.parse_comment(jobs(bare)["worker"].comment)


def test_without_an_image_the_script_is_what_madinfra_always_wrote() -> None:
    """Runtime ``none`` (the default without an image) keeps the single ``srun bash -c`` step."""
    bare = base_stack("torchrun", None, model={"script": "run.sh", "image": None})
    explicit = base_stack("torchrun", "none", model={"script": "run.sh", "image": IMAGE})
    for stack in (bare, explicit):
        script = jobs(resolve(stack, source="test"))["worker"].script
        steps = [line for line in script.splitlines() if line.startswith(f"{scripts.STEP_SRUN} ")]
        assert len(steps) == 1 and "container" not in script and "taskenv" not in script
    assert jobs(resolve(bare, source="test"))["worker"].script_sha256 == jobs(resolve(explicit, source="test"))["worker"].script_sha256


# -- validation ----------------------------------------------------------------------------------


def problems_of(stack: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        resolve(stack, source="test")
    return info.value.problems


def test_an_image_without_a_runtime_is_refused_with_the_way_to_choose() -> None:
    stack = base_stack("torchrun", None)
    (problem,) = [p for p in problems_of(stack) if p[0].startswith("slurm.container")]
    assert problem[0] == "slurm.container.runtime"
    assert IMAGE in problem[1] and "pyxis" in problem[1] and "apptainer" in problem[1] and "none" in problem[1]


def test_a_runtime_without_an_image_is_refused() -> None:
    stack = base_stack("torchrun", "pyxis", model={"image": None, "script": "run.sh"})
    assert [p[0] for p in problems_of(stack)] == ["model.image"]


def test_an_unknown_runtime_is_refused_naming_the_field() -> None:
    stack = base_stack("torchrun", "docker")
    fields = [p[0] for p in problems_of(stack)]
    assert any(field.startswith("slurm.container") for field in fields), fields


@pytest.mark.parametrize("mount", ["relative/dir", "/a:/b:rx", "/a,/b", "/a b", "/a:/b:ro:x", "/a:rel"])
def test_a_bad_mount_is_refused_naming_its_index(mount: str) -> None:
    stack = base_stack("torchrun", "apptainer", slurm={"container": {"runtime": "apptainer", "mounts": ["/ok", mount]}})
    (problem,) = problems_of(stack)
    assert problem[0] == "slurm.container.mounts[1]"


@pytest.mark.parametrize("field", ["mounts", "options"])
def test_mounts_and_options_without_a_runtime_are_refused(field: str) -> None:
    stack = base_stack("torchrun", "none", slurm={"container": {"runtime": "none", field: ["/x"]}})
    assert [p[0] for p in problems_of(stack)] == [f"slurm.container.{field}"]


def test_an_image_with_blanks_is_refused() -> None:
    stack = base_stack("torchrun", "pyxis", model={"image": "bad image", "script": "run.sh"})
    assert [p[0] for p in problems_of(stack)] == ["model.image"]


def test_the_runtime_may_be_given_as_a_string() -> None:
    spec = resolve(base_stack("torchrun", None, slurm={"container": "singularity"}), source="test")
    assert spec.slurm.container.runtime == "singularity"
    assert "exec singularity exec" in jobs(spec)["worker"].script
