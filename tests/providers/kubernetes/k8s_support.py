"""Shared helpers and fixtures for the Kubernetes provider tests (imported by name: a module
called `conftest` would clash with the other test folders' conftest modules).

Fixtures for the Kubernetes provider tests: every K8s example and stack, and small launch plans.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from madinfra.config import load
from madinfra.launchers import compile
from madinfra.launchers.model import LaunchPlan, RoleLaunch
from madinfra_kubernetes import KubernetesProvider
from madinfra.resources import ProviderOptions

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples" / "k8s-configs").glob("*/*.json"))


def _k8s_stacks() -> list[Path]:
    found = []
    for path in sorted((ROOT / "stacks").glob("**/*")):
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            if load(path).target == "k8s":
                found.append(path)
        except Exception:  # noqa: BLE001 - other stacks' validity is tested elsewhere
            continue
    return found


K8S_STACK_FILES = EXAMPLES + _k8s_stacks()


def build(path: Path):
    """(spec, launch, resources) of a stack file, through the provider's public API."""
    spec = load(path)
    launch = compile(spec)
    provider = KubernetesProvider(ProviderOptions(stack_dir=path.parent))
    return spec, launch, provider.desired(spec, launch)


@pytest.fixture(params=K8S_STACK_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def stack_file(request) -> Path:
    return request.param


def role(name: str = "worker", nodes: int = 1, gpus: int = 2, first_rank: int = 0, **kw) -> RoleLaunch:
    return RoleLaunch(
        role=name,
        nodes=nodes,
        first_rank=first_rank,
        gpus_per_node=gpus,
        env=kw.pop("env", {"NNODES": str(nodes)}),
        runtime_env=kw.pop("runtime_env", (("NODE_RANK", "${JOB_COMPLETION_INDEX}"),)),
        command=kw.pop("command", 'cd "${MADINFRA_WORKDIR:-.}" || exit 1\nbash run.sh'),
        unset_env=kw.pop("unset_env", ()),
        ports=kw.pop("ports", {"master": 29500}),
    )


def launch_plan(stack: str, roles: tuple[RoleLaunch, ...], workload: str = "training", launcher: str | None = "torchrun", port: int = 29500, service_port: int | None = None) -> LaunchPlan:
    return LaunchPlan(
        stack=stack,
        target="k8s",
        launcher=launcher,
        workload=workload,
        nnodes=sum(r.nodes for r in roles),
        nproc_per_node=roles[0].gpus_per_node,
        master_port=port,
        roles=roles,
        service_port=service_port,
    )
