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
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

from madinfra.errors import MadinfraError

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_NANO = Decimal("1e-9")
_MILLI = Decimal("1e-3")

MAP_FIELDS = frozenset({"labels", "annotations", "data", "binaryData", "stringData", "nodeSelector", "matchLabels", "selector"})
"""Keys whose values are string maps: their entries are kept even when empty."""
QUANTITY_MAPS = frozenset({"requests", "limits", "capacity", "allocatable"})
"""Maps of resource name -> quantity (container resources, PVC storage requests)."""
QUANTITY_FIELDS = frozenset({"sizeLimit"})


def canonical_quantity(value: str | int | float, where: str = "quantity", resource_list: bool = False) -> str:
    """The text the API server returns for a quantity, e.g. ``0.5`` -> ``500m``.

    ``resource_list``: the quantity is a value of a ResourceList (container requests and
    limits, a PVC's storage request), which the server's defaulting rounds up to milli units
    first (``7.1u`` becomes ``1m``).

    As k8s.io/apimachinery does it: the text is kept as written when it is already in a form the
    server reuses (its fast path: a whole number of a binary suffix not divisible by 8, or decimal
    digits not ending in ``000`` with a scale that is a multiple of 3, e.g. ``2E6``, ``1.500``);
    otherwise the value is written canonically. Raises MadinfraError naming ``where`` for text
    that is not a Kubernetes quantity (the server would reject it at apply time).
    """
    text = str(value).strip()
    if text == "0":
        return text
    parsed = _parse(text)
    if parsed is None:
        raise MadinfraError(f"{where}: '{value}' is not a Kubernetes quantity (e.g. 500m, 2, 16Gi, 1.5)")
    negative, num, denom, suffix = parsed
    if suffix in _BINARY:
        fmt, exponent = "binary", _BINARY[suffix] * 10
    elif suffix in _DECIMAL:
        fmt, exponent = "decimal", _DECIMAL[suffix]
    elif suffix[:1] in ("e", "E") and re.fullmatch(r"[eE][+-]?[0-9]+", suffix):
        fmt, exponent = "exponent", int(suffix[1:])
    else:
        raise MadinfraError(f"{where}: '{value}' has an unknown suffix '{suffix}' (use one of m, k, M, G, T, Ki, Mi, Gi, Ti)")
    kept = _server_keeps_as_written(fmt, exponent, num, denom)
    scale = 0 if fmt == "binary" else exponent - len(denom)
    if kept and (not resource_list or scale >= -3):
        return text
    with localcontext() as exact:
        exact.prec = 100  # quantities reach 10^21 and nano units: no rounding but the server's
        number = Decimal(f"{num}.{denom or '0'}")
        amount = number * (Decimal(2) ** exponent) if fmt == "binary" else number.scaleb(exponent)
        if fmt == "binary":
            amount = min(amount, Decimal(_INT64_MAX))  # apimachinery caps binary quantities there
        # The server keeps nano precision (milli in a ResourceList) and rounds anything smaller up.
        amount = amount.quantize(_MILLI if resource_list else _NANO, rounding=ROUND_CEILING).normalize()
        return ("-" if negative and amount != 0 else "") + _text(amount, fmt)


def _text(amount: Decimal, fmt: str) -> str:
    if fmt == "binary" and amount >= 1024 and amount == amount.to_integral_value():
        return _binary_text(int(amount))
    return _decimal_text(amount, "exponent" if fmt == "exponent" else "decimal")


def _parse(text: str) -> tuple[bool, str, str, str] | None:
    """(negative, digits before the point without leading zeros, digits after it, suffix), as
    apimachinery's parseQuantityString splits a quantity; None when it is not one."""
    match = re.fullmatch(r"([+-]?)0*([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*[-+]?[0-9]*)", text)
    if match is None or not re.match(r"[+-]?[0-9.]", text):
        return None
    sign, num, denom, suffix = match.groups()
    return sign == "-", num or "0", denom or "", suffix


_INT64_MAX = 2**63 - 1


def _server_keeps_as_written(fmt: str, exponent: int, num: str, denom: str) -> bool:
    """apimachinery's ParseQuantity fast path, which stores the original text for reuse."""
    if fmt == "binary":
        if exponent < 0 or denom:
            return False
        mantissa, scale = 2**exponent, 0
        precision = 15 - len(num) - int(exponent * 3 / 10) - 1
    else:
        mantissa, scale = 1, exponent
        precision = 18 - len(num) - len(denom)
    if precision < 0:
        return False
    scale -= len(denom)
    if scale < -9:
        return False
    shifted = num + denom
    value = int(shifted)
    if value * mantissa > _INT64_MAX:
        return False
    if fmt == "binary":
        return value & 0x07 != 0
    return scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"


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
            return {name: canonical_quantity(v, f"{path}.{name}", resource_list=True) for name, v in value.items()}
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
