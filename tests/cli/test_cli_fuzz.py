"""Hostile input through the real CLI (`validate`, `render`, `plan`), as property tests.

Three promises are checked on generated input:

- whatever the arguments and whatever the stack file holds, the CLI exits 0, 1 or 2 with a
  one-line ``Error:`` (or click's usage message) and never a traceback or an "internal error";
- shell metacharacters and non-ASCII text in the stack's string fields (env values, role env,
  model args, model path) reach the workload byte for byte and run nothing: the rendered SLURM
  script and the rendered Kubernetes container are executed by bash with stand-ins for srun,
  scontrol and torchrun, which record the arguments and environment the workload receives, while
  a marker file that any injected command would create stays absent;
- secret values (inline ``value`` and ``from_env``) never appear in validate, render or plan output.

`plan` runs against the in-memory provider of tests/engine (registered as the ``slurm`` target, as
tests/cli/test_engine_cmds.py does); `render` against the real providers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

ENGINE_TESTS = Path(__file__).resolve().parent.parent / "engine"
sys.path.insert(0, str(ENGINE_TESTS))

import memory_provider  # noqa: E402

from madinfra.cli import main  # noqa: E402
from madinfra.provider_registry import unregister  # noqa: E402
from tests_support import kubelet_expand  # noqa: E402

MARK = "@MARK@"
"""Replaced by the marker file's path: every injection attempt below would create that file."""

FRAGMENTS = (
    f"$(touch {MARK})",
    f"`touch {MARK}`",
    f"; touch {MARK}",
    f"| touch {MARK}",
    f"&& touch {MARK}",
    f"\ntouch {MARK}\n",
    f"'; touch {MARK}; '",
    f'"; touch {MARK}; "',
    f"$(touch {MARK})",
    f"$$(touch {MARK})",
    "$(NNODES)",
    "$$",
    "$((1+2))",
    "${HOME}",
    "$HOME",
    "\\",
    "\\n",
    "'",
    '"',
    "*",
    "?",
    "~",
    "~nosuchuser/x",
    "\x85",
    "\u2028",
    "!",
    "#",
    "%s",
    "{a,b}",
    "[bold]x[/bold]",
    "\t",
    "\r",
    "é",
    "日本語",
    "🙂",
    "\u00a0",
    "\u2028",
    "-",
    "--",
    " ",
)
SAFE_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
"""Everything but NUL, which no argv or environment can carry, and lone surrogates (not UTF-8)."""

hostile = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(SAFE_CHARACTERS, max_size=6)), min_size=1, max_size=5).map("".join)
script_names = hostile.map(lambda s: s + ".py")
env_suffix = st.from_regex(r"\A[A-Z0-9_]{1,6}\Z")


FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
"""Properties that run bash per example (about 50 ms each)."""
BROAD = settings(FAST, max_examples=100)
"""In-process properties (a few ms each)."""


# -- helpers ---------------------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str, str]:
    """``madinfra ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return code if isinstance(code, int) else (0 if code is None else 1), out.getvalue(), err.getvalue()


def assert_clean_exit(code: int, out: str, err: str, args: tuple[str, ...]) -> None:
    """Exit 0/1/2; on failure one clear message, never a traceback or an internal error."""
    where = f"madinfra {' '.join(map(repr, args))} -> {code}\nstdout: {out[-800:]}\nstderr: {err[-800:]}"
    assert code in (0, 1, 2), where
    assert "Traceback" not in out + err and "internal error" not in err, where
    if code == 1:
        assert err.startswith("Error: ") and err.strip(), where
    if code == 2:  # a usage error, no command at all (the help is shown), or plan's "changes" code
        usage = "Error" in err and ("Usage:" in err or "Try " in err)
        bare = not args and "Usage:" in out
        changes = "--detailed-exitcode" in args and (' "has_changes": true' in out or "\nPlan: " in out) and not err
        assert usage or bare or changes, where


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def memory_target() -> Iterator[None]:
    """The in-memory provider as the ``slurm`` target (it ignores the launch plan, so the real
    launchers still compile every stack; ``k8s`` stacks reach the real provider, which stops
    with a clear message since there is no cluster)."""
    memory_provider.install(None)
    try:
        yield
    finally:
        unregister("slurm")


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


# -- stand-ins for the cluster's programs -----------------------------------------------------------

FAKE_SRUN = """#!/bin/bash
# srun OPTIONS... PROGRAM ARGS: run PROGRAM as task 0 of one node
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
export SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0
exec "$@"
"""
FAKE_SQUEUE = """#!/bin/bash
# The job script's end marker asks squeue for the job's own row; no controller here.
exit 0
"""
FAKE_SCONTROL = """#!/bin/bash
case "$*" in
  *hostnames*) echo node1 ;;
  *"show node"*) echo "NodeName=node1 Arch=x86_64 NodeAddr=127.0.0.1 NodeHostName=node1 State=IDLE" ;;
