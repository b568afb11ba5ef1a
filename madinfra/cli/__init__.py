"""The ``madinfra`` command. Sub-commands live in their own modules and register on ``app``.

``main`` is the only place errors become exit codes: a MadinfraError prints its one sentence and
exits 1; anything unexpected also exits 1 with one line (and the traceback only with
``MADINFRA_DEBUG=1``), so users never see a traceback for input they can fix.
"""

from __future__ import annotations

import os
import sys

import typer

from madinfra.errors import MadinfraError

app = typer.Typer(
    name="madinfra",
    help="Plan and apply distributed ML training and inference stacks on Kubernetes and SLURM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    from madinfra.cli import engine_cmds, logs_cmd, stack_cmds

    stack_cmds.register(app)
    engine_cmds.register(app)
    logs_cmd.register(app)


_register_commands()


def _is_usage_error(exc: BaseException) -> bool:
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def main(argv: list[str] | None = None) -> None:
    try:
        # Without standalone mode, click returns a command's `typer.Exit(code)` instead of raising it.
        code = app(args=argv, standalone_mode=False)
    except MadinfraError as err:
        typer.echo(f"Error: {err}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence against tracebacks
        if _is_usage_error(exc):  # typer vendors click; match its ClickException by name
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if os.environ.get("MADINFRA_DEBUG"):
            raise
        typer.echo(f"Error: internal error ({exc.__class__.__name__}: {exc}); rerun with MADINFRA_DEBUG=1 and report it", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
