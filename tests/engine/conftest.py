"""Fixtures for engine tests: the in-memory provider (memory_provider.py beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_provider import MemoryProvider, MemoryStore  # noqa: E402


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def provider(store: MemoryStore) -> MemoryProvider:
    return MemoryProvider(store=store)
