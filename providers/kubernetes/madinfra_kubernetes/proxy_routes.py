"""The disaggregated proxy's endpoint list: which pool pods its mini_lb command names (pure).

The proxy's command lists every pool pod by its stable DNS name
(``http://<sts>-<ordinal>.<headless svc>.<ns>.svc.<domain>:<port>``, see the sglang-disagg
launcher). While a pool rolls, apply points the proxy at exactly the pods that serve: surge pods
once they are ready, without replicas about to be removed. ``listing`` reads the ordinals of one
StatefulSet the command names; ``with_listing`` rewrites that run of URLs for other ordinals.

A transient proxy also carries the ``ROUTE_ANNOTATION`` on the Deployment (not on its pod
template, so it restarts nothing): it keeps every transient spec different from the planned one,
so the planned update of the proxy is still an update in Pulumi's eyes, whatever the transient
list was, and a proxy left in a transient state (``apply --no-rollback``) shows in the next plan.
"""

from __future__ import annotations

import copy
import re
from typing import Any

ROUTE_ANNOTATION = "madinfra.io/rollout-route"


def _pattern(sts: str) -> re.Pattern[str]:
    url = rf"http://{re.escape(sts)}-\d+\.\S+"
    return re.compile(rf"{url}(?:\s+{url})*")


def _commands(manifest: dict[str, Any]) -> list[list[Any]]:
    """The command/args lists of a Deployment's pod template, or of a Pod."""
    spec = manifest.get("spec") or {}
    if "template" in spec:
        spec = (spec.get("template") or {}).get("spec") or {}
    out = []
    for container in spec.get("containers") or []:
        for key in ("command", "args"):
            if isinstance(container.get(key), list):
                out.append(container[key])
    return out


def listing(manifest: dict[str, Any], sts: str) -> list[int] | None:
    """Ordinals of StatefulSet ``sts`` the proxy names, in order; None if it names none."""
    ordinal = re.compile(rf"http://{re.escape(sts)}-(\d+)\.")
    for words in _commands(manifest):
        for word in words:
            if isinstance(word, str):
                found = _pattern(sts).search(word)
                if found:
                    return [int(m) for m in ordinal.findall(found.group(0))]
    return None


def with_listing(manifest: dict[str, Any], sts: str, ordinals: list[int], note: str | None = None) -> dict[str, Any]:
    """A copy of the proxy manifest naming ``ordinals`` of ``sts`` (in that order); ``note``
    goes into the Deployment's ``ROUTE_ANNOTATION`` (None: the annotation is removed)."""
    out = copy.deepcopy(manifest)
    pattern = _pattern(sts)
    for words in _commands(out):
        for i, word in enumerate(words):
            if not isinstance(word, str):
                continue
            found = pattern.search(word)
            if not found:
                continue
            first = found.group(0).split()[0]
            head, tail = re.match(rf"(http://{re.escape(sts)}-)\d+(\..*)", first).groups()  # type: ignore[union-attr]
            urls = " ".join(f"{head}{n}{tail}" for n in ordinals)
            words[i] = word[: found.start()] + urls + word[found.end():]
    metadata = out.setdefault("metadata", {})
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != ROUTE_ANNOTATION}
    if note is not None:
        annotations[ROUTE_ANNOTATION] = note
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return out
