"""
Store latency and write rate: the directory store (reference), SQLite and PostgreSQL.

What it measures, per store, through the same ``IStore`` calls the daemon makes
(real reactor, the stores' own thread pools):

- cold lookup: ``get_certificate`` for a hostname not cached anywhere in jobhost
  (what an SNI cache miss waits for), sequential, over ``--lookups`` random names
  out of ``--hostnames`` stored: median and p90 in milliseconds;
- write rate: ``put_certificate`` of ``--writes`` records, one at a time and 16 in
  flight, in records per second (each write is durable: fsync / commit);
- ``update_domain`` rate, one at a time (the domain lifecycle's atomic update).

PostgreSQL is the server on 127.0.0.1:5432 (user ``postgres``, or
``JOBHOST_TEST_POSTGRES``); a database is created for the run and dropped after.

    python bench/store.py --hostnames 1000 --lookups 500 --writes 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time

import attrs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import defer  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from jobhost.store.directory import DirectoryStore  # noqa: E402
from jobhost.store.records import DomainRecord, DomainState, certificate_record  # noqa: E402
from jobhost.store.sql import Engine, SqlStore  # noqa: E402
from jobhost.testing import TestCA  # noqa: E402

POSTGRES_URL = os.environ.get("JOBHOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 3),
    }


async def _measure(reactor, store, records, args) -> dict:
    # Seed (not measured), 16 at a time.
    for start in range(0, len(records), 16):
        await defer.gatherResults([store.put_certificate(r) for r in records[start : start + 16]])
    names = [r.hostname for r in records]
    lookups = []
    for hostname in random.Random(7).choices(names, k=args.lookups):
        started = time.perf_counter()
        await store.get_certificate(hostname)
        lookups.append(time.perf_counter() - started)
    writes = records[: args.writes]
    started = time.perf_counter()
    for record in writes:
        await store.put_certificate(record)
    sequential = len(writes) / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(writes), 16):
        await defer.gatherResults([store.put_certificate(r) for r in writes[start : start + 16]])
    concurrent = len(writes) / (time.perf_counter() - started)
    now = records[0].not_before
    await store.add_domain(DomainRecord("bench.example.com", DomainState.ACTIVE, now, now))
    started = time.perf_counter()
    for i in range(args.writes):
        await store.update_domain("bench.example.com", lambda r, i=i: attrs.evolve(r, attempts=i + 1))
    updates = args.writes / (time.perf_counter() - started)
    return {
        "cold_lookup": _ms(lookups),
        "put_certificate_per_s": {"sequential": round(sequential), "16_in_flight": round(concurrent)},
        "update_domain_per_s": round(updates),
    }


async def main(reactor, args) -> None:
    ca = TestCA.create("bench store CA")
    records = []
    for i in range(args.hostnames):
        hostname = f"h{i:06d}.bench.test"
        key_pem, chain_pem = ca.issue(hostname)
        records.append(certificate_record(hostname, key_pem, chain_pem))
    workdir = tempfile.mkdtemp(prefix="jobhost-bench-store-")
    results = {}
    try:
        directory = DirectoryStore.create(reactor, os.path.join(workdir, "store"))
        results["directory"] = await _measure(reactor, directory, records, args)
        sqlite = SqlStore.create(Engine.sqlite(os.path.join(workdir, "jobhost.db")), reactor)
        results["sqlite"] = await _measure(reactor, sqlite, records, args)
        sqlite.close()
        import psycopg

        name = "jobhost_bench_" + secrets.token_hex(4)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
            postgres = SqlStore.create(Engine.postgresql(url, url), reactor)
            results["postgresql"] = await _measure(reactor, postgres, records, args)
            postgres.close()
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        shutil.rmtree(workdir, True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"store benchmark: {args.hostnames} hostnames stored, {args.lookups} cold lookups, {args.writes} writes")
    for kind, r in results.items():
        print(
            f"  {kind:<10} cold get_certificate median {r['cold_lookup']['median_ms']} ms, "
            f"p90 {r['cold_lookup']['p90_ms']} ms; put_certificate {r['put_certificate_per_s']['sequential']}/s "
            f"one at a time, {r['put_certificate_per_s']['16_in_flight']}/s 16 in flight; "
            f"update_domain {r['update_domain_per_s']}/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--hostnames", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
