"""Manifests as YAML files, one object per file, for ``madinfra render`` (pure).

Keys keep the manifests' own order (apiVersion, kind, metadata, spec), which madinfra builds
deterministically, so rendering the same stack twice gives byte-identical files. A Secret holds
only digests in madinfra's specs; its file says so, and it is not meant to be applied by hand.
"""

from __future__ import annotations

from typing import Any

import yaml

from madinfra.resources import Resource

SECRET_NOTE = (
    "# Values are digests: madinfra reads the clear values from secret_env at apply time only.\n"
    "# Do not apply this file with kubectl.\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts, commands) as literal blocks, so they read like the scripts."""


YAML_LINE_BREAKS = ("\x85", "\u2028", "\u2029")
"""Characters YAML reads as line breaks; PyYAML writes them raw in plain/single-quoted/literal
scalars (with allow_unicode), where they would come back as a space. Double quotes escape them."""


def _str(dumper: yaml.SafeDumper, value: str) -> Any:
    if any(ch in value for ch in YAML_LINE_BREAKS):
        style = '"'
    else:
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1_000_000, allow_unicode=True)


def file_name(resource: Resource) -> str:
    kind = resource.kind.split("/", 1)[-1].lower()
    return f"{kind}-{resource.name}.yaml"


def render_files(resources: list[Resource]) -> dict[str, str]:
    files: dict[str, str] = {}
    for resource in resources:
        text = to_yaml(resource.spec)
        if resource.kind == "k8s/Secret":
            text = SECRET_NOTE + text
        files[file_name(resource)] = text
    return files
