"""sbatch scripts for one role pool, generated from the stack alone (pure).

Layout of a generated script::

    #!/bin/bash
    #SBATCH --job-name / --comment / --partition / --nodes / --time / --gres / --exclusive ...
    #SBATCH --ntasks-per-node=1 / --output / --error / --mail-*      (fixed part)
    set -eo pipefail, module load, MADINFRA_WORKDIR, cd, end-marker trap (training only),
    MADINFRA_RESULTS_DIR (slurm.results_dir), secrets, literal env (with slurm.network_interface)
    madinfra_stamp / madinfra_step definitions and the log header (logformat.py)
    madinfra_step srun --label ... bash -c '<per-task script: . topology.env, runtime env, unset, command>'
    (with slurm.container: the same, split between the node and the image; see containers.py)

What the madengine-compatible ``slurm`` settings become here (``unsupported.py`` refuses the
ones madinfra does not carry out):

- ``shared_workspace``: the directory on shared storage the job runs in. madengine ``cd``s into
  it; madinfra keeps one sub-directory per stack there, ``<shared_workspace>/<stack>`` (scripts,
  logs, topology), exactly as ``slurm.remote_dir`` would, so stacks never share files.
- ``results_dir``: created by the job (``mkdir -p``) and exported as ``MADINFRA_RESULTS_DIR`` to
  every task; a relative path is relative to the stack's directory. madengine documents it as the
  shared directory results are collected in, but never renders it.
- ``network_interface``: exported as ``NCCL_SOCKET_IFNAME`` and ``GLOO_SOCKET_IFNAME`` before
  ``srun``, so every rank inherits them. As in madengine's job template it beats ``env_vars``
  (including the multi-node preset's ``eth0``); only ``roles.<role>.env`` overrides it.
- ``output_dir``: sbatch output stays in ``logs/`` under the stack's directory (the provider and
  the error messages of apply point there); moving it is done with ``remote_dir`` or
  ``shared_workspace``, and other values are refused at validate. Every line there carries the
  UTC time and the task (node rank) that wrote it, stdout and stderr apart (``logformat.py``;
  ``madinfra logs`` reads them).

The ``#SBATCH`` lines of the options that ``Resource.spec`` diffs one by one (name, partition,
nodes, GPUs, time, ...) are left out of ``script_sha256``; everything else (fixed header and
body) is hashed. So changing the time limit is an in-place ``scontrol update``, while changing a
command, an environment value or an uploaded file changes the hash and forces a resubmission.

Quoting: user values are exported with ``shlex.quote``; runtime expressions come from the
launchers (trusted) and are exported inside double quotes on the node; the per-task script is
handed to ``bash -c`` as one quoted word. Option values in ``#SBATCH`` lines are not seen by the
shell, but sbatch splits them on blanks and a newline would start a new script line, so they are
checked to be a single printable word.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
from dataclasses import dataclass

from madinfra import naming
from madinfra.config.option_words import option_word_problem
from madinfra.config.schema import StackSpec
from madinfra.errors import ConfigError
from madinfra.launchers import kv_layout
from madinfra.launchers.ray_node import parse_topology as read_topology
from madinfra.launchers.model import LaunchPlan, RoleLaunch
from madinfra_slurm import containers, logformat, markers, units

KIND = "slurm/Job"
LOG_DIR = "logs"
STATUS_DIR = markers.STATUS_DIR
TOPOLOGY_FILE = "topology.env"
TOPOLOGY_SOURCE = (
    f'. "$MADINFRA_WORKDIR"/{TOPOLOGY_FILE} || {{ echo "madinfra: $MADINFRA_WORKDIR/{TOPOLOGY_FILE} is missing; run madinfra apply" >&2; exit 1; }}'
)
"""First line of every task of a stack with a topology (``LaunchPlan.topology_env``)."""
OUTPUT_PATTERN = f"{LOG_DIR}/%x_%j.out"
ERROR_PATTERN = f"{LOG_DIR}/%x_%j.err"
ENDPOINTS_DIR = "endpoints"
RESULTS_ENV = "MADINFRA_RESULTS_DIR"
SHARED_DATA_ENV = "MADINFRA_SHARED_DATA"
"""Where top-level ``shared_data`` (a dataset path on every node) reaches the workload."""
"""Where ``slurm.results_dir`` is exported to the workload (absolute once the job runs)."""
NETWORK_ENV = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")
"""The variables ``slurm.network_interface`` sets, the two madengine's job template exports."""
SRUN = "srun --label --ntasks-per-node=1 --kill-on-bad-exit=1"
"""Every job step: one task per node over the whole allocation, each output line labelled with
its task id (the node rank); run under ``logformat.STEP``, which stamps the time."""
STEP_SRUN = f"{logformat.STEP} {SRUN}"
COMMENT_PREFIX = "madinfra:"
DEFAULTED_OPTIONS = ("exclusive", "qos", "account", "mem")
"""Options a cluster fills with its own default when a job does not ask (``squeue`` then shows
the default, e.g. QOS ``normal``), or does not track at all (QOS and account read ``(null)``
without accounting). The comment records the ones madinfra asked for, with their values, so the
live read reports only those, falls back to the recorded value where SLURM shows nothing, and an
unset option never looks like drift."""



