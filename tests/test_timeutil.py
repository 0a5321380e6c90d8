"""Tests for jobhost.timeutil: wall time from an injected clock, RFC 3339 in and out."""

from datetime import datetime, timedelta, timezone

from twisted.internet.task import Clock

from jobhost.timeutil import from_iso, now, to_iso


def test_now_reads_the_injected_clock_as_aware_utc():
    clock = Clock()
    clock.advance(1_767_225_600)
    assert now(clock) == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_to_iso_renders_utc_with_a_z_suffix_whatever_the_zone():
    plus_two = timezone(timedelta(hours=2))
    assert to_iso(datetime(2026, 1, 1, 2, 30, tzinfo=plus_two)) == "2026-01-01T00:30:00Z"
    assert to_iso(None) is None


def test_from_iso_reads_z_offsets_and_naive_text_as_utc():
    expected = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)
    assert from_iso("2026-01-01T00:30:00Z") == expected
    assert from_iso("2026-01-01T02:30:00+02:00") == expected
    assert from_iso("2026-01-01T02:30:00+02:00").utcoffset() == timedelta(0)
    naive = from_iso("2026-01-01T00:30:00")
    assert naive == expected and naive.tzinfo is not None
    assert from_iso(None) is None


def test_round_trip():
    value = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=timezone.utc)
    assert from_iso(to_iso(value)) == value
