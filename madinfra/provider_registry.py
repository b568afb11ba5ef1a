"""Find a target's provider by name without importing any provider module up front.

Providers are distributions of their own (``madinfra-slurm``, ``madinfra-kubernetes``, under
``providers/`` in this repository) that register under the ``madinfra.providers`` entry point
group. The core never imports a provider directly: that keeps Pulumi and the kubernetes client out of
``madinfra --help`` and ``validate``, and lets tests register an in-memory provider.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

from madinfra.errors import MadinfraError
from madinfra.resources import Provider, ProviderOptions

ENTRY_POINT_GROUP = "madinfra.providers"
DISTRIBUTIONS = {"slurm": ("madinfra-slurm", "providers/slurm"), "k8s": ("madinfra-kubernetes", "providers/kubernetes")}
"""The first-party provider of each target: its distribution and its directory in a clone."""

ProviderFactory = Callable[..., Provider]
_registered: dict[str, ProviderFactory] = {}


def register(name: str, factory: ProviderFactory) -> None:
    """Register (or replace) a provider factory; used by tests and plugins loaded at run time."""
    _registered[name] = factory


def unregister(name: str) -> None:
    _registered.pop(name, None)


def factory_for(name: str) -> ProviderFactory:
    """The provider class/factory for a target name, loading its entry point only now."""
    if name in _registered:
        return _registered[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            factory = ep.load()
            _registered[name] = factory
            return factory
    known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(_registered))
    installed = ", ".join(known) or "none"
    if name in DISTRIBUTIONS:
        distribution, directory = DISTRIBUTIONS[name]
        how = f"install {distribution} (`pip install -e {directory}` in a clone of madinfra)"
    else:
        how = f"install the package that provides it, or use one of: {', '.join(sorted(DISTRIBUTIONS))}"
    raise MadinfraError(f"No provider is installed for target '{name}' (installed: {installed}); {how}")


def provider_for(target: str, options: ProviderOptions | None = None) -> Provider:
    """Instantiate the provider of ``target`` with options from CLI flags (context, ssh target...)."""
    return factory_for(target)(options or ProviderOptions())
