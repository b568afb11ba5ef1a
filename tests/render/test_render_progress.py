import io

from rich.console import Console

from madinfra.sequential import ChangeSkipped
from madinfra.render.progress import ApplyProgress
from madinfra.resources import Change, Resource
from madinfra.secrets import Redactor


def change(action="create"):
    res = Resource("job", "j", {})
    return Change(action, "job/j", res if action != "delete" else None, res if action != "create" else None)


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with ApplyProgress(Console(file=out, width=200), 3, Redactor(["hunter2-secret"])) as progress:
        progress("job/j", "creating")
        progress.outcome(change(), None)
        progress.outcome(change("delete"), RuntimeError("boom hunter2-secret"))
        progress.outcome(change("update"), ChangeSkipped("job/j was skipped because vol/v did not complete"))
    assert out.getvalue().splitlines() == [
        "job/j: creating",
        "job/j: created",
        "job/j: failed: boom (sensitive value)",
        "job/j was skipped because vol/v did not complete",
    ]


def test_a_long_quiet_step_is_repeated_with_its_duration_when_not_a_terminal(monkeypatch):
    import time

    from madinfra.render import progress as progress_module

    monkeypatch.setattr(progress_module, "HEARTBEAT_EVERY", 0.3)
    out = io.StringIO()
    with ApplyProgress(Console(file=out, width=200), 1) as progress:
        progress("job/j", "job 7 is PENDING (Resources)")
        time.sleep(1.1)
        progress.outcome(change(), None)
        time.sleep(0.7)  # nothing in flight after the outcome: no more lines
    lines = out.getvalue().splitlines()
    assert lines[0] == "job/j: job 7 is PENDING (Resources)" and lines[-1] == "job/j: created"
    repeats = lines[1:-1]
    assert 2 <= len(repeats) <= 4, lines
    assert all(r.startswith("job/j: job 7 is PENDING (Resources) (still in progress, ") and r.endswith("s)") for r in repeats)


def test_progress_bar_on_a_terminal_keeps_the_outcome_lines():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with ApplyProgress(console, 1) as progress:
        progress("job/j", "creating")
        progress.outcome(change(), None)
    assert "job/j: created" in out.getvalue()
