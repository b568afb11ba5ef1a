"""The live read of a stack as one remote command: ``squeue`` plus the stack's own files.

One round trip prints, in this order::

    <squeue -h -a --me -o FORMAT output>
    @@madinfra squeue-exit <squeue's exit status>
    @@madinfra sinfo
    <sinfo -h -a -N -o '%P %N %G' output: partition, node, GRES>
    @@madinfra sinfo-exit <sinfo's exit status>
    @@madinfra user <uid> <user name>
    @@madinfra config SlurmUser=<name(uid)>
    @@madinfra config AccountingStorageType=<plugin>
    @@madinfra admin-level <AdminLevel>          (only with slurmdbd accounting)
    @@madinfra now <the remote clock, seconds since the epoch>
    @@madinfra dir <the stack directory, as the remote shell resolved it>
    @@madinfra file <path relative to it>
    <the file's text>
    ...

Who the SSH user is for Slurm (``Identity``) rides along: Slurm lets only an operator (root,
SlurmUser, or AdminLevel Operator/Administrator in accounting) raise a running job's time limit,
so the plan must know it before it promises ``~``. Without slurmdbd there is no AdminLevel to
ask (``sacctmgr`` only works with it), so then only root and SlurmUser count as operators.

The files are ``topology.env``, ``endpoints/*``, ``status/*`` (end markers of finished jobs) and
``ray/*.status`` (what each Ray head says of its cluster; ``now`` gives the remote clock, so
the status's age needs no clock agreement between the two machines).
sinfo lets plan say that a job can never fit its partition (``squeue.fit_problem``) before
anything is submitted; a failing sinfo only turns that check off. The command exits with
squeue's status, so a failing ``squeue`` is reported (and a down or
timing-out controller classified) as before; squeue rows always start with a job id, never with
the ``@@madinfra`` marker. Output without the markers (an older or a fake remote) is all squeue.

Where the stack directory is: ``slurm.remote_dir`` when the provider compiled the stack in this
process (plan, apply), else the default ``~/.madinfra/<stack>`` unless a ``.remote_dir`` file
there points elsewhere (apply writes it for a stack with another remote_dir, so ``destroy``,
``show`` and ``output``, which do not compile the stack, still find markers and files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from madinfra import naming
from madinfra.config.schema import STACK_NAME_RE, SlurmSpec
from madinfra.launchers.ray_cluster import STATUS_DIR as RAY_STATUS_DIR
from madinfra_slurm import scripts, squeue

MARK = "@@madinfra"
POINTER = ".remote_dir"
PATTERNS = (scripts.TOPOLOGY_FILE, f"{scripts.ENDPOINTS_DIR}/*", f"{scripts.STATUS_DIR}/*", f"{RAY_STATUS_DIR}/*.status")
CONFIG_KEYS = ("SlurmUser", "AccountingStorageType")
"""The ``scontrol show config`` lines the live read keeps."""
SACCTMGR_TIMEOUT = 5
"""Seconds ``sacctmgr`` may take: it asks slurmdbd, which may be down even when slurmctld is up."""
OPERATOR_LEVELS = ("operator", "administrator")
_NAME_UID_RE = re.compile(r"^(?P<name>[^()\s]*)\((?P<uid>\d+)\)$")


@dataclass(frozen=True)
class Identity:
    """The SSH user as Slurm sees it, from the live read (see the module docstring)."""

    user: str
    uid: int | None = None
    slurm_user: str | None = None
    """``SlurmUser`` as ``scontrol show config`` prints it: ``slurm(64030)``."""
    admin_level: str | None = None
    """``sacctmgr``'s AdminLevel (``None``, ``Operator``, ``Administrator``); ``None`` when unknown."""

    @property
    def operator(self) -> bool:
        """Slurm's own test (``validate_operator``): root, SlurmUser, or an Operator/Administrator."""
        if self.uid == 0:
            return True
        match = _NAME_UID_RE.match((self.slurm_user or "").strip())
        if match and (match["name"] == self.user or (self.uid is not None and int(match["uid"]) == self.uid)):
            return True
        return (self.admin_level or "").strip().lower() in OPERATOR_LEVELS


def default_dir(stack: str) -> str:
    return naming.slurm_remote_dir(SlurmSpec.model_fields["remote_dir"].default, stack)


def pointer_path(stack: str) -> str:
    return f"{default_dir(stack)}/{POINTER}"


def _locate(stack: str, remote_dir: str | None) -> str:
    """Shell that sets ``d`` to the stack directory (see the module docstring)."""
    if remote_dir is not None:
        return f"d={scripts.shell_path(remote_dir)}"
    pointer = scripts.shell_path(pointer_path(stack))
    return f"d={scripts.shell_path(default_dir(stack))}; if [ -s {pointer} ]; then d=$(cat {pointer}); fi"