REPLICA_INDEX_ENV = "MADINFRA_REPLICA_INDEX"
"""Exported in a pool replica's script: its index in the pool (the launcher's ranks use it)."""
_REPLICA_RE = re.compile(r"^(?P<pool>.+)-(?P<index>\d+)$")


def replica_role(pool: str, index: int) -> str:
    """``decode-2``: the job role of one pool replica (job ``madinfra.<stack>.decode-2``)."""
    return f"{pool}-{index}"


def split_replica(role: str) -> tuple[str, int | None]:
    """``decode-2`` -> ``("decode", 2)``; a role without a replica suffix -> ``(role, None)``
    (no launcher role name ends in ``-<digits>``)."""
    match = _REPLICA_RE.match(role)
    return (match["pool"], int(match["index"])) if match else (role, None)


def replica_launch(role: RoleLaunch, index: int) -> RoleLaunch:
    """Replica ``index`` of a serving pool: one node, its own job role, and its index exported
    as ``MADINFRA_REPLICA_INDEX`` (the launcher's rank and SGLANG_NODE_IPS read it). Nothing in
    it depends on the pool's size, so resizing a pool leaves the other replicas' scripts alone."""
    return dataclasses.replace(
        role,
        role=replica_role(role.role, index),
        nodes=1,
        first_rank=role.first_rank + index,
        env={**role.env, REPLICA_INDEX_ENV: str(index)},
    )


def script_file(role: str) -> str:
    return f"{role}.sbatch"


def secrets_file(role: str) -> str:
    return f"{role}.secrets.env"


def resource_id(role: str) -> str:
    return f"{KIND}/{role}"


def base_comment(stack: str, role: str) -> str:
    """The part of the comment ``Resource.spec`` diffs: which stack and resource the job is."""
    return f"{COMMENT_PREFIX}stack={stack};resource={resource_id(role)}"


def full_comment(stack: str, role: str, script_sha256: str, asked: dict[str, str], image: str | None = None, kv: str | None = None) -> str:
    """What ``--comment`` carries: the base comment plus the script hash, asked-for defaults,
    the container image (when the job runs one) and a disaggregated pool replica's KV cache
    layout (``launchers.kv_layout``), so one ``squeue`` call gives the planner everything it
    compares, and a live read can name the image and layout a job runs with."""
    comment = f"{base_comment(stack, role)};script={script_sha256}"
    for name in DEFAULTED_OPTIONS:
        if name in asked:
            comment += f";{name}={asked[name]}"
    if image is not None:
        comment += f";image={image}"
    if kv is not None:
        comment += f";kv={kv}"
    return comment


def container_image(spec: StackSpec) -> str | None:
    """The image the job's tasks run in, ``None`` on the bare host (``slurm.container``)."""
    container = containers.container_for(spec, shell_path)
    return container.image if container is not None else None


def parse_comment(comment: str) -> dict[str, str] | None:
    """The fields of a madinfra comment, or ``None`` for a comment madinfra did not write."""
    if not comment.startswith(COMMENT_PREFIX):
        return None
    fields: dict[str, str] = {}
    for part in comment[len(COMMENT_PREFIX):].split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    return fields


@dataclass(frozen=True)
class JobOptions:
    """The sbatch options ``Resource.spec`` holds one by one (each may be diffed on its own)."""

    name: str
    partition: str
    nodes: int
    gpus_per_node: int
    time: str
    exclusive: bool = False
    qos: str | None = None
    account: str | None = None
    constraint: str | None = None
    nodelist: str | None = None
    exclude: str | None = None
    reservation: str | None = None
    mem: str | None = None

    @property
    def asked_defaults(self) -> dict[str, str]:
        """The defaulted options this job asks for, as the comment records them."""
        asked = {"exclusive": "1"} if self.exclusive else {}
        for name in DEFAULTED_OPTIONS[1:]:
            value = getattr(self, name)
            if value is not None:
                asked[name] = value
        return asked


@dataclass(frozen=True)
class RenderedJob:
    """Everything apply needs to submit one role's job; ``script`` is the full text."""

    role: str
    options: JobOptions
    comment: str
    script: str
    script_sha256: str
    secret_names: tuple[str, ...] = ()


def job_options(spec: StackSpec, role: RoleLaunch) -> JobOptions:
    """The option values for a role, validated and in canonical form."""
    slurm = spec.slurm
    if slurm is None:
        raise ConfigError(spec.name, [("slurm", "the stack has no 'slurm' section; the SLURM provider needs one")])
    try:
        time = units.normalize_time(slurm.time)
    except ValueError as exc:
        raise ConfigError(spec.name, [("slurm.time", str(exc))]) from None
    mem = None
    if slurm.mem is not None:
        try:
            mem = units.normalize_mem(slurm.mem)
        except ValueError as exc:
            raise ConfigError(spec.name, [("slurm.mem", str(exc))]) from None
    options = JobOptions(
        name=naming.slurm_job_name(spec.name, role.role),
        partition=slurm.partition,
        nodes=role.nodes,
        gpus_per_node=role.gpus_per_node,
        time=time,
        exclusive=slurm.exclusive,
        qos=slurm.qos,
        account=slurm.account,
        constraint=slurm.constraint,
        nodelist=slurm.nodelist,
        exclude=slurm.exclude,
        reservation=slurm.reservation,
        mem=mem,
    )
    _check_option_words(spec, options)
    return options


def _check_option_words(spec: StackSpec, options: JobOptions) -> None:
    assert spec.slurm is not None
    checked = {
        "partition": options.partition,
        "qos": options.qos,
        "account": options.account,
        "constraint": options.constraint,
        "nodelist": options.nodelist,
        "exclude": options.exclude,
        "reservation": options.reservation,
        "mail_user": spec.slurm.mail_user,
        "mail_type": spec.slurm.mail_type,
    }
    problems = [p for p in (option_word_problem(f"slurm.{key}", value) for key, value in checked.items()) if p]
    if problems:
        raise ConfigError(spec.name, problems)


def option_lines(options: JobOptions, comment: str) -> list[str]:
    """``#SBATCH`` lines of the individually diffed options (not part of ``script_sha256``)."""
    lines = [
        f"#SBATCH --job-name={options.name}",
        f"#SBATCH --comment={comment}",
        f"#SBATCH --partition={options.partition}",
        f"#SBATCH --nodes={options.nodes}",
        f"#SBATCH --time={options.time}",
    ]
    if options.gpus_per_node > 0:
        lines.append(f"#SBATCH --gres=gpu:{options.gpus_per_node}")
    if options.exclusive:
        lines.append("#SBATCH --exclusive")
    for key in ("qos", "account", "constraint", "nodelist", "exclude", "reservation", "mem"):
        value = getattr(options, key)
        if value is not None:
            lines.append(f"#SBATCH --{key}={value}")
    return lines


def fixed_lines(spec: StackSpec) -> list[str]:
    """``#SBATCH`` lines that only change with the script (hashed)."""
    assert spec.slurm is not None
    lines = [
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --output={OUTPUT_PATTERN}",
        f"#SBATCH --error={ERROR_PATTERN}",
    ]
    if spec.slurm.mail_user:
        lines.append(f"#SBATCH --mail-user={spec.slurm.mail_user}")
    if spec.slurm.mail_type:
        lines.append(f"#SBATCH --mail-type={spec.slurm.mail_type}")
    return lines


