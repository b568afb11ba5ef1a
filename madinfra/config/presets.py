"""madengine's preset layering, reproduced exactly (reference/madengine-behaviour.md section 2).

Layers are deep-merged in order: dicts recurse, scalars and lists replace. The preset files are
madengine's own, shipped in ``madinfra/config/presets/``.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=None)
def _preset(name: str) -> dict[str, Any]:
    text = resources.files("madinfra.config").joinpath("presets", f"{name}.json").read_text()
    data = json.loads(text)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` onto ``base`` without mutating either: dicts recurse, the rest replaces."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def k8s_layers(vendor: str, nnodes: int, gpu_count: int | None, has_launcher: bool) -> list[str]:
    """Preset names applied under a K8s config, in order (user config goes on top)."""
    layers = ["k8s_defaults", f"k8s_gpu-vendors_{vendor.lower()}"]
    if vendor.upper() == "AMD" and ((gpu_count or 1) > 1 or nnodes > 1):
        layers.append("k8s_gpu-vendors_amd-multi-gpu")
    if nnodes > 1:
        layers.append("k8s_profiles_multi-node")
    elif (gpu_count or 1) > 1 or has_launcher:
        layers.append("k8s_profiles_multi-gpu")
    else:
        layers.append("k8s_profiles_single-gpu")
    return layers


def slurm_layers(nodes: int) -> list[str]:
    """Preset names applied under a SLURM config, in order (user config goes on top)."""
    return ["slurm_defaults", "slurm_profiles_multi-node" if nodes > 1 else "slurm_profiles_single-node"]


def layered(layers: list[str], user: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in layers:
        merged = deep_merge(merged, _preset(name))
    return deep_merge(merged, user)
