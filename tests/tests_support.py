"""Paths shared by test modules (importable because pytest puts tests/ on sys.path)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_EXAMPLES = ROOT / "tests" / "fixtures" / "madengine-examples"
"""madengine's own example context files, unmodified (copied from the project's reference
material so the tests read nothing outside the repository)."""


def kubelet_expand(text: str, defined: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of env values, command and args (kubelet's rules: ``$$``
    is a literal ``$``, ``$(NAME)`` of a defined NAME is replaced, anything else stays)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(defined[name] if name in defined else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def run_madinfra(args: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float, check: bool | None) -> subprocess.CompletedProcess[str]:
    """The real ``madinfra`` CLI in a fresh process (stdin closed, output captured); with
    ``check``, a non-zero exit fails the test showing both streams."""
    proc = subprocess.run(
        [sys.executable, "-c", "from madinfra.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, f"madinfra {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc
