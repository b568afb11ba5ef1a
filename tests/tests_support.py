"""Paths shared by test modules (importable because pytest puts tests/ on sys.path)."""

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
