"""User-facing errors.

Every failure a user can cause or fix is raised as a :class:`MadinfraError` whose message is one
sentence naming the file, field or resource and the fix; the CLI prints it without a traceback.
"""

from __future__ import annotations


class MadinfraError(Exception):
    """An error the user can act on; ``str(err)`` is the whole message."""


class ConfigError(MadinfraError):
    """One or more problems in a stack file, each tied to a dotted field path."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) found:"] if len(self.problems) > 1 else []
        for path, message in self.problems:
            where = f"{path}: " if path else ""
            prefix = "  - " if len(self.problems) > 1 else f"{self.source}: "
            lines.append(f"{prefix}{where}{message}")
        return "\n".join(lines)


class ProviderError(MadinfraError):
    """A target cluster refused or failed an operation; the message names the resource."""


class TransientProviderError(ProviderError):
    """A failure worth retrying (connection reset, controller timeout)."""
