"""Settings madengine's schema has that madinfra does not carry out, refused at ``validate``.

A stack file that sets one of them gets a sentence naming the field and what to do instead,
never a silent no-op: a user who asks for a profiler, a pre-script or a storage class must not
believe they got one. Defaults (empty lists, unset values) pass, so every madengine context JSON
that does not use these features still loads.

SLURM settings of madengine and what madinfra does with them (the SLURM provider's
``scripts.py`` carries out the ones it implements):

- ``network_interface``, ``shared_workspace``, ``results_dir``: carried out (NCCL/GLOO socket
  interface for every rank; the stack's directory ``<shared_workspace>/<stack>``; a results
  directory the job creates and exports as ``MADINFRA_RESULTS_DIR``). Only malformed values are
  refused here.
- ``output_dir``: sbatch output goes to ``logs/`` in the stack's directory on the cluster. The
  default (``./slurm_results``, set by madengine's preset and every example) is accepted and does
  not move it; any other value is refused with the way to move the stack's directory instead.
- Node preflight (``enable_node_check``, ``auto_cleanup_nodes``, ``verbose_node_check``,
  ``allow_submit_without_clean_nodes``): madinfra never probes nodes before submitting; it
  leaves node choice to SLURM (``nodelist``, ``exclude``, ``constraint``). The values that
  describe that honestly (``enable_node_check: false``, ``allow_submit_without_clean_nodes:
  true``) and madengine's defaults load, so every madengine context JSON still does; the
  settings that tune a check madinfra never runs (``auto_cleanup_nodes: true``,
  ``verbose_node_check: true``) are refused, since a user who sets them expects nodes cleaned
  or a report printed. ``enable_node_check: true`` (madengine's default, also written out in its
  vLLM example) is accepted although no check runs: refusing madengine's own default would
  refuse nearly every madengine context JSON.
- ``container`` (madinfra's own): which runtime runs ``model.image`` (pyxis, apptainer or
  singularity, podman, none). An image with no runtime chosen is refused rather than guessed:
  madengine always runs the image, so dropping it silently would run the workload on the bare
  host, and guessing a runtime the cluster lacks would fail every job. ``none`` written out keeps
  the image for other targets (a stack shared with Kubernetes) and runs on the host.
- ``service.health_check.timeout`` on SLURM: apply waits ``slurm.ready_timeout`` for a job to
  start and pass its health check (``providers/slurm/madinfra_slurm/provider.py``), so another value is refused
  with that field named.
"""

from __future__ import annotations

import posixpath

from madinfra.config.option_words import is_option_word
from madinfra.config.schema import CONTAINER_RUNTIMES, HealthCheck, SlurmSpec, StackSpec

Problems = list[tuple[str, str]]

DEFAULT_SLURM_OUTPUT_DIR = SlurmSpec.model_fields["output_dir"].default
DEFAULT_SLURM_REMOTE_DIR = SlurmSpec.model_fields["remote_dir"].default
DEFAULT_HEALTH_TIMEOUT = HealthCheck.model_fields["timeout"].default


