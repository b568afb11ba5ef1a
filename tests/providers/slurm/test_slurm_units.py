"""Canonical SLURM values: what a stack writes and what squeue prints must compare equal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from madinfra_slurm import units


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("10", "00:10:00"),
        ("10:00", "00:10:00"),  # squeue's spelling of 10 minutes (minutes:seconds)
        ("10:30", "00:11:00"),  # seconds round up to the next minute, as SLURM does
        ("1:00:00", "01:00:00"),
        ("24:00:00", "1-00:00:00"),
        ("1-00:00:00", "1-00:00:00"),
        ("2-5", "2-05:00:00"),
        ("2-5:30", "2-05:30:00"),
        ("48:00:00", "2-00:00:00"),
        ("UNLIMITED", "UNLIMITED"),
        ("infinite", "UNLIMITED"),
    ],
)
def test_time_limits_have_one_spelling(written: str, canonical: str) -> None:
    assert units.normalize_time(written) == canonical


def test_bad_time_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a SLURM time limit"):
        units.normalize_time("ten minutes")


@given(st.integers(min_value=1, max_value=60 * 24 * 400))
def test_time_round_trips_through_squeue_format(minutes: int) -> None:
    text = units.format_minutes(minutes)
    assert units.time_minutes(text) == minutes
    assert units.normalize_time(text) == text


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("64G", "64G"), ("65536", "64G"), ("65536M", "64G"), ("1500", "1500M"), ("1T", "1T"), ("100M", "100M"), ("512K", "1M")],
)
def test_memory_sizes_have_one_spelling(written: str, canonical: str) -> None:
    assert units.normalize_mem(written) == canonical


def test_bad_memory_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a SLURM memory size"):
        units.normalize_mem("lots")


@pytest.mark.parametrize(
    ("tres", "gpus"),
    [("gres:gpu:4", 4), ("gres/gpu:2", 2), ("gres/gpu:mi300x:8", 8), ("gres:gpu:a100:1,gres:nic:1", 1), ("N/A", 0), ("gres:", 0), ("", 0)],
)
def test_gpus_are_read_from_tres_per_node(tres: str, gpus: int) -> None:
    assert units.gpus_from_tres(tres) == gpus
