"""Stack files: parsing, madengine preset layering and validation (pure, no cluster access)."""

from madinfra.config.loader import disagg_split, load, parse_text, pool_roles, resolve, roles_for
from madinfra.config.schema import INFERENCE_LAUNCHERS, LAUNCHERS, StackSpec

__all__ = ["INFERENCE_LAUNCHERS", "LAUNCHERS", "StackSpec", "disagg_split", "load", "parse_text", "pool_roles", "resolve", "roles_for"]
