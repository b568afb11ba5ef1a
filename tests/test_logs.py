"""The ``madinfra logs`` contract's pure helpers: merge order, ``--since`` and ``--tail`` per
stream, ``--since`` parsing and the line's JSON (``madinfra/logs.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from madinfra.errors import MadinfraError
from madinfra.logs import LogLine, LogQuery, format_time, merge, parse_since, select


def line(rank: int, time: float | None, text: str = "", role: str = "worker") -> LogLine:
    return LogLine(role, rank, text or f"{rank}@{time}", time)


def test_merge_puts_streams_in_time_order_and_keeps_each_stream_in_order():
    zero = [line(0, 1.0), line(0, 3.0), line(0, 5.0)]
    one = [line(1, 2.0), line(1, 3.0), line(1, 4.0)]
    merged = list(merge([zero, one]))
    assert [(l.rank, l.time) for l in merged] == [(0, 1.0), (1, 2.0), (0, 3.0), (1, 3.0), (1, 4.0), (0, 5.0)]


def test_a_line_without_time_stays_right_after_the_line_before_it():
    zero = [line(0, 1.0), line(0, None, "traceback"), line(0, 4.0)]
    one = [line(1, 2.0), line(1, 3.0)]
    assert [l.text for l in merge([zero, one])] == ["0@1.0", "traceback", "1@2.0", "1@3.0", "0@4.0"]
    untimed = [line(0, None, "old a"), line(0, None, "old b")]
    assert [l.text for l in merge([untimed, [line(1, 1.0)]])] == ["old a", "old b", "1@1.0"]


@given(st.lists(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=8), max_size=4))
def test_merge_of_sorted_streams_is_sorted_and_loses_nothing(times):
    streams = [[line(rank, t) for t in sorted(values)] for rank, values in enumerate(times)]
    merged = list(merge(streams))
    assert [l.time for l in merged] == sorted(l.time for l in merged)
    assert sorted((l.rank, l.time) for l in merged) == sorted((l.rank, l.time) for s in streams for l in s)


def test_since_starts_at_the_first_line_at_or_after_it_and_tail_keeps_the_last_lines():
    lines = [line(0, 1.0), line(0, None, "untimed"), line(0, 2.0), line(0, 3.0)]
    assert [l.text for l in select(lines, LogQuery(since=2.0))] == ["0@2.0", "0@3.0"]
    assert [l.text for l in select(lines, LogQuery(since=1.5))] == ["0@2.0", "0@3.0"]
    assert select(lines, LogQuery(since=9.0)) == []
    assert [l.text for l in select(lines, LogQuery(tail=2))] == ["0@2.0", "0@3.0"]
    assert select(lines, LogQuery(tail=0)) == []
    assert [l.text for l in select(lines, LogQuery(since=1.0, tail=3))] == ["untimed", "0@2.0", "0@3.0"]
    assert select(lines, LogQuery()) == lines


def test_query_wants_role_and_rank():
    assert LogQuery().wants("decode", 3)
    assert LogQuery(role="decode").wants("decode", 3) and not LogQuery(role="decode").wants("prefill", 0)
    assert LogQuery(role="decode", rank=1).wants("decode", 1) and not LogQuery(rank=1).wants("decode", 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 1000.0 - 90), ("10m", 1000.0 - 600), ("2h", 1000.0 - 7200), ("1d", 1000.0 - 86400), ("1.5m", 1000.0 - 90)],
)
def test_since_as_a_duration_counts_back_from_now(text, expected):
    assert parse_since(text, now=1000.0) == expected


def test_since_as_a_time_is_utc_unless_it_says_otherwise():
    assert parse_since("2026-11-28T01:00:00Z") == 1795827600.0
    assert parse_since("2026-11-28T01:00:00") == 1795827600.0
    assert parse_since("2026-11-28T02:00:00+01:00") == 1795827600.0
    assert parse_since("2026-11-28T01:00:00.250Z") == 1795827600.25


@pytest.mark.parametrize("text", ["yesterday", "10", "5 minutes", "-5m", ""])
def test_since_that_is_neither_is_one_sentence(text):
    with pytest.raises(MadinfraError, match=r"is neither a duration \(90s, 10m, 2h, 1d\) nor a time"):
        parse_since(text)


def test_a_line_as_json_and_on_screen():
    stamped = LogLine("decode", 1, "ready", 1795827600.25, "stderr")
    assert stamped.source == "decode[1]"
    assert stamped.to_json() == {"role": "decode", "rank": 1, "time": 1795827600.25, "timestamp": "2026-11-28T01:00:00.250Z", "stream": "stderr", "text": "ready"}
    assert LogLine("worker", 0, "old").to_json()["timestamp"] is None
    assert format_time(0.0) == "1970-01-01T00:00:00.000Z"
