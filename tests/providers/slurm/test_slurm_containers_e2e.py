"""End to end on the SLURM sandbox: a training role runs inside a podman container.

Needs ``scripts/slurm-sandbox up`` and podman + runc on the cluster (``scripts/test`` installs
them). The image is built by the test, on the cluster, with no registry and no network: a tiny
rootfs of the node's own ``bash`` and a few coreutils (plus their libraries, found with ``ldd``)
and a marker file ``/etc/madinfra-in-container`` that only the image has, ``podman import``-ed
as ``localhost/madinfra-e2e:1``; ``--pull=never`` makes any attempt to pull an error.

This VM's podman needs two settings, both passed the way a user would pass them: runc instead of
crun (crun: "cgroups in hybrid mode not supported"), through a ``containers.conf`` named by
``CONTAINERS_CONF`` in ``env_vars``; and rlimits the VM can grant without CAP_SYS_RESOURCE
(``--ulimit``) in ``slurm.container.options``.
"""

from __future__ import annotations

import shlex
import time

import pytest

pytestmark = pytest.mark.slurm

IMAGE = "localhost/madinfra-e2e:1"
MARKER = "madinfra-e2e image"
OPTIONS = ["--pull=never", "--ulimit=nofile=10000:10000", "--ulimit=nproc=4096:4096"]
ROOTFS_BINARIES = ("bash", "cat", "env", "mkdir", "mv", "rm")

# Runs on the cluster's login node (the sandbox's nodes share its filesystem and podman store).
# Replaces the previous image of the tag (left dangling by the import) unless a container uses it.
BUILD_IMAGE = r"""
set -euo pipefail
work=$1 image=$2 marker=$3; shift 3
root=$work/rootfs
mkdir -p "$root/etc" "$root/bin" "$root/tmp"
for name in "$@"; do
  binary=$(command -v "$name")
  cp -L "$binary" "$root/bin/$name"
  for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -Ln "$lib" "$root$lib"
  done
done
printf '%s\n' "$marker" > "$root/etc/madinfra-in-container"
printf '[engine]\nruntime = "runc"\n' > "$work/containers.conf"
tar -C "$root" -cf "$work/rootfs.tar" .
old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
podman import --quiet "$work/rootfs.tar" "$image" >/dev/null
new=$(podman image inspect --format '{{.Id}}' "$image")
if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
rm -rf "$root" "$work/rootfs.tar"
"""

# In the container: the image's marker, then the whole environment, one file per task in the
# stack's directory (mounted at the same path, so the login node sees it).
COMMAND = (
    'out="$MADINFRA_WORKDIR/out.$SLURM_PROCID"; '
    '{ printf "marker=%s\\n" "$(cat /etc/madinfra-in-container)"; '
    'printf "sbatch_visible=%s\\n" "$(test -e /usr/bin/sbatch && echo yes || echo no)"; env; } > "$out.tmp" '
    '&& mv -f "$out.tmp" "$out"'
)


@pytest.fixture
def podman_image(sandbox_stack):
    """Build ``IMAGE`` on the cluster; yield the containers.conf path (absolute, on the cluster)."""
    sandbox = sandbox_stack.sandbox
    installed = sandbox.ssh("command -v podman && command -v runc").returncode == 0
    assert installed, "podman and runc are not installed on the sandbox: apt-get install -y podman runc (scripts/test does)"
    work = f"/tmp/madinfra-e2e-{sandbox_stack.name}"
    args = " ".join(shlex.quote(word) for word in (work, IMAGE, MARKER, *ROOTFS_BINARIES))
    try:
        sandbox.check(f"bash -c {shlex.quote(BUILD_IMAGE)} build {args}", timeout=120)
        yield f"{work}/containers.conf"
    finally:
        sandbox.ssh(f"rm -rf {shlex.quote(work)}")


def contained(image: str, containers_conf: str) -> dict:
    return {
        "slurm": {
            "partition": "debug",
            "nodes": 2,
            "gpus_per_node": 0,
            "time": "5",
            "exclusive": False,
            "ready_timeout": 60,
            "container": {"runtime": "podman", "options": OPTIONS},
        },
        "distributed": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1},
        "model": {"image": image},
        "env_vars": {"CONTAINERS_CONF": containers_conf, "FROM_ENV_VARS": "env value", "SHADOWED": "from env_vars"},
        "docker_env_vars": {"FROM_DOCKER_ENV": "docker value", "SHADOWED": "from docker_env_vars"},
        "roles": {"worker": {"command": COMMAND}},
    }


def read_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_training_role_runs_in_a_local_podman_image(sandbox_stack, podman_image) -> None:
    stack = sandbox_stack
    stack.write(contained(IMAGE, podman_image))
    applied = stack.cli("apply", str(stack.path), "--yes")
    assert "Apply complete! Resources: 1 added" in applied.stdout, applied.stdout
    job_id = stack.state_job_id("worker")
    remote = stack.remote_dir()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and stack.jobs():
        time.sleep(0.5)
    log = f"{remote}/logs/madinfra.{stack.name}.worker_{job_id}"
    errors = stack.sandbox.ssh(f"tail -n 30 {log}.err {log}.out").stdout
    assert not stack.jobs(), f"the job did not finish within 60 s; logs:\n{errors}"

    seen = {}
    for rank in ("0", "1"):
        proc = stack.sandbox.ssh(f"cat {remote}/out.{rank}")
        assert proc.returncode == 0, f"task {rank} wrote no output in the mounted work dir; logs:\n{errors}"
        seen[rank] = read_env(proc.stdout)
    for rank, env in seen.items():
        assert env["marker"] == MARKER, f"task {rank} did not run in the image: {env.get('marker')!r}"
        assert env["sbatch_visible"] == "no", "the host's /usr/bin is visible: not in the image"
        assert env["RANK"] == env["NODE_RANK"] == env["SLURM_PROCID"] == rank, env
        assert env["WORLD_SIZE"] == "2" and env["MASTER_PORT"] == "29500" and env["MASTER_ADDR"], env
        assert env["FROM_ENV_VARS"] == "env value" and env["CONTAINERS_CONF"] == podman_image
        assert env["FROM_DOCKER_ENV"] == "docker value"
        assert env["SHADOWED"] == "from docker_env_vars", "docker_env_vars beat env_vars in the container"
        assert env["MADINFRA_WORKDIR"].endswith(f"/.madinfra/{stack.name}")
    assert stack.sandbox.ssh("test -e /etc/madinfra-in-container").returncode != 0, "the marker must exist only in the image"
    assert stack.sandbox.check(f"ls -A {remote}/taskenv") == "", "the per-task env files (secrets) are deleted in the container"

    planned = stack.cli("plan", str(stack.path), "--detailed-exitcode", check=False)
    assert planned.returncode == 0, f"the completed job must not be planned again:\n{planned.stdout}"

    stack.write(contained("localhost/madinfra-e2e:2", podman_image))
    planned = stack.cli("plan", str(stack.path))
    assert "-/+ slurm/Job/worker" in planned.stdout, planned.stdout
    assert 'image: "localhost/madinfra-e2e:1" -> "localhost/madinfra-e2e:2"  # forces replacement' in planned.stdout, planned.stdout
