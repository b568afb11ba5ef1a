"""Shared fixtures: the repository root and a stack-file writer."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def write_stack(tmp_path: Path):
    """Write a stack file (YAML text or a dict as JSON) and return its path."""
    import json

    def _write(content: str | dict, name: str = "stack.yaml") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(content) if isinstance(content, dict) else content)
        return path

    return _write