esac
exit 0
"""
FAKE_WORKLOAD = """#!/bin/bash
# The workload: records exactly the argv and environment it received.
printf '%s\\0' "$@" > "$FUZZ_OUT/argv"
env -0 > "$FUZZ_OUT/env"
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("squeue", FAKE_SQUEUE), ("torchrun", FAKE_WORKLOAD)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"root": root, "bin": bin_dir, "marker": root / "INJECTED"}


def run_workload(sandbox: dict[str, Path], argv: list[str], env: dict[str, str], cwd: Path) -> tuple[list[str], dict[str, str]]:
    """Run ``argv`` with only ``env`` (plus the stand-ins on PATH); return what torchrun got."""
    out = sandbox["root"] / "out"
    out.mkdir(exist_ok=True)
    for name in ("argv", "env"):
        (out / name).unlink(missing_ok=True)
    full_env = {**env, "PATH": f"{sandbox['bin']}:/usr/bin:/bin", "FUZZ_OUT": str(out), "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(argv, env=full_env, cwd=cwd, capture_output=True, timeout=30)
    assert proc.returncode == 0, f"the workload script failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-1500:]}"
    assert not sandbox["marker"].exists(), "an injected command ran: the marker file exists"
    args = (out / "argv").read_bytes().split(b"\0")[:-1]
    pairs = (out / "env").read_bytes().split(b"\0")[:-1]
    environment = dict(p.decode("utf-8").split("=", 1) for p in pairs)
    return [a.decode("utf-8") for a in args], environment


# -- 1. any arguments, any stack file: a clean exit ------------------------------------------------

VALID_SLURM = {"name": "fz", "slurm": {"partition": "debug", "gpus_per_node": 1, "time": "10"}, "distributed": {"launcher": "torchrun", "nnodes": 1}}
VALID_K8S = {"name": "fz", "k8s": {"namespace": "ml", "gpu_count": 1}, "distributed": {"launcher": "vllm", "nnodes": 1}}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzzfiles")
    (root / "a-directory").mkdir()
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    (root / "broken.yaml").write_text("name: [unclosed\n  - : :\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    return {
        "slurm": write_json(root / "slurm.json", VALID_SLURM),
        "k8s": write_json(root / "k8s.json", VALID_K8S),
        "dir": root / "a-directory",
        "binary": root / "binary.yaml",
        "broken": root / "broken.yaml",
        "list": root / "list.yaml",
        "missing": root / "missing.yaml",
        "under-a-file": root / "slurm.json" / "x.yaml",
        "root": root,
    }


argument_text = st.text(SAFE_CHARACTERS, max_size=12)
safe_name = st.from_regex(r"\A[a-z0-9_]{1,8}\Z")


@st.composite
def command_lines(draw, files: dict[str, Path]) -> list[str]:
    command = draw(st.sampled_from(["validate", "render", "plan", "plan", "--help", "valdate", ""]))
    positional = draw(
        st.one_of(
            st.sampled_from([str(files[k]) for k in ("slurm", "k8s", "dir", "binary", "broken", "list", "missing", "under-a-file")]),
            argument_text,
            st.none(),
        )
    )
    argv = [command] if command else []
    if positional is not None:
        argv.append(positional)
    options = {
        "--target": st.one_of(st.sampled_from(["k8s", "slurm"]), argument_text),
        "--out": st.one_of(safe_name.map(lambda n: str(files["root"] / "out" / n)), st.sampled_from([str(files["dir"]), str(files["slurm"]), str(files["under-a-file"])])),
        "--state-dir": st.one_of(safe_name.map(lambda n: str(files["root"] / "state" / n)), st.sampled_from([str(files["slurm"]), str(files["dir"])])),
        "--only": argument_text,
        "--json": st.none(),
        "--detailed-exitcode": st.none(),
        "--destroy": st.none(),
        "--no-color": st.none(),
        "--ssh-target": argument_text,
        "--help": st.none(),
        "--bogus": st.none(),
        "-x": st.none(),
    }
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=4)):
        argv.append(name)
        value = draw(options[name])
        if value is not None:
            argv.append(value)
    if draw(st.booleans()):
        argv.append(draw(argument_text))
    return argv


