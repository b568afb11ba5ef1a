"""``plan``, ``apply``, ``destroy``, ``show``/``status``, ``output`` and ``force-unlock``.

Thin wiring only: options become a StackContext (engine.pipeline), the engine plans and applies,
render/ presents. User errors are MadinfraErrors (``madinfra.cli.main`` prints them and exits 1);
exit codes are ``typer.Exit``.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, List, Optional

import typer

from madinfra.errors import MadinfraError

if TYPE_CHECKING:
    from rich.console import Console

    from madinfra.engine.pipeline import StackContext
    from madinfra.planner.plan import Plan
    from madinfra.resources import ProviderOptions
    from madinfra.state.lock import StateLock

DEFAULT_STATE_DIR = Path(".madinfra") / "state"
CONFIRM = "Do you want to perform these actions? Only 'yes' will be accepted:"
CONFIRM_DESTROY = "Do you really want to destroy all resources of stack '{stack}'? Only 'yes' will be accepted:"

StackArg = Annotated[Path, typer.Argument(help="Stack file (YAML/JSON) or a madengine additional-context JSON.")]
StateDirOpt = Annotated[Path, typer.Option("--state-dir", help="Directory of the state and lock files.")]
ContextOpt = Annotated[Optional[str], typer.Option("--context", help="Kubernetes context (overrides the stack file).")]
KubeconfigOpt = Annotated[Optional[str], typer.Option("--kubeconfig", help="Kubeconfig file (overrides the stack file).")]
SshOpt = Annotated[Optional[str], typer.Option("--ssh-target", help="SLURM login node as [user@]host[:port].")]
InsecureOpt = Annotated[bool, typer.Option("--insecure-skip-host-key-check", help="Accept unknown SSH host keys (test clusters only).")]
OnlyOpt = Annotated[Optional[List[str]], typer.Option("--only", help="Limit to this resource id or name and its dependencies (repeatable).")]
ReplaceOpt = Annotated[Optional[List[str]], typer.Option("--replace", help="Replace this resource even if unchanged, e.g. to rerun a finished job (repeatable).")]
LockTimeoutOpt = Annotated[float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for another command holding the state lock.")]
YesOpt = Annotated[bool, typer.Option("--yes", "--auto-approve", "-y", help="Do not ask for confirmation.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (schema: docs/plan-json.md).")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain output without colours.")]


def _consoles(no_color: bool) -> tuple[Console, Console]:
    from rich.console import Console

    return (
        Console(no_color=no_color, highlight=False, soft_wrap=True),
        Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True),
    )


def _options(context: str | None, kubeconfig: str | None, ssh_target: str | None, insecure: bool) -> ProviderOptions:
    # Imported here: madinfra.resources pulls in the pydantic stack model, which `--help` must not build.
    from madinfra.resources import ProviderOptions

    return ProviderOptions(kubeconfig=kubeconfig, kube_context=context, ssh_target=ssh_target, insecure_skip_host_key_check=insecure)


def connection_flags(options: ProviderOptions) -> str:
    """The flags the user connected with, for commands suggested in hints (so they work as printed)."""
    import shlex

    parts = []
    for flag, value in (("--ssh-target", options.ssh_target), ("--context", options.kube_context), ("--kubeconfig", options.kubeconfig)):
        if value:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    if options.insecure_skip_host_key_check:
        parts.append("--insecure-skip-host-key-check")
    return "".join(" " + part for part in parts)


@contextmanager
def _stack(stack_file: Path, state_dir: Path, options: ProviderOptions) -> Iterator[StackContext]:
    from madinfra.engine.pipeline import open_stack

    ctx = open_stack(stack_file, state_dir, options)
    try:
        yield ctx
    except MadinfraError as err:
        # A provider's message may quote a remote command or its output: never let a secret through.
        redacted = ctx.redactor.text(str(err))
        if redacted != str(err):
            raise MadinfraError(redacted) from None
        raise
    finally:
        ctx.close()


def _lock(ctx: StackContext, command: str, timeout: float, err: Console) -> "StateLock":
    from madinfra.state.lock import StateLock

    return StateLock(
        ctx.store.lock_path(ctx.name),
        command=command,
        timeout=timeout,
        stack=ctx.name,
        unlock_hint=f"madinfra force-unlock {ctx.stack_file}",
        notify=lambda message: err.print(message, markup=False),
    )


def _confirm(console: Console, question: str) -> bool:
    console.print(question, end=" ", markup=False)
    answer = sys.stdin.readline()
    console.print("")
    return answer.strip() == "yes"


def plan(
    stack_file: StackArg,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the plan to this file for `madinfra apply FILE`.")] = None,
    json_output: JsonOpt = False,
    detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="Exit 0 with no changes, 2 with changes, 1 on error.")] = False,
    only: OnlyOpt = None,
    replace: ReplaceOpt = None,
    destroy: Annotated[bool, typer.Option("--destroy", help="Plan removing everything the stack owns.")] = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    ssh_target: SshOpt = None,
    insecure_skip_host_key_check: InsecureOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Show what apply would change: create +, update in place ~, replace -/+, destroy -."""
    from madinfra.engine.pipeline import compute_plan
    from madinfra.engine.planfile import save_plan
    from madinfra.render.human import print_plan
    from madinfra.render.json_plan import dumps, plan_to_data

    console, _ = _consoles(no_color)
    options = _options(context, kubeconfig, ssh_target, insecure_skip_host_key_check)
    with _stack(stack_file, state_dir, options) as ctx:
        state = ctx.store.load(ctx.name)
        result = compute_plan(ctx.spec, ctx.provider, state, stack_file=stack_file, fingerprint=ctx.fingerprint, only=only or (), destroy=destroy, replace=replace or ())
    if out is not None:
        try:
            save_plan(result, out, ctx.redactor)
        except OSError as exc:
            raise MadinfraError(f"Cannot write the plan file {out} ({exc.strerror or exc.__class__.__name__}); pass --out a writable file path") from None
    if json_output:
        typer.echo(dumps(plan_to_data(result, ctx.redactor)))
    else:
        print_plan(result, console, ctx.redactor)
        if out is not None:
            console.print(f"\nSaved the plan to {out}; apply exactly this plan with `madinfra apply {out}{connection_flags(options)}`.", markup=False)
    if detailed_exitcode and result.has_changes:
        raise typer.Exit(2)


