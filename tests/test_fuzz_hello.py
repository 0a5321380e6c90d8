"""A short run of ``bench/fuzz_hello.py``'s built-in engine, and proof that it catches planted faults.

The fuzz harness drives the real listener factory (hold, parser, certificate cache,
hand-over to TLS) on in-memory transports with a ``Clock``; see the script's docstring.
The long run and its figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fuzz_hello  # noqa: E402

from jobhost.tls import listener  # noqa: E402
from jobhost.tls.clienthello import NeedMore, NotTLS, parse_client_hello  # noqa: E402
from tls_helpers import pyopenssl_client_hello  # noqa: E402

SEED = 20240601
#: Inputs of the short run, and a wall-clock cap for a very busy machine (the run stops
#: early, at a memory sample, after that long; at least MIN_INPUTS must have run).
INPUTS, MAX_SECONDS, MIN_INPUTS = 20000, 20.0, 2000


@pytest.fixture(scope="module")
def harness():
    h = fuzz_hello.setup()
    yield h
    h.close()


def assert_nothing_left(harness):
    for factory in harness.factories.values():
        assert factory.connections == set()
        assert len(factory.held) == 0


def test_short_fuzz_run_finds_nothing(harness):
    """~20,000 generated and mutated ClientHellos, split at random TCP boundaries: no finding,
    every connection closed or handed over by its deadline, nothing left behind."""
    report = fuzz_hello.fuzz(INPUTS, SEED, harness=harness, sample_every=2000, max_seconds=MAX_SECONDS)
    assert report["findings"] == {}, report["finding_examples"]
    assert report["inputs"] >= MIN_INPUTS
    outcomes = report["outcomes"]
    assert set(outcomes) <= set(fuzz_hello.OUTCOMES), outcomes  # no "none": each one closed or handed over
    assert sum(outcomes.values()) == report["inputs"]
    # the engine reaches every outcome, and really splits the bytes
    assert all(outcomes.get(name, 0) > 0 for name in fuzz_hello.OUTCOMES), outcomes
    assert report["tcp_segments"] > 2 * report["inputs"]
    assert_nothing_left(harness)


def test_seeds_are_handed_over_unchanged(harness):
    """The unmutated real hellos reach the TLS layer (the harness does not break valid input)."""
    for name, expected in ((b"alpha.fuzz.test", "served"), (b"unknown.fuzz.test", "fallback"), (None, "fallback")):
        wire = pyopenssl_client_hello(name)
        outcome, findings = harness.run(wire, [1, 7, 50])
        assert (outcome, findings) == (expected, [])
        outcome, findings = harness.run(wire, [], "reject")
        assert (outcome, findings) == ("served" if expected == "served" else "rejected", [])


# -- planted faults: the harness must report each ----------------------------------------------


def test_catches_a_parser_that_raises(harness, monkeypatch, tmp_path):
    """A parser that raises on a byte pattern the mutations produce (a record length of 1) is found,
    the input is saved, and replaying it reproduces the finding."""

    def planted(data, *args, **kwargs):
        if bytes(data[3:5]) == b"\x00\x01":
            raise IndexError("planted parser bug")
        return parse_client_hello(data, *args, **kwargs)

    monkeypatch.setattr(listener, "parse_client_hello", planted)
    report = fuzz_hello.fuzz(2000, SEED, findings_dir=tmp_path, harness=harness, sample_every=1000)
    assert report["findings"].get("exception", 0) >= 1, report["findings"]
    example = next(e for e in report["finding_examples"] if e["kind"] == "exception")
    assert example["stage"].startswith("dataReceived")
    assert "planted parser bug" in example["detail"]
    saved = Path(example["file"])
    _, findings = harness.run(saved.read_bytes(), example["cuts"], example["variant"])
    assert findings[0]["kind"] == "exception"  # (then left open: the exception cut the hold short)
    assert_nothing_left(harness)


def test_catches_a_hold_that_never_closes(harness, monkeypatch):
    """A hold whose deadline does not close it leaves a half hello open: reported."""
    monkeypatch.setattr(listener._HelloHold, "_drop", lambda self, limit: None)
    outcome, findings = harness.run(pyopenssl_client_hello(b"alpha.fuzz.test")[:40], [9])
    assert outcome == "timeout"
    assert [f["kind"] for f in findings] == ["open_past_deadline"]


def test_catches_a_leaked_connection(harness, monkeypatch):
    """A hold that stays in factory.connections after connectionLost is reported."""
    original = listener._HelloHold.connectionLost

    def leaky(self, reason=None):
        original(self, reason)
        self._factory.connections.add(self)

    monkeypatch.setattr(listener._HelloHold, "connectionLost", leaky)
    _, findings = harness.run(b"\x00garbage", [])
    assert [f["kind"] for f in findings] == ["leak"]
    assert_nothing_left(harness)  # the harness cleans up after reporting


def test_catches_an_error_logged(harness, monkeypatch):
    """An error logged while handling a connection (here: a refusal logged as an error) is reported."""
    original = listener._HelloHold._refuse

    def noisy(self, result):
        self._factory.log.error("planted: refused {reason}", reason=result.reason)
        original(self, result)

    monkeypatch.setattr(listener._HelloHold, "_refuse", noisy)
    _, findings = harness.run(b"\x00garbage", [3])
    assert [f["kind"] for f in findings] == ["log"]
    assert "planted: refused" in findings[0]["detail"]


def test_catches_a_wrong_decision(harness, monkeypatch):
    """A parser that gives up too early (NotTLS for the start of a valid hello) disagrees with
    the whole-input parse: reported."""

    def impatient(data, *args, **kwargs):
        result = parse_client_hello(data, *args, **kwargs)
        if isinstance(result, NeedMore):
            return NotTLS("planted: impatient")
        return result

    monkeypatch.setattr(listener, "parse_client_hello", impatient)
    _, findings = harness.run(pyopenssl_client_hello(b"alpha.fuzz.test"), [20])
    assert [f["kind"] for f in findings] == ["disagreement"]


def test_memory_rule():
    """The flatness rule: growth beyond max(5%, 2 MiB) between the second and last quarter is not flat."""
    flat = [{"rss_kib": 70000 + (i % 3) * 100, "gc_objects": 68000} for i in range(16)]
    assert fuzz_hello.memory_verdict(flat)["flat"] is True
    growing = [{"rss_kib": 70000 + i * 1000, "gc_objects": 68000} for i in range(16)]
    assert fuzz_hello.memory_verdict(growing)["flat"] is False
    objects = [{"rss_kib": 70000, "gc_objects": 68000 + i * 1000} for i in range(16)]
    assert fuzz_hello.memory_verdict(objects)["flat"] is False
    assert fuzz_hello.memory_verdict(flat[:5])["flat"] is None