def remove_command(stack: str, remote_dir: str | None = None) -> str:
    """Remove the stack's directory (and the default one holding its pointer), once destroy
    has left nothing of the stack live.

    Only a validated stack name goes into the command, and the directory is removed only when
    it is absolute and its last component is that name: a pointer file edited by hand, or a
    ``slurm.remote_dir`` that resolves to something else, can never make it remove more than
    one stack's directory.
    """
    if not STACK_NAME_RE.match(stack):
        raise ValueError(f"{stack!r} is not a valid stack name; refusing to build a path from it")
    default = scripts.shell_path(default_dir(stack))
    return "; ".join(
        [
            _locate(stack, remote_dir),
            f'case "$d" in */./*|*/../*) ;; /*/{stack}) rm -rf -- "$d" {default}; exit $? ;; esac',
            f'echo "the stack directory $d is not a plain absolute path ending in /{stack}, so it was left in place" >&2; exit 1',
        ]
    )


def identity_command() -> str:
    """Shell printing the ``user``, ``config`` and ``admin-level`` marker lines; it never fails,
    and asks ``sacctmgr`` only where accounting goes through slurmdbd (elsewhere it only errors)."""
    wanted = " || ".join(f'$1 == "{key}"' for key in CONFIG_KEYS)
    return "; ".join(
        [
            f"printf '%s %s %s\\n' '{MARK} user' \"$(id -u 2>/dev/null)\" \"$(id -un 2>/dev/null)\"",
            f"cfg=$(scontrol show config 2>/dev/null | awk '{wanted} {{ print $1 \"=\" $3 }}')",
            f"for kv in $cfg; do printf '%s %s\\n' '{MARK} config' \"$kv\"; done",
            'case "$cfg" in *accounting_storage/slurmdbd*)'
            f" printf '%s %s\\n' '{MARK} admin-level'"
            f' "$(timeout {SACCTMGR_TIMEOUT} sacctmgr -n -P show user "$(id -un)" format=adminlevel 2>/dev/null | head -n 1)";;'
            " esac",
        ]
    )


def read_command(stack: str, remote_dir: str | None = None) -> str:
    """The one command of a live read (see the module docstring)."""
    locate = _locate(stack, remote_dir)
    listing = " ".join(PATTERNS)
    return "; ".join(
        [
            squeue.squeue_command(),
            "rc=$?",
            f"printf '%s %s\\n' '{MARK} squeue-exit' \"$rc\"",
            f"printf '%s\\n' '{MARK} sinfo'",
            f"{squeue.SINFO_COMMAND} 2>/dev/null",
            f"printf '%s %s\\n' '{MARK} sinfo-exit' \"$?\"",
            identity_command(),
            f"printf '%s %s\\n' '{MARK} now' \"$(date +%s)\"",
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
    """One live read: squeue's rows, the partitions' nodes as sinfo printed them (``None`` when
    sinfo failed or the remote printed none), the stack directory and its files."""

    squeue_text: str
    directory: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)
    sinfo_text: str | None = None
    identity: Identity | None = None
    """``None`` when the remote printed no ``user`` line (not this module's command)."""
    now: int | None = None
    """The remote clock (``None``: not printed)."""


def parse_read(stdout: str) -> LiveRead:
    """Split the command's output into squeue's part, sinfo's part, the stack dir and the files."""
    squeue_lines: list[str] = []
    sinfo_lines: list[str] = []
    sinfo_ok = False
    directory: str | None = None
    files: list[tuple[str, list[str]]] = []
    user: tuple[int | None, str] | None = None
    config: dict[str, str] = {}
    admin_level: str | None = None
    now: int | None = None
    section = "squeue"
    for line in stdout.splitlines():
        if line.startswith(MARK + " "):
            kind, _, value = line[len(MARK) + 1:].partition(" ")
            if kind in ("squeue-exit", "sinfo-exit"):
                section = "between"
                sinfo_ok = sinfo_ok or (kind == "sinfo-exit" and value.strip() == "0")
            elif kind == "sinfo":
                section = "sinfo"
            elif kind == "user":
                uid, _, name = value.strip().partition(" ")
                user = (int(uid) if uid.isdigit() else None, name.strip())
            elif kind == "config":
                key, _, setting = value.partition("=")
                config[key.strip()] = setting.strip()
            elif kind == "admin-level":
                admin_level = value.strip() or None
            elif kind == "now":
                now = int(value.strip()) if value.strip().isdigit() else None
            elif kind == "dir":
                directory = value
            elif kind == "file":
                section = "file"
                files.append((value, []))
            continue
        if section == "squeue":
            squeue_lines.append(line)
        elif section == "sinfo":
            sinfo_lines.append(line)
        elif section == "file":
            files[-1][1].append(line)
    return LiveRead(
        squeue_text="\n".join(squeue_lines) + ("\n" if squeue_lines else ""),
        directory=directory,
        files=[(path, "\n".join(lines).rstrip("\n") + "\n" if any(lines) else "") for path, lines in files],
        sinfo_text="\n".join(sinfo_lines) + "\n" if sinfo_ok else None,
        identity=Identity(user[1], user[0], config.get("SlurmUser"), admin_level) if user is not None else None,
        now=now,
    )