def apply(
    stack_or_plan: Annotated[Path, typer.Argument(metavar="STACK_FILE|PLAN_FILE", help="Stack file, or a plan saved with `plan --out`.")],
    yes: YesOpt = False,
    only: OnlyOpt = None,
    replace: ReplaceOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    ssh_target: SshOpt = None,
    insecure_skip_host_key_check: InsecureOpt = False,
    no_rollback: Annotated[bool, typer.Option("--no-rollback", help="When a new serving replica fails its health check, stop where it failed instead of restoring the pool as it was.")] = False,
    no_color: NoColorOpt = False,
) -> None:
    """Apply the stack after confirmation, or exactly a plan saved with `plan --out` (no prompt: it was reviewed when saved)."""
    from dataclasses import replace as with_fields

    from madinfra.engine.planfile import check_live, check_stack_file, load_plan_file, read_plan_document

    options = with_fields(_options(context, kubeconfig, ssh_target, insecure_skip_host_key_check), rollback=not no_rollback)
    console, err = _consoles(no_color)
    document = read_plan_document(stack_or_plan)
    if document is None:
        _run_apply(stack_or_plan, state_dir, options, console, err, only=only or (), replace=replace or (), yes=yes, lock_timeout=lock_timeout, destroy=False)
        return
    for flag, given in (("--only", only), ("--replace", replace)):
        if given:
            raise MadinfraError(f"{flag} cannot be combined with the saved plan {stack_or_plan}; pass {flag} to `madinfra plan --out` instead")
    saved = load_plan_file(stack_or_plan, document)
    check_stack_file(saved, _fingerprint_or_none(saved.stack_file))

    def verify(ctx, fresh) -> None:
        if ctx.name != saved.stack:
            raise MadinfraError(f"The saved plan {saved.path} is for stack '{saved.stack}', but {saved.stack_file} now defines '{ctx.name}'; run `madinfra plan --out` again")
        check_live(saved, fresh)

    _run_apply(
        saved.stack_file,
        state_dir,
        options,
        console,
        err,
        only=saved.only,
        replace=saved.replace,
        yes=True,
        lock_timeout=lock_timeout,
        destroy=saved.destroy,
        desired=saved.desired,
        verify=verify,
    )


