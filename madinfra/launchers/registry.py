"""Which compiler handles which launcher, what kind of workload it yields and its service port.

One table, so adding a launcher is one module plus one line, and the loader's launcher list and
this table can be checked against each other by a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from madinfra.config.schema import LAUNCHERS
from madinfra.errors import MadinfraError
from madinfra.launchers import deepspeed, megatron, plain, primus, sglang, sglang_disagg, torchrun, torchtitan, vllm
from madinfra.launchers.common import LaunchContext
from madinfra.launchers.model import RoleLaunch, Workload


@dataclass(frozen=True)
class LauncherCompiler:
    workload: Workload
    roles: Callable[[LaunchContext], list[RoleLaunch]]
    service_port: Callable[[LaunchContext], int] | None = None
    topology: Callable[[LaunchContext], dict[str, str]] | None = None


COMPILERS: dict[str | None, LauncherCompiler] = {
    None: LauncherCompiler("training", plain.roles),
    "torchrun": LauncherCompiler("training", torchrun.roles),
    "deepspeed": LauncherCompiler("training", deepspeed.roles),
    "megatron": LauncherCompiler("training", megatron.roles),
    "torchtitan": LauncherCompiler("training", torchtitan.roles),
    "primus": LauncherCompiler("training", primus.roles),
    "vllm": LauncherCompiler("service", vllm.roles, vllm.service_port, vllm.topology),
    "sglang": LauncherCompiler("service", sglang.roles, sglang.service_port),
    "sglang-disagg": LauncherCompiler("service", sglang_disagg.roles, sglang_disagg.service_port, sglang_disagg.topology),
}


def lookup(launcher: str | None) -> LauncherCompiler:
    """The loader already rejects unknown names; this guards callers that build specs by hand."""
    try:
        return COMPILERS[launcher]
    except KeyError:
        raise MadinfraError(f"Unknown launcher type '{launcher}'. Valid launchers: {', '.join(LAUNCHERS)}") from None
