"""Secret environment values: resolved only when needed, compared by digest, never shown.

A stack's ``secret_env`` names where each value comes from (the operator's environment, or an
inline value). Providers put ``secret_digest(name, value)`` into ``Resource.spec`` instead of the
value, so a rotated secret still shows up as a planned change while plans, plan files, state and
logs only ever hold a non-reversible label. The :class:`Redactor` is a second line of defence:
every renderer and writer passes its text through it, so a value that leaked into a spec or an
error message by mistake is still masked.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Iterable

from madinfra.errors import MadinfraError

SENSITIVE = "(sensitive value)"
DIGEST_PREFIX = "sha256:"
_SALT = b"madinfra-secret-v1:"
_MIN_REDACT_LENGTH = 4
"""Shorter values are not redacted by substring: masking every "1" or "on" would garble output."""


def secret_digest(name: str, value: str) -> str:
    """A stable label for diffing a secret without revealing it.

    Keyed by the variable name so the same value under two names gives two labels and a table of
    plain sha256 sums of common values does not apply.
    """
    mac = hmac.new(_SALT + name.encode("utf-8"), value.encode("utf-8"), hashlib.sha256)
    return DIGEST_PREFIX + mac.hexdigest()


def resolve_secret(source: Any, name: str = "") -> str:
    """The clear value of one ``secret_env`` entry (a SecretSource or a mapping with the same keys)."""
    from_env = _field(source, "from_env")
    value = _field(source, "value")
    label = f"secret_env.{name}" if name else "secret_env"
    if from_env:
        resolved = os.environ.get(from_env)
        if resolved is None:
            raise MadinfraError(
                f"{label} reads the environment variable {from_env}, which is not set; export {from_env} before running madinfra"
            )
        return resolved
    if value is not None:
        return value
    raise MadinfraError(f"{label} has neither 'from_env' nor 'value'; set one of them in the stack file")


def resolve_secrets(secret_env: dict[str, Any]) -> dict[str, str]:
    """All secret values of a stack, by name; fails on the first unset environment variable."""
    return {name: resolve_secret(source, name) for name, source in secret_env.items()}


def available_secret_values(secret_env: dict[str, Any]) -> list[str]:
    """The values that can be resolved right now, for redaction (unset variables are skipped,
    since a value that cannot be read cannot leak either)."""
    values = []
    for name, source in secret_env.items():
        try:
            values.append(resolve_secret(source, name))
        except MadinfraError:
            continue
    return values


class Redactor:
    """Masks known secret values in strings and in nested data before anything is shown or written."""

    def __init__(self, values: Iterable[str] = ()):
        # Longest first so a value containing another one is masked whole.
        self._values = sorted({v for v in values if v and len(v) >= _MIN_REDACT_LENGTH}, key=len, reverse=True)

    @classmethod
    def for_spec(cls, spec: Any) -> "Redactor":
        """A redactor for a StackSpec's ``secret_env`` (or an empty one)."""
        return cls(available_secret_values(getattr(spec, "secret_env", None) or {}))

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, SENSITIVE)
        return text

    def data(self, value: Any) -> Any:
        """A copy of ``value`` (dicts, lists, strings, scalars) with secret values masked."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.data(v) for v in value)
        return value


def _field(source: Any, key: str) -> Any:
    if isinstance(source, dict):
        return source.get(key)
    return getattr(source, key, None)