def remote_dir(spec: StackSpec) -> str:
    """The stack's directory on the cluster as written in the stack: ``<shared_workspace>/<stack>``
    when ``slurm.shared_workspace`` is set (madengine's "run the job on shared storage"), else
    ``<remote_dir>/<stack>`` (``~/.madinfra/<stack>`` by default). Everything the provider does
    (upload, submit, logs, live read) follows this one path; validate refuses setting both."""
    assert spec.slurm is not None
    return naming.slurm_remote_dir(spec.slurm.shared_workspace or spec.slurm.remote_dir, spec.name)


def results_dir_word(spec: StackSpec) -> str | None:
    """``slurm.results_dir`` as a shell word for the job (``None`` when unset): ``~/`` is the
    user's home, an absolute path stays, a relative one is under ``$MADINFRA_WORKDIR`` so it does
    not depend on where the job happens to be when the workload reads it."""
    assert spec.slurm is not None
    path = spec.slurm.results_dir
    if path is None:
        return None
    if path == "~" or path.startswith(("~/", "/")):
        return shell_path(path)
    return '"$MADINFRA_WORKDIR"/' + shlex.quote(path)


def job_env(spec: StackSpec, role: RoleLaunch) -> dict[str, str]:
    """The literal environment the batch script exports: the role's env with
    ``slurm.network_interface`` applied. It overrides ``env_vars`` (madengine's template exports
    it after them, so the multi-node preset's ``NCCL_SOCKET_IFNAME=eth0`` cannot undo it), but
    not ``roles.<role>.env``, the most specific setting there is. Top-level ``shared_data``
    (madengine's "dataset location on all nodes") is ``MADINFRA_SHARED_DATA`` unless the role's
    env already names that variable."""
    assert spec.slurm is not None
    env = dict(role.env)
    if spec.shared_data is not None:
        env.setdefault(SHARED_DATA_ENV, spec.shared_data)
    interface = spec.slurm.network_interface
    if interface is not None:
        override = spec.roles.get(split_replica(role.role)[0])
        pinned = set(override.env) if override is not None else set()
        computed = {name for name, _ in role.runtime_env} | set(role.unset_env)
        for name in NETWORK_ENV:
            if name not in pinned and name not in computed:
                env[name] = interface
    return env