def unsupported_problems(spec: StackSpec) -> Problems:
    problems: Problems = []
    if spec.tools:
        problems.append(("tools", "profiling tools (rocprof, rocm-smi tracing, ...) are not supported by madinfra; remove them, or wrap your model.script with the profiler yourself"))
    for field in ("pre_scripts", "post_scripts"):
        if getattr(spec, field):
            problems.append((field, f"{field} are not supported by madinfra; run them from your model.script (it is a shell command, so `bash pre.sh && python train.py` works), or remove {field}"))
    k8s = spec.k8s
    if k8s is not None:
        if k8s.allow_privileged_profiling is not None:
            problems.append(("k8s.allow_privileged_profiling", "only applies to profiling tools, which madinfra does not support; remove it"))
        if k8s.local_path_storage_class is not None:
            problems.append(("k8s.local_path_storage_class", "is not supported by madinfra; set k8s.storage_class (results PVC) or k8s.data_storage_class (data PVC) instead"))
        if k8s.recreate_shared_data_pvc:
            problems.append(("k8s.recreate_shared_data_pvc", "madinfra never deletes a data volume on apply; delete the PVC yourself (kubectl delete pvc) and apply again, or remove this setting"))
        multi = spec.distributed.nnodes > 1
        results_class = (k8s.multi_node_results_storage_class if multi else k8s.single_node_results_storage_class) or k8s.storage_class
        if k8s.results_storage_size != "10Gi" and not results_class:
            problems.append(("k8s.results_storage_size", "sizes the results PVC madinfra creates, which it creates only for a storage class: set k8s.storage_class (or single_/multi_node_results_storage_class), or remove the size"))
        if k8s.results_pvc and results_class:
            problems.append(("k8s.results_pvc", "names an existing claim, so no results PVC is created and its storage class would go unused; remove one of k8s.results_pvc and the results storage class"))
        data_class = k8s.data_storage_class or k8s.nfs_storage_class
        if k8s.data_storage_size != "100Gi" and not data_class:
            problems.append(("k8s.data_storage_size", "sizes the data PVC madinfra creates, which it creates only for a storage class: set k8s.data_storage_class, or remove the size"))
        if k8s.data_pvc and data_class:
            problems.append(("k8s.data_pvc", "names an existing claim, so no data PVC is created and its storage class would go unused; remove one of k8s.data_pvc and the data storage class"))
        if k8s.secrets.runtime_secret_name and k8s.secrets.strategy != "existing":
            problems.append(("k8s.secrets.runtime_secret_name", f"names an existing Secret, which is only used with k8s.secrets.strategy: existing (not {k8s.secrets.strategy}); set the strategy or remove the name"))
    if spec.guest_os != "UBUNTU":
        problems.append(("guest_os", "selects the base OS of the images madengine builds; madinfra builds no image and runs model.image as given, so remove guest_os"))
    if spec.shared_data is not None:
        if spec.target == "k8s":
            problems.append(("shared_data", "is a path on SLURM nodes; on Kubernetes shared data is a volume: set k8s.data_pvc (an existing claim) or k8s.data_storage_class (mounted at /data), and remove shared_data"))
        elif not spec.shared_data.startswith("/"):
            problems.append(("shared_data", f"must be an absolute path on the nodes (got {spec.shared_data!r}); it is exported to every task as MADINFRA_SHARED_DATA and mounted into containers at the same path"))
    problems.extend(_slurm_problems(spec))
    return problems


def _same_path(a: str, b: str) -> bool:
    """``./slurm_results``, ``slurm_results`` and ``slurm_results/`` name one directory."""
    return posixpath.normpath(a) == posixpath.normpath(b)


def _usable_dir(path: str) -> bool:
    """Not blank, and no ``~user`` form: the job script expands only ``~`` and ``~/`` (anything
    else would be quoted into a directory literally named ``~user``)."""
    if not path.strip():
        return False
    return not path.startswith("~") or path == "~" or path.startswith("~/")


