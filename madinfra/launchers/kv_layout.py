"""The KV cache layout of a disaggregated SGLang pool, and why it decides how pools change.

Prefill hands its KV cache to decode over the transfer backend; the two only work together when
they agree on the model, the tensor parallel size, the page size, the KV cache dtype and the
transfer backend. SGLang checks none of that up front: a mismatch shows only when decode
connects (garbage, hangs or a crash). So:

- at validate, the two pools of a stack must agree (``mismatch``: one sentence naming the field);
- in a plan, a change of the layout cannot roll pool by pool, because an old prefill replica
  would hand KV to a new decode one (or the reverse) in between: both pools are replaced
  together (``madinfra.planner.kv_compat``), and ``--only`` may not split them.

Providers record the layout each replica was started with (``Resource.kv_layout``: a SLURM job's
comment, a StatefulSet's annotation) so the plan compares what runs with what the stack asks,
not with a guess from state. The layout is read from the role's own command and environment,
the same text the node runs, so a ``model.args`` flag, a ``roles.<pool>.command`` of the user's
own and a ``roles.<pool>.env`` MODEL_PATH all count.
"""

from __future__ import annotations

import shlex
from urllib.parse import quote, unquote

from madinfra.launchers.model import LaunchPlan, RoleLaunch

LAUNCHER = "sglang-disagg"
POOLS = ("prefill", "decode")
FIELDS = ("model", "tp", "page_size", "kv_cache_dtype", "transfer_backend")
DEFAULTS = {"model": "", "tp": "1", "page_size": "1", "kv_cache_dtype": "auto", "transfer_backend": "mooncake"}
"""SGLang's own defaults (``sglang.launch_server``), for a command that does not set a flag."""
FLAGS = {
    "--model-path": "model",
    "--model": "model",
    "--tp-size": "tp",
    "--tp": "tp",
    "--tensor-parallel-size": "tp",
    "--page-size": "page_size",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--disaggregation-transfer-backend": "transfer_backend",
}
MODEL_ENV = "MODEL_PATH"
LABELS = {
    "model": "model",
    "tp": "TP size",
    "page_size": "--page-size",
    "kv_cache_dtype": "--kv-cache-dtype",
    "transfer_backend": "transfer backend",
}


SERVER_MODULE = "sglang.launch_server"


def layout_of(role: RoleLaunch) -> dict[str, str] | None:
    """The layout a pool's servers start with: the last value of each flag in the command (as
    argparse takes it), ``$MODEL_PATH`` resolved from the role's env, SGLang's defaults else.
    ``None`` for a command of the user's own that neither starts an SGLang server nor passes
    any of the flags (a stand-in, a wrapper script): madinfra cannot tell its layout."""
    words = _words(role.command)
    if SERVER_MODULE not in role.command and not any(word.partition("=")[0] in FLAGS for word in words):
        return None
    found = dict(DEFAULTS)
    if role.env.get(MODEL_ENV):
        found["model"] = role.env[MODEL_ENV]
    for i, word in enumerate(words):
        flag, eq, inline = word.partition("=")
        name = FLAGS.get(flag)
        if name is None:
            continue
        value = inline if eq else (words[i + 1] if i + 1 < len(words) else "")
        if name == "model" and value.strip("${}") == MODEL_ENV:
            continue  # "$MODEL_PATH": the env value above is what the server gets
        if value and not value.startswith("--"):
            found[name] = value
    return found


def _words(command: str) -> list[str]:
    words: list[str] = []
    for line in command.splitlines():
        try:
            words += shlex.split(line, comments=True)
        except ValueError:
            words += line.split()
    return words


def for_role(launch: LaunchPlan, role: str) -> str | None:
    """The encoded layout of a disaggregated stack's pool role; ``None`` for any other role or
    stack (only disaggregated pools hand KV to each other)."""
    if launch.launcher != LAUNCHER or role not in POOLS:
        return None
    layout = layout_of(launch.role(role))
    return encode(layout) if layout is not None else None


def encode(layout: dict[str, str]) -> str:
    """``model=%2Fmodels%2Fx,tp=8,...``: one word, no ``;`` or blanks (a SLURM comment field, a
    Kubernetes annotation value), readable, in a fixed order."""
    return ",".join(f"{name}={quote(layout.get(name, DEFAULTS[name]), safe='')}" for name in FIELDS)


def decode(text: str | None) -> dict[str, str] | None:
    """The layout ``encode`` wrote, ``None`` for nothing or a text it did not write."""
    if not text:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        if not eq or name not in FIELDS:
            return None
        out[name] = unquote(value)
    return out if set(out) == set(FIELDS) else None


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """``--page-size 16 -> 32``, one per differing field, in a fixed order."""
    return [f"{LABELS[name]} {before.get(name) or '(unset)'} -> {after.get(name) or '(unset)'}" for name in FIELDS if before.get(name) != after.get(name)]


def mismatch(launch: LaunchPlan) -> list[tuple[str, str]]:
    """``(field path, sentence)`` for each layout field prefill and decode disagree on."""
    if launch.launcher != LAUNCHER:
        return []
    prefill, decode_ = (layout_of(launch.role(pool)) for pool in POOLS)
    if prefill is None or decode_ is None:
        return []
    problems = []
    for name in FIELDS:
        if prefill[name] != decode_[name]:
            problems.append((
                f"roles.decode ({LABELS[name]})",
                f"prefill runs with {LABELS[name]} {prefill[name] or '(unset)'} and decode with {decode_[name] or '(unset)'}; "
                "disaggregated pools hand their KV cache to each other and must agree on it; set the same value for both pools "
                "(model.args, or the same roles.<pool>.command / env in both)",
            ))
    return problems
