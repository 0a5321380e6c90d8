"""
The dashboard's domains page over a large store: time to the first page, and to later pages.

Fills an SQLite store (the default store) with ``--hostnames`` domain records (1 in 100
failing, a certificate for 1 in 20), serves the real admin site (``AdminResource`` with the
``Dashboard``, :func:`jobhost.admin.api.admin_site`) on a loopback port in this process, logs
in through ``POST /login`` and times whole HTTP exchanges (request sent to last body byte,
client in the same process on the same reactor, so its own cost is included) of:

- ``/domains`` (first page, no filter): the acceptance figure (target: under 300 ms);
- ``/domains?q=h0500`` (prefix search, half-way down the table), ``/domains?state=failing`` (rare state);
- ``/domains?cursor=...`` (a page near the end);
- ``/domains?sort=expiry`` (soonest expiry first: the certificates' ``not_after`` index);
- ``/`` (the overview, which counts the whole store; its first, uncached count).

    python bench/dashboard.py --hostnames 100000 --rounds 30

Nothing else runs in the process (no issuing service): the figure is the page's own cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import treq  # noqa: E402
from twisted.internet import defer  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from _harness import machine, summary  # noqa: E402
from jobhost.admin.api import AdminResource, admin_site, encode_cursor  # noqa: E402
from jobhost.admin.dashboard import COOKIE, Dashboard  # noqa: E402
from jobhost.domains import DomainService  # noqa: E402
from jobhost.store.records import DomainRecord, DomainState, StateChange, certificate_record  # noqa: E402
from jobhost.store.sql import Engine, SqlStore, _doc  # noqa: E402
from jobhost.testing import TestCA  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


class _NoIssuer:
    """The domains page never asks the issuer anything."""


def fill(path: str, hostnames: int) -> None:
    """Insert the records straight into the schema the store created (one transaction)."""
    now = datetime.now(timezone.utc)
    ca = TestCA.create("bench dashboard CA")
    domains, certificates = [], []
    for i in range(hostnames):
        hostname = f"h{i:06d}.bench.test"
        state = DomainState.FAILING if i % 100 == 7 else DomainState.ACTIVE
        error = {"code": "points_elsewhere", "message": "A 198.51.100.7", "at": now.isoformat()} if state == "failing" else None
        record = DomainRecord(hostname, state, now, now, last_error=error,
                              history=(StateChange(now - timedelta(days=1), DomainState.PENDING, "registered"),
                                       StateChange(now, state, "bench")))
        domains.append((hostname, state, None, 0, _doc(record)))
        if i % 20 == 0:
            key_pem, chain_pem = ca.issue(hostname)
            certificate = certificate_record(hostname, key_pem, chain_pem)
            certificates.append((hostname, certificate.not_after.timestamp(), certificate.fingerprint, _doc(certificate)))
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO domains (hostname, state, next_attempt, version, doc) VALUES (?, ?, ?, ?, ?)", domains)
        db.executemany("INSERT INTO certificates (hostname, not_after, fingerprint, doc) VALUES (?, ?, ?, ?)", certificates)


async def timed(url: str, cookie: str) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    response = await treq.get(url, headers={"Cookie": f"{COOKIE}={cookie}"}, persistent=False)
    body = await response.content()
    return time.perf_counter() - started, response.code, body


async def main(reactor, args) -> None:
    workdir = tempfile.mkdtemp(prefix="jobhost-bench-dashboard-")
    try:
        path = os.path.join(workdir, "jobhost.db")
        store = SqlStore.create(Engine.sqlite(path), reactor)
        await store.check()
        started = time.perf_counter()
        fill(path, args.hostnames)
        filled = time.perf_counter() - started
        resource = AdminResource(store=store, domains=DomainService(store=store, clock=reactor), issuer=_NoIssuer(),
                                 clock=reactor, token=TOKEN)
        resource.dashboard = Dashboard(api=resource)
        port = reactor.listenTCP(0, admin_site(resource, clock=reactor), interface="127.0.0.1")
        base = f"http://127.0.0.1:{port.getHost().port}"
        response = await treq.post(base + "/login", data={"token": TOKEN}, allow_redirects=False, persistent=False)
        await response.content()
        cookie = response.cookies()[COOKIE]
        prefix = f"h{args.hostnames // 2:06d}"[:5]  # h0500 of 100,000: 100 hostnames, half-way down
        near_end = encode_cursor(f"h{args.hostnames - 60:06d}.bench.test")
        cases = {
            "first page": "/domains",
            f"prefix q={prefix}": f"/domains?q={prefix}",
            "state=failing": "/domains?state=failing",
            "page near the end": f"/domains?cursor={near_end}",
            "sort=expiry": "/domains?sort=expiry",
        }
        results = {}
        overview, code, body = await timed(base + "/", cookie)
        assert code == 200, (code, body[:500])
        for name, path_ in cases.items():
            samples = []
            for _ in range(args.rounds):
                seconds, code, body = await timed(base + path_, cookie)
                assert code == 200 and b"data-hostname" in body, (name, code, body[:500])
                samples.append(seconds)
            results[name] = summary(samples)
        await port.stopListening()
        store.close()
    finally:
        shutil.rmtree(workdir, True)
    report = {"hostnames": args.hostnames, "rounds": args.rounds, "fill_seconds": round(filled, 1),
              "overview_first_count_ms": round(overview * 1000, 1), "pages": results, "machine": machine()}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"dashboard benchmark: {args.hostnames} domain records in SQLite (filled in {filled:.1f} s), "
          f"{args.rounds} requests per case")
    for name, s in results.items():
        print(f"  {name:<18} " + ", ".join(f"{k} {v * 1000:.1f} ms" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in s.items()))
    print(f"  overview (first count of the whole store) {overview * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--hostnames", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