def test_any_command_line_exits_cleanly(files, monkeypatch):
    monkeypatch.chdir(files["root"])  # relative paths (default state dir, random names) stay in tmp

    @BROAD
    @given(data=st.data())
    def check(data):
        argv = data.draw(command_lines(files))
        # A random "--out=PATH" would write wherever PATH points; --out values come from the table.
        assume(not any(arg.startswith("--out=") for arg in argv))
        # plan runs on the in-memory provider; validate and render never need one that connects.
        with memory_target() if argv[:1] == ["plan"] else contextlib.nullcontext():
            code, out, err = run_cli(*argv)
        assert_clean_exit(code, out, err, tuple(argv))

    check()


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), argument_text)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(argument_text, inner, max_size=3)), max_leaves=8)
KNOWN_KEYS = {
    "": ["name", "target", "slurm", "k8s", "distributed", "model", "env_vars", "secret_env", "roles", "service", "deployment_config", "gpu_vendor", "_comment"],
    "distributed": ["launcher", "type", "nnodes", "nproc_per_node", "master_port", "backend", "sglang_disagg", "vllm_backend"],
    "slurm": ["partition", "nodes", "gpus_per_node", "time", "exclusive", "mem", "nodelist"],
    "k8s": ["namespace", "gpu_count", "gpu_resource_name", "memory", "tolerations", "node_selector"],
    "model": ["script", "args", "image", "scripts_dir", "name"],
}
LAUNCHER_NAMES = ["torchrun", "deepspeed", "megatron", "megatron-lm", "torchtitan", "vllm", "sglang", "sglang-disagg", "sglang_disagg", "nope"]


