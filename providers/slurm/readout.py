"""The live read of a stack as one remote command: ``squeue`` plus the stack's own files.

One round trip prints, in this order::

    <squeue -h -a --me -o FORMAT output>
    @@madinfra squeue-exit <squeue's exit status>
    @@madinfra dir <the stack directory, as the remote shell resolved it>
    @@madinfra file <path relative to it>
    <the file's text>
    ...

The files are ``topology.env``, ``endpoints/*`` and ``status/*`` (end markers of finished jobs).
The command exits with squeue's status, so a failing ``squeue`` is reported (and a down or
timing-out controller classified) as before; squeue rows always start with a job id, never with
the ``@@madinfra`` marker. Output without the markers (an older or a fake remote) is all squeue.

Where the stack directory is: ``slurm.remote_dir`` when the provider compiled the stack in this
process (plan, apply), else the default ``~/.madinfra/<stack>`` unless a ``.remote_dir`` file
there points elsewhere (apply writes it for a stack with another remote_dir, so ``destroy``,
``show`` and ``output``, which do not compile the stack, still find markers and files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from madinfra import naming
from madinfra.config.schema import SlurmSpec
from providers.slurm import scripts, squeue

MARK = "@@madinfra"
POINTER = ".remote_dir"
PATTERNS = (scripts.TOPOLOGY_FILE, f"{scripts.ENDPOINTS_DIR}/*", f"{scripts.STATUS_DIR}/*")


def default_dir(stack: str) -> str:
    return naming.slurm_remote_dir(SlurmSpec.model_fields["remote_dir"].default, stack)


def pointer_path(stack: str) -> str:
    return f"{default_dir(stack)}/{POINTER}"


def read_command(stack: str, remote_dir: str | None = None) -> str:
    """The one command of a live read (see the module docstring)."""
    if remote_dir is not None:
        locate = f"d={scripts.shell_path(remote_dir)}"
    else:
        pointer = scripts.shell_path(pointer_path(stack))
        locate = f"d={scripts.shell_path(default_dir(stack))}; if [ -s {pointer} ]; then d=$(cat {pointer}); fi"
    listing = " ".join(PATTERNS)
    return "; ".join(
        [
            squeue.squeue_command(),
            "rc=$?",
            f"printf '%s %s\\n' '{MARK} squeue-exit' \"$rc\"",
            locate,
            'if cd "$d" 2>/dev/null; then'
            f" printf '%s %s\\n' '{MARK} dir' \"$PWD\";"
            f" for f in {listing}; do"
            ' [ -f "$f" ] || continue;'
            f" printf '%s %s\\n' '{MARK} file' \"$f\";"
            ' cat "$f"; echo;'
            " done;"
            " fi",
            'exit "$rc"',
        ]
    )


@dataclass
class LiveRead:
    squeue_text: str
    directory: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)


def parse_read(stdout: str) -> LiveRead:
    """Split the command's output into squeue's part, the stack dir and the files."""
    squeue_lines: list[str] = []
    directory: str | None = None
    files: list[tuple[str, list[str]]] = []
    in_files = False
    for line in stdout.splitlines():
        if line.startswith(MARK + " "):
            kind, _, value = line[len(MARK) + 1:].partition(" ")
            if kind == "squeue-exit":
                in_files = True
            elif kind == "dir":
                directory = value
            elif kind == "file":
                files.append((value, []))
            continue
        if not in_files:
            squeue_lines.append(line)
        elif files:
            files[-1][1].append(line)
    return LiveRead(
        squeue_text="\n".join(squeue_lines) + ("\n" if squeue_lines else ""),
        directory=directory,
        files=[(path, "\n".join(lines).rstrip("\n") + "\n" if any(lines) else "") for path, lines in files],
    )
