"""Progress of an apply: a rich progress bar on a terminal, one plain line per event elsewhere
(CI logs and pipes get readable, greppable lines instead of cursor movement)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from madinfra.resources import Change
from madinfra.secrets import Redactor

_DONE = {"create": "created", "update": "updated in-place", "replace": "replaced", "delete": "destroyed"}


class ApplyProgress:
    """``progress(resource_id, message)`` and ``outcome(change, error)`` for one apply."""

    def __init__(self, console: Console, total: int, redactor: Redactor | None = None, title: str = "Applying"):
        self.console = console
        self.redactor = redactor or Redactor()
        self.total = total
        self._bar: Progress | None = None
        self._task = None
        self._title = title
        if console.is_terminal and total:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._task = self._bar.add_task(title, total=total)

    def __enter__(self) -> "ApplyProgress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, resource_id: str, message: str) -> None:
        text = self.redactor.text(f"{resource_id}: {message}")
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=text)
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def outcome(self, change: Change, error: Exception | None) -> None:
        rid = change.resource_id
        if error is None:
            line = Text(f"{rid}: {_DONE[change.action]}", style="green")
        elif _skipped(error):
            line = Text(self.redactor.text(str(error)), style="yellow")
        else:
            line = Text(self.redactor.text(f"{rid}: failed: {error}"), style="red")
        if self._bar is not None and self._task is not None:
            self._bar.console.print(line, highlight=False, soft_wrap=True)
            self._bar.advance(self._task)
        else:
            self.console.print(line, highlight=False, soft_wrap=True)


def _skipped(error: Exception) -> bool:
    from madinfra.engine.scheduler import ChangeSkipped

    return isinstance(error, ChangeSkipped)