def shell_path(path: str) -> str:
    """A remote path as a shell word: a leading ``~/`` becomes ``"$HOME"/`` (quoted ``~`` never
    expands), the rest is quoted."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"'
    return shlex.quote(path)


def task_script(role: RoleLaunch, *, topology: bool = False) -> str:
    """What ``srun`` runs on every node of the pool: the stack's topology (when it has one),
    runtime env in order, unsets, the command.

    The topology file is sourced by a fixed line, never inlined: its values (pool sizes, first
    ranks) change when another pool is resized, and this job's script hash must not.
    """
    lines = [TOPOLOGY_SOURCE] if topology else []
    lines += [f'export {name}="{expression}"' for name, expression in role.runtime_env]
    if role.unset_env:
        lines.append("unset " + " ".join(role.unset_env))
    lines.append(role.command)
    return "\n".join(lines) + "\n"


def body_lines(
    spec: StackSpec,
    launch: LaunchPlan,
    role: RoleLaunch,
    *,
    files_digest: str | None = None,
    secret_digests: dict[str, str] | None = None,
) -> list[str]:
    """The script after the ``#SBATCH`` header.

    Digests of the uploaded files and of secret values are written as comments: they make the
    script hash change when a file or a secret changes, without the file or value being in it.
    A training job records how it ended (``markers.py``); every task of a stack with a topology
    sources ``topology.env`` first.
    """
    assert spec.slurm is not None
    secret_digests = secret_digests or {}
    lines = [
        "set -eo pipefail",
        f"# Generated by madinfra for stack {spec.name}, role {role.role}"
        f" (launcher {launch.launcher or 'none'}); apply regenerates it, do not edit.",
    ]
    if files_digest:
        lines.append(f"# madinfra:files {files_digest}")
    for name in sorted(secret_digests):
        lines.append(f"# madinfra:secret {name} {secret_digests[name]}")
    lines += [f"module load {shlex.quote(module)}" for module in spec.slurm.modules]
    lines += [
        f"export MADINFRA_WORKDIR={shell_path(remote_dir(spec))}",
        'cd "$MADINFRA_WORKDIR"',
    ]
    if launch.workload == "training":
        lines += markers.trap_lines(role.role)
    results = results_dir_word(spec)
    if results is not None:
        # Made by the batch step on the first node: results_dir is meant to be shared storage.
        # After the end-marker trap, so a directory that cannot be made fails the job here
        # (set -e) with the failure recorded, not later in the workload.
        lines += [f"export {RESULTS_ENV}={results}", f'mkdir -p "${RESULTS_ENV}"']
    if secret_digests:
        lines.append(f'. "$MADINFRA_WORKDIR"/{shlex.quote(secrets_file(role.role))}')
    env = job_env(spec, role)
    for name in sorted(env):
        lines.append(f"export {name}={shlex.quote(env[name])}")
    container = containers.container_for(spec, shell_path)
    lines += logformat.script_lines()
    if container is None:
        # No --nodes/--ntasks: the step spans the whole allocation, so a pending job's node count
        # can still change with scontrol update without the script (and its hash) changing.
        lines.append(f"{STEP_SRUN} bash -c {shlex.quote(task_script(role, topology=bool(launch.topology_env)))}")
        return lines
    extra = ([RESULTS_ENV] if results is not None else []) + sorted(secret_names(spec, secret_digests))
    lines += containers.srun_lines(
        spec,
        launch,
        role,
        container,
        srun=STEP_SRUN,
        topology_source=TOPOLOGY_SOURCE if launch.topology_env else None,
        literal_env=sorted(env),
        extra_names=extra,
    )
    return lines


def secret_names(spec: StackSpec, secret_digests: dict[str, str]) -> set[str]:
    """The secret variables the job sources (they must reach a container like the rest)."""
    return set(secret_digests)


def digest(lines: list[str]) -> str:
    return hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()


def render_job(
    spec: StackSpec,
    launch: LaunchPlan,
    role: RoleLaunch,
    *,
    files_digest: str | None = None,
    secret_digests: dict[str, str] | None = None,
) -> RenderedJob:
    """The full sbatch script of one role pool and its hash."""
    options = job_options(spec, role)
    hashed = fixed_lines(spec) + body_lines(spec, launch, role, files_digest=files_digest, secret_digests=secret_digests)
    sha = digest(hashed)
    kv = kv_layout.for_role(launch, split_replica(role.role)[0])
    comment = full_comment(spec.name, role.role, sha, options.asked_defaults, container_image(spec), kv)
    script = "\n".join(["#!/bin/bash", *option_lines(options, comment), *hashed]) + "\n"
    return RenderedJob(
        role=role.role,
        options=options,
        comment=comment,
        script=script,
        script_sha256=sha,
        secret_names=tuple(sorted(secret_digests or {})),
    )


def secrets_text(values: dict[str, str]) -> str:
    """The 0600 file a job sources for its secret values (never part of script, spec or state)."""
    lines = ["# madinfra secret environment; uploaded with mode 0600, do not print"]
    lines += [f"export {name}={shlex.quote(values[name])}" for name in sorted(values)]
    return "\n".join(lines) + "\n"


def endpoints_text(addresses: list[str], port: int) -> str:
    """One ``http://<NodeAddr>:<port>`` per line, in the pool's node order."""
    return "".join(f"http://{address}:{port}\n" for address in addresses)


def topology_text(variables: dict[str, str]) -> str:
    """``topology.env``: one ``export K=V`` line per value, values shell-quoted."""
    lines = ["# madinfra stack topology; apply rewrites it, every task of the stack sources it"]
    lines += [f"export {name}={shlex.quote(variables[name])}" for name in sorted(variables)]
    return "\n".join(lines) + "\n"


def parse_topology(text: str) -> dict[str, str]:
    """The values of a ``topology.env`` as ``topology_text`` writes them (other lines ignored).
    One reader for the provider and for the Ray node program, which runs on the node
    without madinfra and so holds the code itself."""
    return read_topology(text)
