"""``validate`` and ``render``: everything that works from the stack file alone, with no cluster.

These never connect anywhere and never import Pulumi or the kubernetes client, so they are fast
and safe to run in CI on every change to a stack file. The stack model (pydantic) and yaml are
imported inside the commands: building the models is most of start-up, and `--help` needs none of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from madinfra.errors import MadinfraError

if TYPE_CHECKING:
    from madinfra.config.schema import StackSpec
    from madinfra.launchers.model import LaunchPlan, RoleLaunch

TargetOption = typer.Option(None, "--target", help="k8s or slurm: the target of a stack file that names none.")


def resolved_document(spec: StackSpec) -> dict[str, Any]:
    """The resolved stack as plain data, with secret values redacted."""
    data = spec.model_dump(mode="json", exclude_none=True)
    for name, source in data.get("secret_env", {}).items():
        if "value" in source:
            source["value"] = "(sensitive value)"
    return data


def role_summary(launch: LaunchPlan) -> str:
    """Per role: nodes, GPUs, environment and command, as plain text for the terminal."""
    blocks = []
    for role in launch.roles:
        blocks.append(_role_block(role))
    header = (
        f"# launcher={launch.launcher or 'none'} target={launch.target} workload={launch.workload} "
        f"nnodes={launch.nnodes} nproc_per_node={launch.nproc_per_node} master_port={launch.master_port} "
        f"gpus={launch.total_gpus}"
    )
    if launch.service_port:
        header += f" service_port={launch.service_port}"
    return "\n\n".join([header, *blocks])


def _role_block(role: RoleLaunch) -> str:
    ranks = f"{role.first_rank}" if role.nodes == 1 else f"{role.first_rank}-{role.first_rank + role.nodes - 1}"
    lines = [f"## role {role.role}: {role.nodes} node(s), ranks {ranks}, {role.gpus_per_node} GPU(s) per node"]
    lines += [f"{key}={value}" for key, value in sorted(role.env.items())]
    lines += [f'{key}="{expr}"  # evaluated on the node' for key, expr in role.runtime_env]
    lines += [f"unset {name}" for name in role.unset_env]
    lines.append(f"command: {role.command}")
    return "\n".join(lines)


def validate(
    stack_file: Path = typer.Argument(..., help="Stack file (YAML/JSON) or a madengine additional-context JSON."),
    target: Optional[str] = TargetOption,
) -> None:
    """Check a stack file and print the resolved stack (presets applied), or every problem found."""
    import yaml

    from madinfra.config import load
    from madinfra.launchers import compile as compile_launch

    spec = load(stack_file, target=target)
    from madinfra.errors import ConfigError

    try:
        compile_launch(spec)  # the launcher contracts (parallel sizes, ports, overridden values)
    except ConfigError as exc:
        raise ConfigError(str(stack_file), exc.problems) from None
    typer.echo(f"# {stack_file}: valid {spec.target} stack '{spec.name}'")
    typer.echo(yaml.safe_dump(resolved_document(spec), sort_keys=False).rstrip())


def render(
    stack_file: Path = typer.Argument(..., help="Stack file (YAML/JSON) or a madengine additional-context JSON."),
    target: Optional[str] = TargetOption,
    out: Optional[Path] = typer.Option(None, "--out", help="Write the files into this directory instead of printing them."),
) -> None:
    """Show what would be deployed: Kubernetes manifests or sbatch scripts, and each role's env and command."""
    from madinfra.config import load
    from madinfra.launchers import compile as compile_launch
    from madinfra.provider_registry import provider_for
    from madinfra.resources import ProviderOptions

    spec = load(stack_file, target=target)
    launch = compile_launch(spec)
    provider = provider_for(spec.target, ProviderOptions(stack_dir=stack_file.resolve().parent))
    try:
        files = provider.render_files(provider.desired(spec, launch))
    finally:
        provider.close()
    if out is not None:
        for name, text in files.items():
            write_rendered(out, name, text)
            typer.echo(f"wrote {out / name}")
    else:
        for name, text in files.items():
            typer.echo(f"# ---- {name} ----")
            typer.echo(text.rstrip())
    typer.echo("")
    typer.echo(role_summary(launch))


def write_rendered(out: Path, name: str, text: str) -> None:
    """One rendered file into ``out`` (made if missing); an unwritable place is one sentence."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MadinfraError(f"Cannot write {out / name} ({exc.strerror or exc.__class__.__name__}); pass --out a directory you can write to") from None


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(render)