@st.composite
def stack_documents(draw) -> Any:
    """Mostly stack-shaped mappings with wrong, missing or surprising values; sometimes not a
    mapping at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    base = draw(st.sampled_from([VALID_SLURM, VALID_K8S, {}]))
    document = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 5))):
        section = draw(st.sampled_from(sorted(KNOWN_KEYS)))
        key = draw(st.one_of(st.sampled_from(KNOWN_KEYS[section]), argument_text))
        value = draw(st.one_of(json_values, st.sampled_from(LAUNCHER_NAMES), st.integers(-3, 1100)))
        if section == "":
            document[key] = value
        else:
            target = document.setdefault(section, {})
            if isinstance(target, dict):
                target[key] = value
    return document


def test_any_stack_document_is_validated_rendered_and_planned_cleanly(files):
    stack_file = files["root"] / "doc.json"

    @BROAD
    @given(document=stack_documents(), command=st.sampled_from(["validate", "render", "plan"]))
    def check(document, command):
        stack_file.write_text(json.dumps(document, ensure_ascii=False, allow_nan=True), encoding="utf-8")
        args = (command, str(stack_file), "--state-dir", str(files["root"] / "state-docs")) if command == "plan" else (command, str(stack_file))
        with memory_target() if command == "plan" else contextlib.nullcontext():
            code, out, err = run_cli(*args)
        assert code in (0, 1), (code, err)
        assert_clean_exit(code, out, err, args)

    check()


# -- 2. hostile strings reach the workload unchanged and execute nothing ---------------------------


@st.composite
def hostile_stacks(draw, target: str) -> dict[str, Any]:
    env = draw(st.dictionaries(env_suffix.map(lambda s: f"FZ_{s}"), hostile, min_size=1, max_size=3))
    role_env = draw(st.dictionaries(env_suffix.map(lambda s: f"FZR_{s}"), hostile, max_size=2))
    args = draw(st.lists(hostile, max_size=3))
    token = draw(st.integers(10**6, 10**7))
    secret_inline = f"S3cr3t-{token}-{draw(hostile)}"
    secret_from_env = f"Fr0mEnv-{token}-{draw(hostile)}"
    stack: dict[str, Any] = {
        "name": "fz",
        "distributed": {"launcher": "torchrun", "nnodes": draw(st.integers(1, 2)), "nproc_per_node": 1, "backend": "gloo"},
        # A script not ending in .py is run with bash rather than torchrun; both quote it alike.
        "model": {"script": draw(script_names), "args": args, "model_path": draw(hostile.filter(bool)), "name": draw(hostile), "image": "rocm/pytorch:latest"},
        "env_vars": env,
        "roles": {"worker": {"env": role_env}},
        "secret_env": {"FZ_TOKEN": {"value": secret_inline}, "FZ_FROM_ENV": {"from_env": "FUZZ_SECRET_SOURCE"}},
    }
    if target == "slurm":
        stack["slurm"] = {"partition": "debug", "gpus_per_node": 1, "time": "10", "exclusive": False, "container": "none"}
    else:
        stack["k8s"] = {"namespace": "ml", "gpu_count": 1}
    return {"stack": stack, "secrets": (secret_inline, secret_from_env), "expected_env": {**env, **role_env}}


def with_marker(value: Any, marker: Path) -> Any:
    if isinstance(value, str):
        return value.replace(MARK, str(marker))
    if isinstance(value, list):
        return [with_marker(v, marker) for v in value]
    if isinstance(value, dict):
        return {k: with_marker(v, marker) for k, v in value.items()}
    return value


def assert_no_secret(secrets: tuple[str, ...], *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, "a secret value appears in the output"


def test_slurm_render_delivers_hostile_values_byte_for_byte(sandbox):
    workdir = sandbox["root"] / "slurm"
    workdir.mkdir()

    @FAST
    @given(case=hostile_stacks("slurm"))
    def check(case):
        case = with_marker(case, sandbox["marker"])
        stack, expected_env = case["stack"], case["expected_env"]
        assume(not any(s in json.dumps(stack["env_vars"], ensure_ascii=False) + json.dumps(stack["model"], ensure_ascii=False) for s in case["secrets"]))
        stack_file = write_json(workdir / "stack.json", stack)
        out_dir = workdir / "rendered"
        with environ(FUZZ_SECRET_SOURCE=case["secrets"][1]):
            v_code, v_out, v_err = run_cli("validate", stack_file)
            code, out, err = run_cli("render", stack_file, "--out", out_dir)
        assert (v_code, code) == (0, 0), v_err + err
        script = (out_dir / "worker.sbatch").read_bytes().decode("utf-8")  # no newline translation: values may hold \r
        assert_no_secret(case["secrets"], v_out, v_err, out, err, script)
        for key, value in expected_env.items():
            assert f"export {key}={shlex.quote(value)}\n" in script, key
            assert f"{key}={value}" in out, key  # the per-role summary shows the literal value

        home = workdir / "home"
        job_dir = home / ".madinfra" / "fz"
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "worker.secrets.env").write_text("")
        argv, env = run_workload(
            sandbox,
            ["bash", str(out_dir / "worker.sbatch")],
            {"HOME": str(home), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1"},
            workdir,
        )
        model = stack["model"]
        assert argv[-(len(model["args"]) + 1):] == [model["script"], *model["args"]]
        for key, value in expected_env.items():
            assert env.get(key) == value, key
        assert env.get("MODEL_PATH") == model["model_path"]

    check()


def test_k8s_render_delivers_hostile_values_byte_for_byte(sandbox):
    workdir = sandbox["root"] / "k8s"
    workdir.mkdir()

    @FAST
    @given(case=hostile_stacks("k8s"))
    def check(case):
        case = with_marker(case, sandbox["marker"])
        stack, expected_env = case["stack"], case["expected_env"]
        assume(not any(s in json.dumps(stack["env_vars"], ensure_ascii=False) + json.dumps(stack["model"], ensure_ascii=False) for s in case["secrets"]))
        stack_file = write_json(workdir / "stack.json", stack)
        out_dir = workdir / "rendered"
        with environ(FUZZ_SECRET_SOURCE=case["secrets"][1]):
            code, out, err = run_cli("render", stack_file, "--out", out_dir)
        assert code == 0, err
        texts = {p.name: p.read_bytes().decode("utf-8") for p in out_dir.iterdir()}
        assert_no_secret(case["secrets"], out, err, *texts.values())
        documents = [d for text in texts.values() for d in yaml.safe_load_all(text) if d]
        workloads = [d for d in documents if d.get("kind") in ("Job", "Deployment", "StatefulSet")]
        assert len(workloads) == 1
        container = workloads[0]["spec"]["template"]["spec"]["containers"][0]

        # What the kubelet hands the container: env values and command after $(VAR) expansion.
        env: dict[str, str] = {}
        for entry in container.get("env", []):
            if "valueFrom" in entry:
                env[entry["name"]] = f"from-{entry['name'].lower()}"
            else:  # an empty value is written without "value", as the API server returns it
                env[entry["name"]] = kubelet_expand(str(entry.get("value", "")), env)
        for key, value in expected_env.items():
            assert env.get(key) == value, key
        assert env.get("MODEL_PATH") == stack["model"]["model_path"]
        command = [kubelet_expand(part, env) for part in container["command"] + container.get("args", [])]
        env.update(MADINFRA_WORKDIR=str(workdir), JOB_COMPLETION_INDEX="0", HOME=str(workdir))
        argv, received = run_workload(sandbox, command, env, workdir)
        model = stack["model"]
        assert argv[-(len(model["args"]) + 1):] == [model["script"], *model["args"]]
        for key, value in expected_env.items():
            assert received.get(key) == value, key

    check()


def test_plan_shows_hostile_values_unchanged_and_never_a_secret(sandbox):
    workdir = sandbox["root"] / "plan"
    workdir.mkdir()

    @FAST
    @given(case=hostile_stacks("slurm"))
    def check(case):
        case = with_marker(case, sandbox["marker"])
        stack, expected_env = case["stack"], case["expected_env"]
        assume(not any(s in json.dumps(stack["env_vars"], ensure_ascii=False) for s in case["secrets"]))
        stack_file = write_json(workdir / "stack.json", stack)
        state_dir = workdir / "state"
        with environ(FUZZ_SECRET_SOURCE=case["secrets"][1]), memory_target():
            code, human, err = run_cli("plan", stack_file, "--state-dir", state_dir, "--no-color")
            j_code, machine, j_err = run_cli("plan", stack_file, "--state-dir", state_dir, "--json")
            saved = workdir / "saved.plan"
            s_code, _, s_err = run_cli("plan", stack_file, "--state-dir", state_dir, "--out", saved)
        assert (code, j_code, s_code) == (0, 0, 0), err + j_err + s_err
        assert_no_secret(case["secrets"], human, err, machine, j_err, saved.read_bytes().decode("utf-8"))
        job = next(c for c in json.loads(machine)["changes"] if c["kind"] == "mem_job")
        shown = {e["name"]: e["value"] for e in job["after"]["spec"]["env"]}
        for key, value in stack["env_vars"].items():
            assert shown[key] == value, key
            assert json.dumps(value) in human or json.dumps(value, ensure_ascii=False) in human, key
        assert not sandbox["marker"].exists()

    check()


ALL_LAUNCHERS = ("torchrun", "deepspeed", "megatron", "torchtitan", "vllm", "sglang", "sglang-disagg")


def k8s_container_env(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" not in entry:  # an empty value has no "value", as the API server returns it
            env[entry["name"]] = kubelet_expand(str(entry.get("value", "")), env)
    return env


@pytest.mark.parametrize("target", ["slurm", "k8s"])
def test_every_launcher_passes_env_values_unchanged(target, sandbox):
    """For all seven launchers: each user env value is exported shlex-quoted in every SLURM job
    script and comes back byte for byte from bash, or reaches every Kubernetes container intact
    after the kubelet's ``$(VAR)`` expansion."""
    workdir = sandbox["root"] / f"launchers-{target}"
    workdir.mkdir()

    @FAST
    @given(launcher=st.sampled_from(ALL_LAUNCHERS), env=st.dictionaries(env_suffix.map(lambda s: f"FZ_{s}"), hostile, min_size=1, max_size=3), model_path=hostile.filter(bool))
    def check(launcher, env, model_path):
        env = with_marker(env, sandbox["marker"])
        stack: dict[str, Any] = {
            "name": "fz",
            "distributed": {"launcher": launcher, "nnodes": 3 if launcher == "sglang-disagg" else 2, "nproc_per_node": 1},
            "model": {"script": "train.py" if launcher not in ("vllm", "sglang", "sglang-disagg") else None, "model_path": with_marker(model_path, sandbox["marker"]), "image": "img:1"},
            "env_vars": env,
        }
        stack["model"] = {k: v for k, v in stack["model"].items() if v is not None}
        # Disaggregated servers bind fixed ports, so they must not share a node (contracts.py).
        exclusive = launcher == "sglang-disagg"
        stack[target] = {"partition": "debug", "gpus_per_node": 1, "time": "10", "exclusive": exclusive, "container": "none"} if target == "slurm" else {"namespace": "ml", "gpu_count": 1}
        out_dir = workdir / "rendered"
        if out_dir.exists():
            for old in out_dir.iterdir():
                old.unlink()
        code, out, err = run_cli("render", write_json(workdir / "stack.json", stack), "--out", out_dir)
        assert code == 0, err
        texts = {p.name: p.read_bytes().decode("utf-8") for p in out_dir.iterdir()}
        if target == "slurm":
            scripts = [text for name, text in texts.items() if name.endswith(".sbatch")]
            assert scripts
            statements = [f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items())]
            for script in scripts:
                for statement in statements:
                    assert statement in script, statement
            proc = subprocess.run(
                ["bash", "-c", "".join(statements) + "env -0"],
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                cwd=workdir,
                capture_output=True,
                timeout=30,
            )
            assert proc.returncode == 0, proc.stderr
            received = dict(p.decode("utf-8").split("=", 1) for p in proc.stdout.split(b"\0")[:-1])
            for key, value in env.items():
                assert received[key] == value, key
        else:
            workloads = [d for text in texts.values() for d in yaml.safe_load_all(text) if d and d.get("kind") in ("Job", "Deployment", "StatefulSet")]
            assert workloads
            for workload in workloads:
                for container in workload["spec"]["template"]["spec"]["containers"]:
                    delivered = k8s_container_env(container)
                    for key, value in env.items():
                        assert delivered.get(key) == value, (workload["metadata"]["name"], key)
        assert not sandbox["marker"].exists()

    check()
