"""Desired manifests in the form the API server returns them, so "apply -> plan" is empty.

The API server decodes every object into Go structs and encodes it back: a resource quantity
comes back in its canonical text (``cpu: 0.5`` reads back as ``500m``, ``memory: 1024Mi`` as
``1Gi``, ``cpu: 8`` as the string ``"8"``), and an optional string field left empty is not
written at all (``env: [{name: X, value: ""}]`` reads back as ``[{name: X}]``). Comparing the
stack's own spelling with the server's would show changes that are not changes, and in a Job's
pod template every change forces a replacement: training would restart on every apply.

So madinfra writes desired manifests in the server's form from the start (pure functions, no
API call): quantities through Kubernetes' own canonicalisation rules (k8s.io/apimachinery
``resource.Quantity``: BinarySI stays binary when it is a whole number of at least 1024,
everything else is a decimal mantissa with an SI suffix whose exponent is a multiple of 3), and
empty strings dropped from struct fields (never from maps: a label or a ConfigMap entry may be
empty on purpose). Defaults the server adds are not dealt with here: the planner compares only
the fields madinfra sets (``UpdateRules.managed_fields_only``).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from madinfra.errors import MadinfraError

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_NUMBER = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?([eE][+-]?[0-9]+|[a-zA-Z]*)$")
_NANO = Decimal("1e-9")

MAP_FIELDS = frozenset({"labels", "annotations", "data", "binaryData", "stringData", "nodeSelector", "matchLabels", "selector"})
"""Keys whose values are string maps: their entries are kept even when empty."""
QUANTITY_MAPS = frozenset({"requests", "limits", "capacity", "allocatable"})
"""Maps of resource name -> quantity (container resources, PVC storage requests)."""
QUANTITY_FIELDS = frozenset({"sizeLimit"})


def canonical_quantity(value: str | int | float, where: str = "quantity") -> str:
    """The text the API server returns for a quantity, e.g. ``0.5`` -> ``500m``.

    Raises MadinfraError naming ``where`` for text that is not a Kubernetes quantity (the server
    would reject it at apply time; better to say so at plan time).
    """
    text = str(value).strip()
    match = _NUMBER.match(text)
    if not match or not (match.group(2) or match.group(3)):
        raise MadinfraError(f"{where}: '{value}' is not a Kubernetes quantity (e.g. 500m, 2, 16Gi, 1.5)")
    sign, whole, fraction, suffix = match.groups()
    try:
        number = Decimal(f"{whole or '0'}.{fraction or '0'}")
    except InvalidOperation:
        raise MadinfraError(f"{where}: '{value}' is not a Kubernetes quantity (e.g. 500m, 2, 16Gi, 1.5)") from None
    if suffix in _BINARY:
        fmt, amount = "binary", number * (Decimal(1024) ** _BINARY[suffix])
    elif suffix in _DECIMAL:
        fmt, amount = "decimal", number.scaleb(_DECIMAL[suffix])
    elif suffix[:1] in ("e", "E"):
        fmt, amount = "exponent", number.scaleb(int(suffix[1:]))
    else:
        raise MadinfraError(f"{where}: '{value}' has an unknown suffix '{suffix}' (use one of m, k, M, G, T, Ki, Mi, Gi, Ti)")
    # The server keeps nano precision and rounds anything smaller up.
    amount = amount.quantize(_NANO, rounding=ROUND_CEILING) if amount != amount.to_integral_value() else amount
    negative = sign == "-" and amount != 0
    amount = abs(amount)
    if fmt == "binary" and amount >= 1024 and amount == amount.to_integral_value():
        text = _binary_text(int(amount))
    else:
        text = _decimal_text(amount, "exponent" if fmt == "exponent" else "decimal")
    return ("-" if negative else "") + text


def _binary_text(amount: int) -> str:
    exponent = 0
    while amount and amount % 1024 == 0 and exponent < 6:
        amount //= 1024
        exponent += 1
    suffix = {0: ""} | {v: k for k, v in _BINARY.items()}
    return f"{amount}{suffix[exponent]}"


def _decimal_text(amount: Decimal, fmt: str) -> str:
    if amount == 0:
        return "0"
    sign, digits, exponent = amount.normalize().as_tuple()
    mantissa = int("".join(map(str, digits)))
    assert isinstance(exponent, int)
    shift = exponent % 3  # lower the exponent to a multiple of 3, as apimachinery does
    mantissa, exponent = mantissa * 10**shift, exponent - shift
    if fmt == "exponent":
        return f"{mantissa}" if exponent == 0 else f"{mantissa}e{exponent}"
    if exponent in _DECIMAL_SUFFIX:
        return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"
    if exponent > 18:
        return f"{mantissa * 10 ** (exponent - 18)}E"
    return f"{mantissa}e{exponent}"


def canonical_manifest(value: Any, key: str = "", path: str = "") -> Any:
    """A manifest (or part of one) in the API server's form; the input is not modified."""
    if isinstance(value, dict):
        if key in QUANTITY_MAPS:
            return {name: canonical_quantity(v, f"{path}.{name}") for name, v in value.items()}
        if key in MAP_FIELDS:
            return {name: v for name, v in value.items()}
        out = {}
        for name, item in value.items():
            if item == "":
                continue
            out[name] = canonical_manifest(item, name, f"{path}.{name}" if path else name)
        return out
    if isinstance(value, list):
        return [canonical_manifest(item, key, f"{path}[{i}]") for i, item in enumerate(value)]
    if key in QUANTITY_FIELDS and value is not None:
        return canonical_quantity(value, path)
    return value
