"""Find a target's provider by name without importing any provider module up front.

Providers register under the ``madinfra.providers`` entry point group (pyproject.toml). The core
never imports ``providers`` directly: that keeps Pulumi and the kubernetes client out of
``madinfra --help`` and ``validate``, and lets tests register an in-memory provider.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

from madinfra.errors import MadinfraError
from madinfra.resources import Provider, ProviderOptions

ENTRY_POINT_GROUP = "madinfra.providers"

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
    raise MadinfraError(
        f"No provider is installed for target '{name}' (installed: {', '.join(known) or 'none'}); reinstall madinfra with `pip install -e .`"
    )


def provider_for(target: str, options: ProviderOptions | None = None) -> Provider:
    """Instantiate the provider of ``target`` with options from CLI flags (context, ssh target...)."""
    return factory_for(target)(options or ProviderOptions())