def _slurm_problems(spec: StackSpec) -> Problems:
    """The ``slurm`` settings (and SLURM-only meanings) madinfra cannot honour as written."""
    slurm = spec.slurm
    if slurm is None:
        return []
    problems: Problems = []
    if not _same_path(slurm.output_dir, DEFAULT_SLURM_OUTPUT_DIR):
        problems.append((
            "slurm.output_dir",
            f"madinfra writes each job's sbatch output to logs/<job name>_<job id>.out|.err in the stack's directory on the cluster "
            f"(<slurm.remote_dir>/<stack>, or <slurm.shared_workspace>/<stack>), not to {slurm.output_dir!r}; "
            "set slurm.remote_dir or slurm.shared_workspace to move that directory, and remove slurm.output_dir",
        ))
    if slurm.auto_cleanup_nodes:
        problems.append((
            "slurm.auto_cleanup_nodes",
            "madinfra runs no node preflight, so it never cleans nodes; remove it, and keep bad nodes out with slurm.exclude "
            "(or clean stale processes yourself before applying)",
        ))
    if slurm.verbose_node_check:
        problems.append((
            "slurm.verbose_node_check",
            "madinfra runs no node preflight, so there is no node check to report on; remove it",
        ))
    if slurm.network_interface is not None and not is_option_word(slurm.network_interface):
        problems.append((
            "slurm.network_interface",
            f"{slurm.network_interface!r} is not a network interface name; it becomes NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME, "
            "so give one word such as ib0 (or NCCL's list form, e.g. ib0,ib1)",
        ))
    workspace = slurm.shared_workspace
    if workspace is not None:
        if not (workspace == "~" or workspace.startswith(("/", "~/"))) or workspace.strip() != workspace:
            problems.append((
                "slurm.shared_workspace",
                f"{workspace!r} must be an absolute path on the cluster's shared storage (or start with ~/); "
                "the stack runs in <shared_workspace>/<stack> on every node",
            ))
        elif slurm.remote_dir != DEFAULT_SLURM_REMOTE_DIR and not _same_path(slurm.remote_dir, workspace):
            problems.append((
                "slurm.shared_workspace",
                f"and slurm.remote_dir ({slurm.remote_dir!r}) both set where the stack's directory is on the cluster; keep one of them",
            ))
    if slurm.results_dir is not None and not _usable_dir(slurm.results_dir):
        problems.append((
            "slurm.results_dir",
            f"{slurm.results_dir!r} is not a usable directory; give an absolute path, one starting with ~/, "
            "or one relative to the stack's directory on the cluster",
        ))
    problems.extend(_container_problems(spec))
    if spec.service is not None and spec.service.health_check.timeout != DEFAULT_HEALTH_TIMEOUT:
        problems.append((
            "service.health_check.timeout",
            f"is not used on SLURM: apply waits slurm.ready_timeout (now {slurm.ready_timeout} s) for each job to start and pass its "
            "health check; set slurm.ready_timeout instead and remove service.health_check.timeout",
        ))
    return problems


IMAGE_RUNTIMES = ", ".join(r for r in CONTAINER_RUNTIMES if r != "none")
MOUNT_FLAGS = ("ro", "rw")


def _container_problems(spec: StackSpec) -> Problems:
    """``slurm.container`` against ``model.image``: an image is never silently dropped, a runtime
    never runs without one, and every mount is a path the job can bind."""
    assert spec.slurm is not None
    container = spec.slurm.container
    image = spec.model.image
    runtime = container.runtime
    if runtime is None and image:
        return [(
            "slurm.container.runtime",
            f"is not set but model.image is {image!r}, and on SLURM an image runs only through a container runtime; "
            f"set slurm.container.runtime to the one your cluster has ({IMAGE_RUNTIMES}), or to none to run on the bare host without the image",
        )]
    if runtime in (None, "none"):
        return [
            (f"slurm.container.{field}", f"only applies when slurm.container.runtime runs an image ({IMAGE_RUNTIMES}); remove it or choose a runtime")
            for field in ("mounts", "options")
            if getattr(container, field)
        ]
    problems: Problems = []
    if not image:
        problems.append(("model.image", f"is empty but slurm.container.runtime is {runtime}; name the image to run, or set the runtime to none"))
    elif not is_option_word(image):
        problems.append(("model.image", f"{image!r} is not an image reference; remove spaces, quotes, backslashes and ';'"))
    for index, mount in enumerate(container.mounts):
        problem = _mount_problem(mount)
        if problem:
            problems.append((f"slurm.container.mounts[{index}]", problem))
    return problems


def _mount_problem(mount: str) -> str | None:
    """Why ``SRC[:DST[:ro|rw]]`` cannot be bound, or ``None``."""
    parts = mount.split(":")
    how = "write SRC, SRC:DST or SRC:DST:ro with absolute paths (or ~/...) on the cluster"
    if len(parts) > 3 or "," in mount or not is_option_word(mount):
        return f"{mount!r} is not a mount; {how}, without commas, spaces or quotes"
    if not all(part == "~" or part.startswith(("/", "~/")) for part in parts[:2]):
        return f"{mount!r} names a relative path; {how}"
    if len(parts) == 3 and parts[2] not in MOUNT_FLAGS:
        return f"{mount!r} ends in {parts[2]!r}, which is not ro or rw; {how}"
    return None
