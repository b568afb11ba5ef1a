"""Running a role's tasks inside ``model.image`` on SLURM (``slurm.container``), pure.

Every task does its work in two stages, so the same launcher output works in any image:

1. **On the node** (outside any container): source the stack's topology and evaluate the
   runtime env (``${SLURM_PROCID}``, the allocation's first host from ``scontrol``, node
   addresses from ``getent``...). Those expressions need SLURM's tools, which images do not
   carry. The evaluated values and the job's literal env are written, quoted, to a per-task
   file in the stack's directory (mode 0600, in the 0700 directory).
2. **In the container**: source that file (and delete it: it may hold secret values), apply
   the launcher's unsets, run the command.

Re-exporting from the file instead of trusting each runtime's pass-through makes the process
see the same environment under every runtime: apptainer drops the host ``PATH`` and lets an
image's ``%environment`` win, podman passes nothing unless asked, enroot merges the image's
env. ``docker_env_vars`` are part of the literal env (over ``env_vars``, as ``docker run -e``
would; see ``launchers.common.finish``), so they arrive through the same file.

Runtimes and their lines (each ``srun`` below is the prefix ``scripts.py`` passes in,
``madinfra_step srun --label ...``, so a step's output is labelled and timed as on the bare
host: ``logformat.py``):

- ``pyxis``: pyxis is an ``srun`` plugin, so stage 1 is its own step (plain ``srun bash -c``)
  and stage 2 is ``srun --container-image=IMAGE --container-mounts=SRC:DST,...
  --container-workdir="$MADINFRA_WORKDIR" bash -c ...``. Both steps span the allocation with
  one task per node, so task N of both runs on the same node and finds its own file.
- ``apptainer`` / ``singularity`` (same flags, different binary): one step; stage 1 ends with
  ``exec apptainer exec --nv|--rocm --bind SRC:DST ... --pwd "$MADINFRA_WORKDIR" IMAGE bash -c``.
  No ``--cleanenv``: ``SLURM_*`` and the host env still reach the process as well.
- ``podman``: one step; ``exec podman run --rm --network=host --ipc=host -v SRC:DST ...
  --workdir "$MADINFRA_WORKDIR" --env MADINFRA_WORKDIR --env 'SLURM_*' IMAGE bash -c``; GPUs as
  devices (``/dev/kfd`` + ``/dev/dri`` for AMD, CDI ``nvidia.com/gpu=all`` for NVIDIA).

Mounts (source = target, so every path the launchers and the user wrote means the same thing
inside): the stack's directory ``$MADINFRA_WORKDIR`` (topology, endpoints, markers, uploaded
files), ``slurm.shared_workspace``, ``$MADINFRA_RESULTS_DIR`` (``slurm.results_dir``), an
absolute ``model.model_path`` (a hub id such as ``org/model`` is not a path and is not mounted),
top-level ``shared_data``, then ``slurm.container.mounts`` as written.

The image, runtime, mounts and options are all in the script, so changing any of them changes
``script_sha256`` and the plan replaces the job.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from madinfra.config.schema import StackSpec
from madinfra.launchers.model import LaunchPlan, RoleLaunch

TASK_ENV_DIR = "taskenv"
"""Directory (in the stack's directory) of the per-task env files stage 1 writes."""
WORKDIR_WORD = '"$MADINFRA_WORKDIR"'
RESULTS_WORD = '"$MADINFRA_RESULTS_DIR"'
RUNTIME_ALIASES = {"singularity": "apptainer"}
"""Runtimes that take another's flags; the binary stays the one the user named."""
APPTAINER_GPU_FLAG = {"AMD": "--rocm", "NVIDIA": "--nv"}
PODMAN_GPU_FLAGS = {
    "AMD": ("--device=/dev/kfd", "--device=/dev/dri", "--group-add=video"),
    "NVIDIA": ("--device=nvidia.com/gpu=all",),
}


@dataclass(frozen=True)
class Container:
    """How one stack's tasks run in an image: the runtime (its binary name), the image and the
    mount words (shell words, evaluated on the node)."""

    runtime: str
    image: str
    mounts: tuple[str, ...]
    options: tuple[str, ...]
    gpu_vendor: str

    @property
    def flavour(self) -> str:
        """Which flag set the runtime takes (``singularity`` takes apptainer's)."""
        return RUNTIME_ALIASES.get(self.runtime, self.runtime)


def runtime_of(spec: StackSpec) -> str:
    """The runtime in force: the one named, else ``none`` (validate refuses an unset runtime
    when ``model.image`` is set, so an image is never silently dropped)."""
    assert spec.slurm is not None
    return spec.slurm.container.runtime or "none"


def container_for(spec: StackSpec, shell_path) -> Container | None:
    """The stack's container, or ``None`` when tasks run on the bare host (runtime ``none``).

    ``shell_path`` turns a cluster path into a shell word (``~/`` -> ``"$HOME"/``); it is passed
    in so this module does not import ``scripts`` (which imports this one).
    """
    runtime = runtime_of(spec)
    if runtime == "none" or not spec.model.image:
        return None
    assert spec.slurm is not None
    return Container(
        runtime=runtime,
        image=spec.model.image,
        mounts=tuple(mount_words(spec, shell_path)),
        options=tuple(spec.slurm.container.options),
        gpu_vendor=spec.gpu_vendor,
    )


def _is_cluster_path(path: str) -> bool:
    return path == "~" or path.startswith(("/", "~/"))


def mount_words(spec: StackSpec, shell_path) -> list[str]:
    """``SRC:DST[:FLAGS]`` as shell words, madinfra's own mounts first, duplicates dropped."""
    assert spec.slurm is not None
    same = [WORKDIR_WORD]
    if spec.slurm.shared_workspace:
        same.append(shell_path(spec.slurm.shared_workspace))
    if spec.slurm.results_dir is not None:
        same.append(RESULTS_WORD)
    for path in (spec.model.model_path, spec.shared_data):
        if path and _is_cluster_path(path):
            same.append(shell_path(path))
    words = [f"{word}:{word}" for word in same]
    words += [user_mount_word(mount, shell_path) for mount in spec.slurm.container.mounts]
    return list(dict.fromkeys(words))


def user_mount_word(mount: str, shell_path) -> str:
    """A ``slurm.container.mounts`` entry as a shell word: ``SRC`` alone mounts it at the same
    path; the paths may start with ``~/`` (the user's home on the node)."""
    parts = mount.split(":")
    source = parts[0]
    target = parts[1] if len(parts) > 1 else source
    word = f"{shell_path(source)}:{shell_path(target)}"
    return word + (f":{parts[2]}" if len(parts) > 2 else "")


def task_env_file(role: str) -> str:
    """The per-task env file as a shell word (evaluated on the node and in the container)."""
    return f'"$MADINFRA_WORKDIR"/{TASK_ENV_DIR}/{shlex.quote(role)}.${{SLURM_JOB_ID}}.${{SLURM_PROCID}}.env'


def carried_names(launch: LaunchPlan, role: RoleLaunch, literal_env: list[str], extra: list[str]) -> list[str]:
    """Every variable the container must see with its node value, in export order: the job's
    literal env and madinfra's own variables, the topology, then the runtime env (which may
    use the others)."""
    names = ["MADINFRA_WORKDIR", *extra, *literal_env, *sorted(launch.topology_env)]
    names += [name for name, _ in role.runtime_env]
    unset = set(role.unset_env)
    return [name for name in dict.fromkeys(names) if name not in unset]


def save_env_lines(role: str, names: list[str]) -> list[str]:
    """Stage 1's last lines: write the named variables that are set, ``%q``-quoted, to the
    task's env file (0600: it may hold secret values)."""
    path = task_env_file(role)
    listed = " ".join(names)
    return [
        f'mkdir -p "$MADINFRA_WORKDIR"/{TASK_ENV_DIR}',
        f"(umask 077; for _n in {listed}; do"
        f' if [ -n "${{!_n+x}}" ]; then printf \'export %s=%q\\n\' "$_n" "${{!_n}}"; fi; done > {path})'
        f' || {{ echo "madinfra: cannot write {TASK_ENV_DIR}/{role} env file in $MADINFRA_WORKDIR" >&2; exit 1; }}',
    ]


def inner_script(role: RoleLaunch) -> str:
    """Stage 2, what runs in the container: the node's values (docker env included), unsets, command."""
    path = task_env_file(role.role)
    lines = [
        f'. {path} || {{ echo "madinfra: {TASK_ENV_DIR} env file of task $SLURM_PROCID is missing" >&2; exit 1; }}',
        f"rm -f {path}",
    ]
    if role.unset_env:
        lines.append("unset " + " ".join(role.unset_env))
    lines.append(role.command)
    return "\n".join(lines) + "\n"


def host_lines(launch: LaunchPlan, role: RoleLaunch, topology_source: str | None) -> list[str]:
    """Stage 1 up to saving: the topology and the runtime env, evaluated on the node."""
    lines = [topology_source] if topology_source else []
    lines += [f'export {name}="{expression}"' for name, expression in role.runtime_env]
    return lines


def runtime_command(container: Container, inner: str, gpus: int) -> str:
    """The ``exec`` that starts stage 2 under apptainer/singularity or podman; GPU flags only
    for a role that has GPUs (a disaggregated proxy has none, and the flags fail without them)."""
    image = shlex.quote(container.image)
    options = " ".join(shlex.quote(option) for option in container.options)
    if container.flavour == "apptainer":
        words = [container.runtime, "exec", *([APPTAINER_GPU_FLAG[container.gpu_vendor]] if gpus else [])]
        words += [f"--bind {mount}" for mount in container.mounts]
        words += [f"--pwd {WORKDIR_WORD}"]
    elif container.flavour == "podman":
        words = ["podman", "run", "--rm", "--network=host", "--ipc=host", *(PODMAN_GPU_FLAGS[container.gpu_vendor] if gpus else ())]
        words += [f"-v {mount}" for mount in container.mounts]
        words += [f"--workdir {WORKDIR_WORD}", "--env MADINFRA_WORKDIR", "--env 'SLURM_*'"]
    else:
        raise ValueError(f"runtime {container.runtime!r} is not started from a task")
    if options:
        words.append(options)
    return "exec " + " ".join([*words, image, "bash", "-c", shlex.quote(inner)])


def pyxis_options(container: Container) -> str:
    """The ``srun`` options of pyxis's container step."""
    words = [f"--container-image={shlex.quote(container.image)}"]
    if container.mounts:
        words.append("--container-mounts=" + ",".join(container.mounts))
    words.append(f"--container-workdir={WORKDIR_WORD}")
    words += [shlex.quote(option) for option in container.options]
    return " ".join(words)


def srun_lines(
    spec: StackSpec,
    launch: LaunchPlan,
    role: RoleLaunch,
    container: Container,
    *,
    srun: str,
    topology_source: str | None,
    literal_env: list[str],
    extra_names: list[str],
) -> list[str]:
    """The job's step lines for a containerised role (``srun`` is the step prefix, options
    included, up to the command)."""
    names = carried_names(launch, role, literal_env, extra_names)
    stage1 = host_lines(launch, role, topology_source) + save_env_lines(role.role, names)
    inner = inner_script(role)
    if container.flavour == "pyxis":
        return [
            f"{srun} bash -c {shlex.quote(chr(10).join(stage1) + chr(10))}",
            f"{srun} {pyxis_options(container)} bash -c {shlex.quote(inner)}",
        ]
    task = "\n".join([*stage1, runtime_command(container, inner, role.gpus_per_node)]) + "\n"
    return [f"{srun} bash -c {shlex.quote(task)}"]
