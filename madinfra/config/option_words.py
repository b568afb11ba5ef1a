"""The one rule for values that become a single ``sbatch`` option word (``--partition=debug``).

``validate`` applies it to the stack file and the SLURM provider to every option it writes, so a
value ``validate`` accepts is one ``render``/``plan`` accept too.
"""

from __future__ import annotations

import re

_PRINTABLE_WORD = re.compile(r"^[!-~]+$")
_UNSAFE_CHARS = frozenset("'\"\\;")

SLURM_OPTION_FIELDS = ("partition", "qos", "account", "constraint", "nodelist", "exclude", "reservation", "mail_user", "mail_type")


def is_option_word(value: str) -> bool:
    """Printable ASCII without spaces, quotes, backslashes or ';'."""
    return bool(_PRINTABLE_WORD.match(value)) and not (_UNSAFE_CHARS & set(value))


def option_word_problem(field: str, value: str | None) -> tuple[str, str] | None:
    if value is None or is_option_word(value):
        return None
    return (field, f"{value!r} is not a single SLURM option word; remove spaces, quotes, backslashes, ';' and control characters")