def destroy(
    stack_file: StackArg,
    yes: YesOpt = False,
    lock_timeout: LockTimeoutOpt = 0.0,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    ssh_target: SshOpt = None,
    insecure_skip_host_key_check: InsecureOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Remove everything the stack owns (found on the cluster by its labels/names, state or not)."""
    options = _options(context, kubeconfig, ssh_target, insecure_skip_host_key_check)
    console, err = _consoles(no_color)
    _run_apply(stack_file, state_dir, options, console, err, only=(), replace=(), yes=yes, lock_timeout=lock_timeout, destroy=True)


def _fingerprint_or_none(path: Path) -> str | None:
    from madinfra.engine.pipeline import stack_fingerprint

    return stack_fingerprint(path) if path.is_file() else None


def _run_apply(stack_file, state_dir, options, console, err, *, only, replace, yes, lock_timeout, destroy, desired=None, verify=None) -> None:
    from madinfra.engine.pipeline import collect_outputs, compute_plan, rules_for
    from madinfra.engine.run import apply_plan
    from madinfra.render.human import print_plan
    from madinfra.interrupt import GracefulInterrupt
    from madinfra.render.progress import ApplyProgress, interrupted_summary
    from madinfra.render.show import print_outputs

    command = "destroy" if destroy else "apply"
    with _stack(stack_file, state_dir, options) as ctx, _lock(ctx, f"madinfra {command} {stack_file}", lock_timeout, err):
        state = ctx.store.load_or_new(ctx.name)
        fresh = compute_plan(ctx.spec, ctx.provider, state, stack_file=stack_file, fingerprint=ctx.fingerprint, only=only, destroy=destroy, desired=desired, replace=replace)
        if verify is not None:
            verify(ctx, fresh)
        print_plan(fresh, console, ctx.redactor)
        if fresh.has_changes and not yes:
            console.print("")
            question = CONFIRM_DESTROY.format(stack=ctx.name) if destroy else CONFIRM
            if not _confirm(console, question):
                err.print(f"{command.capitalize()} cancelled; nothing was changed.", markup=False)
                raise typer.Exit(1)
        if ctx.spec.debug and not destroy:
            _dump_debug_files(ctx, fresh, err)
        rules = rules_for(ctx.provider)
        with GracefulInterrupt(lambda message: err.print(message, markup=False)), ApplyProgress(
            console, len(fresh.changes), ctx.redactor, title="Destroying" if destroy else "Applying"
        ) as progress:
            result = apply_plan(fresh, ctx.provider, ctx.store, state, rules, progress, progress.outcome)
        if result.interrupted and not result.ok:
            err.print(ctx.redactor.text(interrupted_summary(command, result.done, result.failed, result.skipped, f"madinfra plan {stack_file}{connection_flags(options)}")), markup=False)
            raise typer.Exit(130)
        outputs = None
        if result.ok and (fresh.has_changes or not state.outputs):
            outputs = {} if destroy and not only else collect_outputs(ctx.provider, ctx.spec, ctx.provider.read(ctx.name))
            if outputs is not None and outputs != state.outputs:
                state.outputs = outputs
                ctx.store.save(state)
        counts = result.counts
        if not result.ok:
            problems = [f"{rid}: {why}" for rid, why in result.failed.items()] + list(result.skipped.values())
            raise MadinfraError(
                ctx.redactor.text(
                    f"{command.capitalize()} incomplete: {len(result.failed)} change(s) failed and {len(result.skipped)} were skipped ({'; '.join(problems)}); "
                    f"everything else was applied and recorded, and `madinfra plan {stack_file}{connection_flags(options)}` shows what is left"
                )
            )
        if destroy:
            console.print(f"\nDestroy complete! Resources: {counts['destroy']} destroyed.", style="bold green")
        else:
            console.print(
                f"\nApply complete! Resources: {counts['add']} added, {counts['change']} changed, {counts['replace']} replaced, {counts['destroy']} destroyed.",
                style="bold green",
            )
            print_outputs(state.outputs, console)


def refresh(
    stack_file: StackArg,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
    lock_timeout: LockTimeoutOpt = 0.0,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    ssh_target: SshOpt = None,
    insecure_skip_host_key_check: InsecureOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Record what the cluster runs into state (adopted jobs, finished runs, drift) without changing the cluster."""
    from madinfra.engine.pipeline import compute_plan, rules_for
    from madinfra.engine.refresh import refresh_updates
    from madinfra.render.json_plan import dumps

    console, err = _consoles(no_color)
    options = _options(context, kubeconfig, ssh_target, insecure_skip_host_key_check)
    with _stack(stack_file, state_dir, options) as ctx, _lock(ctx, f"madinfra refresh {stack_file}", lock_timeout, err):
        state = ctx.store.load_or_new(ctx.name)
        fresh = compute_plan(ctx.spec, ctx.provider, state, stack_file=stack_file, fingerprint=ctx.fingerprint)
        updates, updated = refresh_updates(fresh, state, rules_for(ctx.provider))
        recorded = [u for u in updates if u.action != "untracked"]
        if json_output:
            if recorded and not yes:
                raise MadinfraError("refresh --json records nothing without --yes (it cannot ask); add --yes, or run it without --json to review first")
            if recorded:
                ctx.store.save(updated)
            typer.echo(dumps(ctx.redactor.data({"stack": ctx.name, "updates": [u.to_json() for u in updates], "recorded": len(recorded)})))
            return
        if not updates:
            console.print("No changes. State matches the cluster.", style="bold green")
            return
        console.print(f"madinfra will record the following in the state of stack '{ctx.name}' (the cluster is not changed):", markup=False)
        for update in updates:
            console.print(ctx.redactor.text("  " + update.line()), markup=False)
        if not recorded:
            return
        if not yes:
            console.print("")
            if not _confirm(console, "Do you want to record these in state? Only 'yes' will be accepted:"):
                err.print("Refresh cancelled; state was not changed.", markup=False)
                raise typer.Exit(1)
        ctx.store.save(updated)
        console.print(f"\nRefresh complete! State: {len(recorded)} recorded. `madinfra plan {stack_file}{connection_flags(options)}` now compares the stack file with what runs.", style="bold green")


def _dump_debug_files(ctx: StackContext, plan: Plan, err: Console) -> None:
    """``debug: true`` (madengine's "dump the YAML"): before applying, write what is deployed,
    the manifests or sbatch scripts, into the target's ``output_dir`` beside the stack file, so a
    failed apply can be read from exactly what was sent."""
    from madinfra.cli.stack_cmds import write_rendered

    section = ctx.spec.k8s if ctx.spec.target == "k8s" else ctx.spec.slurm
    assert section is not None
    out = ctx.stack_file.resolve().parent / section.output_dir
    files = ctx.provider.render_files(plan.desired)
    for name, text in files.items():
        write_rendered(out, name, ctx.redactor.text(text))
    err.print(f"debug: wrote {len(files)} file(s) to {out} ({ctx.spec.target}.output_dir)", markup=False)


def show(
    stack_file: StackArg,
    json_output: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    ssh_target: SshOpt = None,
    insecure_skip_host_key_check: InsecureOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """What state says next to what the cluster says, with endpoints and outputs."""
    from madinfra.engine.pipeline import collect_outputs, rules_for
    from madinfra.render.json_plan import dumps
    from madinfra.render.show import print_show, show_data

    console, _ = _consoles(no_color)
    with _stack(stack_file, state_dir, _options(context, kubeconfig, ssh_target, insecure_skip_host_key_check)) as ctx:
        state = ctx.store.load(ctx.name)
        live = ctx.provider.read(ctx.name)
        data = show_data(ctx.name, state, live, rules_for(ctx.provider), collect_outputs(ctx.provider, ctx.spec, live))
    if json_output:
        typer.echo(dumps(ctx.redactor.data(data)))
    else:
        print_show(data, console, ctx.redactor)


def output(
    stack_file: StackArg,
    name: Annotated[Optional[str], typer.Argument(help="Print only this output's value.")] = None,
    json_output: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    ssh_target: SshOpt = None,
    insecure_skip_host_key_check: InsecureOpt = False,
) -> None:
    """Print the stack's outputs (e.g. the serving endpoint), from the cluster when the provider can tell."""
    from madinfra.engine.pipeline import collect_outputs
    from madinfra.render.json_plan import dumps

    with _stack(stack_file, state_dir, _options(context, kubeconfig, ssh_target, insecure_skip_host_key_check)) as ctx:
        outputs = collect_outputs(ctx.provider, ctx.spec, ctx.provider.read(ctx.name))
        if outputs is None:
            state = ctx.store.load(ctx.name)
            outputs = dict(state.outputs) if state is not None else {}
    outputs = ctx.redactor.data(outputs)
    if name is not None:
        if name not in outputs:
            known = ", ".join(sorted(outputs)) or "none"
            raise MadinfraError(f"Stack '{ctx.name}' has no output named '{name}' (outputs: {known})")
        typer.echo(dumps(outputs[name]) if json_output else outputs[name])
        return
    if json_output:
        typer.echo(dumps(outputs))
        return
    if not outputs:
        typer.echo(f"Stack '{ctx.name}' has no outputs.")
    for key, value in sorted(outputs.items()):
        typer.echo(f"{key} = {value}")


def force_unlock(
    stack_file: StackArg,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
) -> None:
    """Remove the stack's state lock (only when the command holding it is really gone)."""
    from madinfra.config import load
    from madinfra.state.lock import force_unlock as remove_lock
    from madinfra.state.store import StateStore

    spec = load(stack_file)
    holder = remove_lock(StateStore(state_dir).lock_path(spec.name))
    if holder is None:
        typer.echo(f"Stack '{spec.name}' is not locked.")
    else:
        typer.echo(f"Removed the lock of stack '{spec.name}' held by {holder.describe()}.")


def register(app: typer.Typer) -> None:
    app.command()(plan)
    app.command()(apply)
    app.command()(destroy)
    app.command()(show)
    app.command()(refresh)
    app.command("status", help="Alias of `show`.")(show)
    app.command()(output)
    app.command("force-unlock")(force_unlock)
