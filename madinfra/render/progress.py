"""Progress of an apply: a rich progress bar on a terminal, one plain line per event elsewhere
(CI logs and pipes get readable, greppable lines instead of cursor movement).

Off a terminal nothing moves between events, and a job that sits PENDING for minutes prints one
line and then silence that looks like a hang; so the last event is repeated, with the time it has
lasted, at least every ``HEARTBEAT_EVERY`` seconds until the next one.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from madinfra.resources import Change
from madinfra.secrets import Redactor

HEARTBEAT_EVERY = 10.0
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
        self._lock = threading.Lock()
        self._current: str | None = None
        self._current_since = 0.0
        self._last_line = time.monotonic()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
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
        else:
            self._heartbeat = threading.Thread(target=self._beat, name="madinfra-progress-heartbeat", daemon=True)
            self._heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2)

    def __call__(self, resource_id: str, message: str) -> None:
        text = self.redactor.text(f"{resource_id}: {message}")
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=text)
        else:
            with self._lock:
                self._current, self._current_since = text, time.monotonic()
            self._print(text)

    def _print(self, line: "str | Text") -> None:
        with self._lock:
            self._last_line = time.monotonic()
        if isinstance(line, Text):
            self.console.print(line, highlight=False, soft_wrap=True)
        else:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _beat(self) -> None:
        """Repeat the step in flight when nothing was printed for ``HEARTBEAT_EVERY`` seconds."""
        while not self._stop.wait(min(1.0, HEARTBEAT_EVERY / 4)):
            with self._lock:
                current, since, quiet = self._current, self._current_since, time.monotonic() - self._last_line
            if current is not None and quiet >= HEARTBEAT_EVERY:
                self._print(f"{current} (still in progress, {time.monotonic() - since:.0f}s)")

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
            with self._lock:
                self._current = None
            self._print(line)


def _skipped(error: Exception) -> bool:
    from madinfra.sequential import ChangeSkipped

    return isinstance(error, ChangeSkipped)


def interrupted_summary(command: str, done_changes: list[Change], failed: dict[str, str], skipped: dict[str, str], plan_command: str) -> str:
    """What an interrupted apply did and did not do, in one paragraph for stderr."""
    done = ", ".join(f"{c.resource_id} ({_DONE[c.action]})" for c in done_changes) or "nothing"
    cut = [f"{rid} ({why})" for rid, why in failed.items()]
    not_started = list(skipped)
    parts = [f"{command.capitalize()} interrupted. Done: {done}."]
    if cut:
        parts.append(f"Cut off or failed: {'; '.join(cut)}.")
    if not_started:
        parts.append(f"Not started: {', '.join(not_started)}.")
    parts.append(f"State records all of this; `{plan_command}` shows what is left, and applying again finishes it.")
    return " ".join(parts)
