"""Smoke test of ``bench/handshake.py`` with the Go load generator (``bench/loadgen``).

Correctness only, never timing: a few hundred connections over 20 hostnames to
both servers (the real jobhost daemon and nginx), and every one must have
succeeded with a certificate that verifies and matches its SNI name, a 200
response, and, without ``--resume``, a full handshake.  Skipped when ``go``
(Debian: ``golang-go``) or ``nginx`` is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "handshake.py"
HOSTNAMES = 20

pytestmark = [
    pytest.mark.skipif(shutil.which("go") is None,
                       reason="needs the Go toolchain for bench/loadgen (Debian: apt-get install -y golang-go)"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (Debian: apt-get install -y nginx)"),
    # The first build of bench/loadgen on a cold Go cache takes a while on a busy machine.
    pytest.mark.timeout(600),
]


def run_bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--client", "go", "--hostnames", str(HOSTNAMES), "--rounds", "2",
         "--warmup", "10", "--concurrency", "2", "--time-limit", "60", "--json", *args],
        cwd=REPO, capture_output=True, text=True, timeout=540,
    )
    assert done.returncode == 0, f"handshake.py exited {done.returncode}:\n{done.stderr[-4000:]}\n{done.stdout[-4000:]}"
    return json.loads(done.stdout)


def check_clean(result: dict, connections: int) -> None:
    assert result["config"]["client"] == "go"
    assert result["config"]["hostnames"] == HOSTNAMES
    for server in ("jobhost", "nginx"):
        warmup = result["warmup"][server]
        assert warmup["errors"] == 0, (server, warmup)
        s = result["summary"][server]
        assert s["error_samples"] == [], (server, s["error_samples"])
        assert s["attempted"] == s["connections"] == connections, (server, s)
        assert s["errors"] == 0, (server, s)
        assert s["verify_failures"] == 0, (server, s)
        assert s["name_mismatches"] == 0, (server, s)
        assert s["non_200"] == 0, (server, s)
        assert s["resumed"] + s["full_handshakes"] == connections, (server, s)
        assert s["loadgen_cpu_s"] >= 0
        for one_round in result["rounds"][server]:
            assert one_round["go_version"].startswith("go")
            assert set(one_round["tls_versions"]) == {"TLSv1.3"}, one_round["tls_versions"]


def test_get_every_handshake_full() -> None:
    """``GET /`` on 20 hostnames: no errors, every certificate right, no handshake resumed."""
    result = run_bench("--connections", "100", "--mode", "get")
    check_clean(result, 100)
    for server in ("jobhost", "nginx"):
        s = result["summary"][server]
        assert s["resumed"] == 0 and s["full_handshakes"] == 100, (server, s)
        for one_round in result["rounds"][server]:
            assert one_round["bytes"] > 0


def test_handshake_only_with_resumption() -> None:
    """``--mode handshake --resume``: no errors, both servers resume, and full rounds are measured alongside."""
    result = run_bench("--connections", "100", "--mode", "handshake", "--resume")
    check_clean(result, 100)
    assert result["config"]["resume"] is True
    for server in ("jobhost", "nginx"):
        # Both servers really resume (a fresh client cache per round: 2 slots x 20 hostnames
        # at most are full), and each resumed round was paired with a round of full handshakes.
        assert result["summary"][server]["resumed"] > 0, (server, result["summary"][server])
        full = result["full_rounds"][server]
        assert len(full) == 2 and sum(r["attempted"] for r in full) == 100, (server, full)
        assert all(r["errors"] == 0 and r["reused"] == 0 and r["full"] == r["attempted"] for r in full), (server, full)
        resumption = result["resumption"][server]
        assert resumption["resumed"] == result["summary"][server]["resumed"], (server, resumption)
        assert resumption["full_us_per_connection"] > 0 and resumption["resumed_us_per_connection"] is not None


def test_hostile_mix_smoke() -> None:
    """bench/hostile.py, small: the attack runs against both servers and the good client is served throughout."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "hostile.py"), "--runs", "1", "--seconds", "2", "--hostnames", "3",
         "--garbage", "2", "--idle", "10", "--tricklers", "1", "--slowloris", "2", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"hostile.py exited {done.returncode}:\n{done.stderr[-4000:]}\n{done.stdout[-4000:]}"
    result = json.loads(done.stdout)
    assert [r["server"] for r in result["runs"]] == ["jobhost", "nginx"]
    for run in result["runs"]:
        assert run["failures"] == 0 and run["connections"] > 0, run
        attack = run["attack"]
        # every kind of attacker connected (the idle ones and the slowloris on both ports are held open)
        assert attack["garbage"] > 0 and attack["idle"] >= 10 and attack["trickle"] >= 1, attack
        assert attack["slowloris"] >= 4, attack
    for server in ("jobhost", "nginx"):
        s = result["summary"][server]
        assert s["failures"] == 0 and s["handshake_worst_ms"] > 0
