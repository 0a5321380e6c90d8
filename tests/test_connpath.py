"""``bench/connpath.py``'s in-process connections: every kept ticket resumes, through jobhost and the floor.

The benchmark compares resumed connections with full ones, so its client must
not throw its own tickets away (OpenSSL marks a session not resumable when its
``SSL`` is freed without having sent a close_notify).  Correctness only: no timing.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import connpath  # noqa: E402

HOSTNAMES = [f"h{i}.connpath.test" for i in range(20)]


def test_every_kept_ticket_resumes_after_other_hostnames_were_served():
    """With 20 hostnames served in turn, each connection resumes the ticket its hostname's previous one got."""
    factory, client_context, floor_contexts = connpath.build(HOSTNAMES)
    sessions, floor_sessions, bodies = {}, {}, {}
    for hostname in HOSTNAMES:
        sessions[hostname], resumed, body = connpath.one_connection(
            factory, client_context, hostname, True, None, connpath._Timer()
        )
        assert not resumed
        assert body.startswith(b"HTTP/1.1 200")
        bodies[hostname] = body
        floor_sessions[hostname], resumed = connpath.floor_connection(
            floor_contexts, client_context, hostname, body, None, connpath._Timer()
        )
        assert not resumed
    gc.collect()  # every connection object that only a cycle kept alive is freed now
    outcomes, floor_outcomes = [], []
    for hostname in HOSTNAMES:
        sessions[hostname], resumed, body = connpath.one_connection(
            factory, client_context, hostname, True, sessions[hostname], connpath._Timer()
        )
        outcomes.append(resumed)
        assert body.startswith(b"HTTP/1.1 200")
        floor_sessions[hostname], resumed = connpath.floor_connection(
            floor_contexts, client_context, hostname, bodies[hostname], floor_sessions[hostname], connpath._Timer()
        )
        floor_outcomes.append(resumed)
    assert outcomes == [True] * len(HOSTNAMES)
    assert floor_outcomes == [True] * len(HOSTNAMES)
