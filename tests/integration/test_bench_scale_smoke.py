"""Smoke test of ``bench/scale.py``: a few hundred hostnames, correctness only, never timing.

Runs the real benchmark command (seed in bulk, start ``twistd -n jobhost``,
handshake, restart with a small cache, sample a working set 4x the cache) on
SQLite and on the PostgreSQL server of this machine (127.0.0.1:5432, or
``JOBHOST_TEST_POSTGRES``; skipped when none answers, except under ``CI=true``),
and checks what it reports: every hostname seeded, every handshake served with
the right certificate, the issuing service left the valid hostnames alone, the
cache bounded at its caps and evicting, and misses really came from the store.
Also runs ``bench/scale.py memory`` on a few entries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "scale.py"
POSTGRES_URL = os.environ.get("JOBHOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

pytestmark = [pytest.mark.timeout(600)]

HOSTNAMES, TOUCH, CACHE, CONTEXTS, P99_CACHE = 400, 150, 120, 40, 50


def _stores() -> str:
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        return "sqlite"
    return "sqlite,postgresql"


def run(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))  # the daemon imports this checkout's jobhost
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=540, env=env)
    assert done.returncode == 0, f"scale.py exited {done.returncode}:\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}"
    return json.loads(done.stdout)


def test_scale_run_small() -> None:
    """Seed, serve, touch and sample on each store: no failure, nothing visited, caches bounded and evicting."""
    stores = _stores()
    result = run("run", "--hostnames", str(HOSTNAMES), "--touch", str(TOUCH), "--cache-size", str(CACHE),
                 "--context-cache-size", str(CONTEXTS), "--p99-cache", str(P99_CACHE), "--samples", "60", "--warm-names", "5",
                 "--settle", "1", "--stores", stores)
    assert [s["store"] for s in result["stores"]] == stores.split(",")
    for s in result["stores"]:
        assert s["seed"]["hostnames"] == HOSTNAMES, s
        assert s["time_to_first_handshake_s"] > 0
        assert s["log_lines_stopped_working"] == 0 and s["log_lines_issued_or_renewed"] == 0, s
        assert s["touch"]["names"] == TOUCH and s["touch"]["failures"] == 0, s["touch"]
        m = s["metrics_after_touch"]
        assert m['jobhost_cert_cache_entries{tier="hostname"}'] == CACHE, m
        assert m['jobhost_cert_cache_entries{tier="context"}'] == CONTEXTS, m
        assert m['jobhost_cert_cache_evictions_total{tier="hostname"}'] > 0, m
        assert m['jobhost_cert_cache_evictions_total{tier="context"}'] > 0, m
        assert m["jobhost_cert_cache_bytes"] > 0, m
        latency = s["latency"]
        assert latency["working_set"] == 4 * P99_CACHE and latency["samples"] == 60
        assert latency["lookups"]["misses"] <= 60, "a warm name missed: the warm sample is not warm"
        assert 0 < latency["working_set_cache_hit_ratio"] < 0.8, latency
        assert latency["warm_ms"]["p99"] > 0 and latency["working_set_ms"]["p99"] > 0


def test_scale_memory_small() -> None:
    """The per-entry memory measurement runs every kind; a built context costs more than its PEM."""
    result = run("memory", "--entries", "200")
    kinds = {k["kind"]: k for k in result["kinds"]}
    assert set(kinds) == {"context", "pem", "der", "parsed", "pyopenssl"}
    assert kinds["context"]["rss_bytes_per_entry"] > kinds["pem"]["pem_bytes_per_entry"] > 0
    assert kinds["pem"]["to_context_ms"] > 0 and kinds["pyopenssl"]["to_context_ms"] > 0
