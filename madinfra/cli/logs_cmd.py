"""``madinfra logs``: the output of a stack's processes, each line prefixed with role and rank.

The provider reads (``LogsProvider.logs``, an optional method: the SLURM provider reads the jobs'
output files over SSH, the Kubernetes one the pod log API); this module checks what the user
asked against the stack first, so a typo in ROLE or ``--rank`` is one sentence before any
connection is made, and prints what comes back: ``decode[1] | text`` per line, or one JSON
object per line (``--json``), flushed as it arrives so both work with ``--follow``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from madinfra.cli.engine_cmds import (
    DEFAULT_STATE_DIR,
    ContextOpt,
    InsecureOpt,
    KubeconfigOpt,
    SshOpt,
    StackArg,
    StateDirOpt,
    _options,
    _stack,
)
from madinfra.errors import MadinfraError

if TYPE_CHECKING:
    from madinfra.launchers.model import LaunchPlan
    from madinfra.logs import LogLine, LogQuery
    from madinfra.resources import Resource

INTERRUPTED = 130


def logs(
    stack_file: StackArg,
    role: Annotated[Optional[str], typer.Argument(help="Only this role (e.g. worker, decode); every role when left out.")] = None,
    rank: Annotated[Optional[int], typer.Option("--rank", help="Only this node rank of the role (a pool's replica index).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing while the processes run; stop when they have all ended.")] = False,
    tail: Annotated[Optional[int], typer.Option("--tail", help="At most the last N lines of each role and rank.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Only lines written since a duration ago (90s, 10m, 2h, 1d) or a time (2026-11-28T01:00:00Z).")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", help="Start each line with the time it was written (RFC 3339, UTC).")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line: role, rank, time, timestamp, stream, text.")] = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    ssh_target: SshOpt = None,
    insecure_skip_host_key_check: InsecureOpt = False,
) -> None:
    """Print the output of a role's processes (every role by default), merged in time order."""
    from madinfra.engine.pipeline import compile_launch
    from madinfra.logs import LogQuery, parse_since

    if tail is not None and tail < 0:
        raise MadinfraError(f"--tail {tail} is negative; pass 0 or more lines")
    query = LogQuery(role=role, rank=rank, tail=tail, since=parse_since(since) if since is not None else None, follow=follow)
    with _stack(stack_file, state_dir, _options(context, kubeconfig, ssh_target, insecure_skip_host_key_check)) as ctx:
        launch = compile_launch(ctx.spec)
        check_role(stack_file, ctx.name, launch, query)
        reader = getattr(ctx.provider, "logs", None)
        if not callable(reader):
            raise MadinfraError(f"The {ctx.spec.target} provider cannot show logs (it has no `logs`); read the output on the cluster itself")
        desired = ctx.provider.desired(ctx.spec, launch)
        check_rank(stack_file, launch, desired, query)
        previous = exit_at_once_on_ctrl_c() if follow else None
        try:
            for line in reader(ctx.spec, desired, query):
                typer.echo(render(line, ctx.redactor.text(line.text), json_output=json_output, timestamps=timestamps))
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:
            _quiet_stdout()
            raise typer.Exit(0) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def exit_at_once_on_ctrl_c() -> Any:
    """Following writes nothing but stdout (no state, no lock), so Ctrl-C ends the process at
    once with 130, as ``kubectl logs -f`` and ``tail -f`` do: a KeyboardInterrupt would first
    wait for the provider to close every open log stream (a blocked HTTPS read, an SSH command
    in flight), which under load took longer than a user waits. Returns the previous handler."""

    def leave(signum: int, frame: object) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            sys.stdout.flush()
        os._exit(INTERRUPTED)

    return signal.signal(signal.SIGINT, leave)


def role_nodes(launch: LaunchPlan) -> dict[str, int]:
    """Node count per role as users name roles: a Ray cluster's head and workers are the one
    role they serve (``server``, ranks 0 to N-1), in launch order."""
    counts: dict[str, int] = {}
    for role in launch.roles:
        name = role.ray.cluster if role.ray is not None else role.role
        counts[name] = counts.get(name, 0) + role.nodes
    return counts


def check_role(stack_file: Path, stack: str, launch: LaunchPlan, query: LogQuery) -> None:
    """ROLE must be one of the stack's roles (as its launcher compiles them)."""
    roles = list(role_nodes(launch))
    if query.role is not None and query.role not in roles:
        raise MadinfraError(f"{stack_file}: stack '{stack}' has no role '{query.role}' (its roles: {', '.join(roles)}); pass one of them as ROLE")


def check_rank(stack_file: Path, launch: LaunchPlan, desired: list[Resource], query: LogQuery) -> None:
    """``--rank`` must name a node rank of the role (a replica of a pool whose replicas are
    resources of their own); without ROLE, one the largest role has."""
    if query.rank is None:
        return
    counts = {name: nodes for name, nodes in role_nodes(launch).items() if query.role is None or name == query.role}
    role = max(counts, key=lambda name: counts[name])
    count = counts[role]
    if 0 <= query.rank < count:
        return
    unit = "replicas" if any(r.role == role and r.replica is not None for r in desired) else "ranks"
    if query.role is not None:
        raise MadinfraError(f"--rank {query.rank} is out of range: role '{role}' of {stack_file} has {count} {unit}, 0 to {count - 1}; pass one of them")
    raise MadinfraError(f"--rank {query.rank} is out of range: no role of {stack_file} has more than {count} {unit} ({role}: 0 to {count - 1}); pass one of them")


def render(line: LogLine, text: str, *, json_output: bool, timestamps: bool) -> str:
    """One printed line: ``[time ]role[rank] | text``, or the line's JSON object."""
    from madinfra.logs import format_time

    if json_output:
        return json.dumps({**line.to_json(), "text": text}, ensure_ascii=False)
    prefix = f"{line.source} | "
    if timestamps:
        prefix = f"{format_time(line.time) if line.time is not None else '-':<24} {prefix}"
    return prefix + text


def _quiet_stdout() -> None:
    """After ``| head`` closed the pipe: send what is left to /dev/null, so Python's final flush
    does not print a BrokenPipeError on the way out."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        return


def register(app: typer.Typer) -> None:
    app.command()(logs)
