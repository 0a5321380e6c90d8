"""
Scale on one machine (issue 10): start-up with many stored hostnames, cache memory, miss latency.

Two commands (run from the repository root; PostgreSQL is the server on
127.0.0.1:5432, user ``postgres``, or ``JOBHOST_TEST_POSTGRES``; a database is
created for the run and dropped after)::

    python bench/scale.py memory                       # what one cache entry costs, per kind
    python bench/scale.py run --hostnames 100000       # seed, start, serve, measure

``memory`` builds N entries of each kind the SNI cache could hold, each kind in a
fresh Python process, and reports the process RSS growth per entry (OpenSSL's
own allocations included, which ``tracemalloc`` cannot see) and the time to make
one: a built ``SSL.Context`` (what :class:`jobhost.tls.sni.CertificateCache` hands
out), the PEM key and chain (what its hostname tier keeps), DER bytes, and parsed
``cryptography`` / pyOpenSSL objects; plus what turning each back into a context
costs.

``run`` does, for each store (``--stores sqlite,postgresql``):

1. seeds ``--hostnames`` hostnames in bulk: a leaf certificate per hostname
   signed by a local CA (:class:`jobhost.testing.TestCA`'s intermediate; the leaf
   keys come from a pool of ``--key-pool`` P-256 keys, so signing, not key
   generation, is the cost), made in ``--seed-workers`` processes, each record
   built by :func:`jobhost.store.records.certificate_record` (so it is exactly
   what the store writes) and inserted with one ``executemany`` per batch into
   the schema :class:`jobhost.store.sql.SqlStore` made; every domain record is
   ``active`` with its ``next_attempt`` at its renewal time (as after a first
   confirmation);
2. starts the real daemon (``twistd -n jobhost``, ``tests/integration/daemon.py``)
   on that store with ``[tls] cache_size = --cache-size`` and measures the time
   from spawning it to the first completed handshake for a seeded name (the
   certificate verified against the local CA), the RSS then and ``--settle``
   seconds later, the daemon's CPU seconds over that time, and how many
   "Stopped working on" / "Issued" lines its log holds (the issuing service must
   not visit every hostname);
3. touches ``--touch`` distinct names (one handshake each) and reports RSS after,
   and RSS per touched name beyond the start;
4. restarts the daemon with ``[tls] cache_size = --p99-cache`` and measures
   handshake latency, one connection at a time from this process: warm (names
   already cached, repeated) vs. a working set of 4x ``--p99-cache`` names drawn
   uniformly (mostly misses served from the store), ``--samples`` each; p50/p99.

Nothing here asserts a target; ``docs/benchmarks.md`` states the figures against them.
``--json`` prints everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, children, cpu_seconds, exit_on_sigterm, free_port, machine, percentile  # noqa: E402

POSTGRES_URL = os.environ.get("JOBHOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PAGE = REPO / "etc" / "example-page.json"
BATCH = 2000


# -- memory: what one cache entry costs ------------------------------------------------------------

MEMORY_KINDS = ("context", "pem", "der", "parsed", "pyopenssl")


def _rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(kind: str, count: int) -> dict:
    """In a fresh process: RSS growth and build time per entry of ``kind`` (see the module docstring)."""
    import gc

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto

    from jobhost.testing import TestCA
    from jobhost.tls.policy import TlsPolicy

    ca = TestCA.create("bench memory CA")
    pairs = [ca.issue(f"h{i:06d}.bench.test") for i in range(count)]
    policy = TlsPolicy()
    gc.collect()
    base = _rss_bytes()
    started = time.perf_counter()
    if kind == "context":
        held = [policy.context(k, c) for k, c in pairs]
    elif kind == "pem":
        held = [(bytes(bytearray(k)), bytes(bytearray(c))) for k, c in pairs]  # copies, as read from a store
    elif kind == "der":
        held = []
        for k, c in pairs:
            key = serialization.load_pem_private_key(k, None)
            der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            held.append((der_key, tuple(x.public_bytes(serialization.Encoding.DER)
                                        for x in x509.load_pem_x509_certificates(c))))
    elif kind == "parsed":
        held = [(serialization.load_pem_private_key(k, None), x509.load_pem_x509_certificates(c)) for k, c in pairs]
    elif kind == "pyopenssl":
        held = [(crypto.load_privatekey(crypto.FILETYPE_PEM, k),
                 [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in _split(c)]) for k, c in pairs]
    else:
        raise ValueError(kind)
    build = time.perf_counter() - started
    gc.collect()
    grown = _rss_bytes() - base
    result = {"kind": kind, "entries": len(held), "rss_bytes_per_entry": round(grown / count),
              "build_ms_per_entry": round(build * 1000 / count, 4)}
    if kind == "pem":
        result["pem_bytes_per_entry"] = round(sum(len(k) + len(c) for k, c in held) / count)
        # What a lookup that finds only the PEM pays: building the context from it.
        started = time.perf_counter()
        for k, c in held[:500]:
            policy.context(k, c)
        result["to_context_ms"] = round((time.perf_counter() - started) * 1000 / min(500, count), 4)
    if kind == "pyopenssl":
        # Parsed objects set on a fresh context (use_certificate/use_privatekey, no PEM parsing).
        started = time.perf_counter()
        for key, certs in held[:500]:
            context = policy.context()
            context.use_certificate(certs[0])
            context.use_privatekey(key)
            for extra in certs[1:]:
                context.add_extra_chain_cert(extra)
        result["to_context_ms"] = round((time.perf_counter() - started) * 1000 / min(500, count), 4)
    return result


def _split(chain_pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [part + marker for part in chain_pem.split(marker) if part.strip()]


def memory_main(args: argparse.Namespace) -> dict:
    results = []
    for kind in MEMORY_KINDS:
        done = subprocess.run(
            [sys.executable, __file__, "memory-child", kind, str(args.entries)],
            capture_output=True, text=True, timeout=600, cwd=REPO,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory-child {kind} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout))
    return {"command": "memory", "entries": args.entries, "kinds": results}


# -- seeding ---------------------------------------------------------------------------------------


def _make_ca_material() -> dict:
    """A local CA (root + intermediate) and what the seeding workers need of it, as PEM."""
    from cryptography.hazmat.primitives import serialization

    from jobhost.testing import TestCA

    ca = TestCA.create("bench scale CA")
    return {
        "root_pem": ca.root_pem,
        "intermediate_pem": ca.intermediate_pem,
        "intermediate_key_pem": ca.intermediate_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }


def hostname_of(i: int) -> str:
    return f"h{i:07d}.scale.test"


def seed_rows(material: dict, start: int, stop: int, key_pool: int, page: dict) -> list[tuple]:
    """Rows ``(hostname, not_after, fingerprint, cert_doc, state, next_attempt, domain_doc)`` for one range."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from jobhost.certs import renewal_time
    from jobhost.store.records import DomainRecord, DomainState, certificate_record

    issuer_key = serialization.load_pem_private_key(material["intermediate_key_pem"], None)
    issuer = x509.load_pem_x509_certificate(material["intermediate_pem"])
    rng = random.Random(start)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(min(key_pool, stop - start))]
    key_pems = [k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()) for k in keys]
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(start, stop):
        hostname = hostname_of(i)
        k = rng.randrange(len(keys))
        # Spread issue dates over 60 days so renewals (and next attempts) are spread too; none is due.
        not_before = now - timedelta(days=rng.uniform(0, 30), minutes=5)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(issuer.subject)
            .public_key(keys[k].public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(aki, critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        chain = leaf.public_bytes(serialization.Encoding.PEM) + material["intermediate_pem"]
        cert = certificate_record(hostname, key_pems[k], chain)
        due = renewal_time(cert)
        domain = DomainRecord(hostname=hostname, state=DomainState.ACTIVE, created_at=now, updated_at=now,
                              page=page, next_attempt=due)
        rows.append((hostname, cert.not_after.timestamp(), cert.fingerprint, _doc(cert),
                     domain.state, due.timestamp(), _doc(domain)))
    return rows


def _doc(record) -> str:
    # The SQL store's own serialisation (jobhost.store.sql._doc): sorted keys, compact.
    return json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))


def seed(store_kind: str, target: str, count: int, workers: int, key_pool: int, material: dict) -> dict:
    """Make the schema through SqlStore, then insert ``count`` hostnames in bulk; return timings."""
    from jobhost.pagedoc import validate_page
    from jobhost.store.sql import Engine, SqlStore

    started = time.monotonic()
    engine = Engine.sqlite(target) if store_kind == "sqlite" else Engine.postgresql(target, target)
    SqlStore.create(engine).migrate_now()
    page = validate_page(json.loads(PAGE.read_text()))
    if store_kind == "sqlite":
        import sqlite3

        db = sqlite3.connect(target)
        marker = "?"
    else:
        import psycopg

        db = psycopg.connect(target)
        marker = "%s"
    cert_sql = f"INSERT INTO certificates (hostname, not_after, fingerprint, doc) VALUES ({', '.join([marker] * 4)})"
    domain_sql = (f"INSERT INTO domains (hostname, state, next_attempt, version, doc) "
                  f"VALUES ({', '.join([marker] * 5)})")
    ranges = [(s, min(s + BATCH, count)) for s in range(0, count, BATCH)]
    inserted = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(seed_rows, material, a, b, key_pool, page) for a, b in ranges]
        for future in futures:
            rows = future.result()
            cursor = db.cursor()
            cursor.executemany(cert_sql, [r[:4] for r in rows])
            cursor.executemany(domain_sql, [(r[0], r[4], r[5], 0, r[6]) for r in rows])
            db.commit()
            inserted += len(rows)
    if store_kind == "postgresql":
        db.execute("ANALYZE")
        db.commit()
    db.close()
    return {"hostnames": inserted, "seed_s": round(time.monotonic() - started, 2)}


# -- the daemon ---------------------------------------------------------------------------------------


def daemon_config(store_url: str, http: int, https: int, admin: int, cache: int, contexts: int,
                  workers: int = 1) -> str:
    from daemon import listen_section  # tests/integration, see _harness

    return listen_section(http, https, admin) + f"""
[store]
url = "{store_url}"

[acme]
directory = "https://127.0.0.1:{free_port()}/dir"
contact = []

[preflight]
enabled = false
self_check = false

[tls]
cache_size = {cache}
context_cache_size = {contexts}

[server]
workers = {workers}   # --workers: 1, one process; more: RSS and CPU are summed over the main process and its workers
"""


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the worker processes)."""
    return [pid, *children(pid)]


def handshake(port: int, context: ssl.SSLContext, hostname: str, source: str | None = None) -> float:
    """One TLS handshake with SNI ``hostname`` (chain and name verified); its seconds."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0) if source else None) as raw:
        with context.wrap_socket(raw, server_hostname=hostname):
            pass
    return time.perf_counter() - started


def client_context(cafile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    context.options |= ssl.OP_NO_TICKET
    return context


def wait_serving_from(port: int, context: ssl.SSLContext, hostname: str, source: str, timeout: float = 30) -> None:
    """Retry a handshake from ``source`` until it succeeds (that worker serves)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            handshake(port, context, hostname, source)
            return
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_daemon(workdir: Path, config: str):
    """Spawn ``twistd -n jobhost``; return (daemon, ports, spawn time)."""
    from daemon import Daemon  # tests/integration, see _harness

    daemon = Daemon(workdir, config)
    spawned = time.monotonic()
    daemon.start()
    return daemon, spawned


def wait_serving(daemon, port: int, context: ssl.SSLContext, hostname: str, spawned: float, timeout: float = 60) -> float:
    """Seconds from spawn to the first completed handshake for ``hostname``."""
    deadline = spawned + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"twistd exited with {daemon.process.returncode}:\n{daemon.log()[-4000:]}")
        try:
            handshake(port, context, hostname)
            return time.monotonic() - spawned
        except (OSError, ssl.SSLError):
            time.sleep(0.02)
    raise TimeoutError(f"no handshake for {hostname} within {timeout} s:\n{daemon.log()[-4000:]}")


def scrape(admin: int, workdir: Path, names: tuple[str, ...]) -> dict:
    """Selected /metrics samples (the admin token is in var/admin.token)."""
    import urllib.request

    token = (workdir / "var" / "admin.token").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(names):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def run_store(kind: str, args: argparse.Namespace, material: dict, top: Path) -> dict:
    workdir = top / kind
    (workdir / "var").mkdir(parents=True)
    dbname = None
    if kind == "sqlite":
        target = str(workdir / "var" / "jobhost.db")
        store_url = "sqlite:var/jobhost.db"
    else:
        import psycopg

        dbname = "jobhost_bench_scale_" + secrets.token_hex(4)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        target = store_url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + dbname
    cafile = workdir / "ca.pem"
    cafile.write_bytes(material["root_pem"])
    client = client_context(cafile)
    result: dict = {"store": kind}
    try:
        result["seed"] = seed(kind, target, args.hostnames, args.seed_workers, args.key_pool, material)
        rng = random.Random(11)
        # Phase 1: start-up and memory with the production cache size.
        http, https, admin = free_port(), free_port(), free_port()
        daemon, spawned = start_daemon(workdir, daemon_config(store_url, http, https, admin, args.cache_size,
                                                              args.context_cache_size, args.workers))
        try:
            first = hostname_of(rng.randrange(args.hostnames))
            result["time_to_first_handshake_s"] = round(wait_serving(daemon, https, client, first, spawned), 3)
            main_pid = daemon.process.pid
            if args.workers > 1:
                deadline = time.monotonic() + 30
                while len(children(main_pid)) < args.workers and time.monotonic() < deadline:
                    time.sleep(0.05)
                from daemon import source_for  # tests/integration, see _harness

                for slot in range(args.workers):  # every worker serves before anything is measured
                    wait_serving_from(https, client, first, source_for(slot, args.workers))
            pids = process_tree(main_pid)
            rss = lambda: sum(_rss_bytes(p) for p in pids)  # noqa: E731
            cpu = lambda: sum(cpu_seconds(p) for p in pids)  # noqa: E731
            result["processes"] = len(pids)
            result["rss_at_serving_mib"] = round(rss() / 2**20, 1)
            cpu_at_serving = cpu()
            time.sleep(args.settle)
            result["rss_after_settle_mib"] = round(rss() / 2**20, 1)
            result["cpu_s_during_settle"] = round(cpu() - cpu_at_serving, 2)
            result["cpu_s_total_after_settle"] = round(cpu(), 2)
            log = daemon.log()
            result["log_lines_stopped_working"] = log.count("Stopped working on")
            result["log_lines_issued_or_renewed"] = log.count("Issued certificate") + log.count("Renewed certificate")
            base = rss()
            touch = [hostname_of(i) for i in rng.sample(range(args.hostnames), min(args.touch, args.hostnames))]
            started = time.monotonic()
            failures = 0
            # With workers, each name once from an address of each worker: every worker caches them all.
            from daemon import source_for  # tests/integration, see _harness

            sources = [source_for(slot, args.workers) for slot in range(args.workers)] if args.workers > 1 else [None]
            for name in touch:
                for source in sources:
                    try:
                        handshake(https, client, name, source)
                    except (OSError, ssl.SSLError):
                        failures += 1
            cached = len(touch) * len(sources)
            result["touch"] = {
                "names": len(touch), "failures": failures, "seconds": round(time.monotonic() - started, 1),
                "rss_after_mib": round(rss() / 2**20, 1),
                "rss_bytes_per_name": round((rss() - base) / max(cached, 1)),
                "cached_entries_all_workers": cached,
            }
            result["metrics_after_touch"] = scrape(admin, workdir, ("jobhost_cert_cache_entries",
                                                                    "jobhost_cert_cache_bytes",
                                                                    "jobhost_cert_cache_evictions_total"))
        finally:
            daemon.stop()
        # Phase 2: latency of a working set 4x the cache cap vs warm.
        http, https, admin = free_port(), free_port(), free_port()
        daemon, spawned = start_daemon(workdir, daemon_config(store_url, http, https, admin, args.p99_cache,
                                                              min(args.context_cache_size, args.p99_cache)))
        try:
            # Warm names stay cached: each is looked up every ~--warm-names connections, far fewer than
            # the cache holds.  Warm and working-set handshakes alternate, so noise from other
            # processes on the machine hits both samples alike.
            picks = rng.sample(range(args.hostnames), min(4 * args.p99_cache + args.warm_names, args.hostnames))
            warm_names = [hostname_of(i) for i in picks[:args.warm_names]]
            working = [hostname_of(i) for i in picks[args.warm_names:]]
            wait_serving(daemon, https, client, warm_names[0], spawned)
            for name in warm_names + working:  # one pass, so the cache is full and evicting when sampling starts
                handshake(https, client, name)
            before = scrape(admin, workdir, ("jobhost_cert_cache_total",))
            warm, cold = [], []
            for _ in range(args.samples):
                warm.append(handshake(https, client, rng.choice(warm_names)))
                cold.append(handshake(https, client, rng.choice(working)))
            after = scrape(admin, workdir, ("jobhost_cert_cache_total",))
            hits = after.get('jobhost_cert_cache_total{result="hit"}', 0) - before.get(
                'jobhost_cert_cache_total{result="hit"}', 0)
            misses = after.get('jobhost_cert_cache_total{result="miss"}', 0) - before.get(
                'jobhost_cert_cache_total{result="miss"}', 0)
            result["latency"] = {
                "cache_size": args.p99_cache,
                "working_set": len(working),
                "samples": args.samples,
                "warm_ms": _quantiles(warm),
                "working_set_ms": _quantiles(cold),
                "warm_names": len(warm_names),
                "lookups": {"hits": hits, "misses": misses},
                # Every miss is a working-set connection (warm names stay cached).
                "working_set_cache_hit_ratio": round(1 - misses / args.samples, 3),
                "p99_ratio": round(percentile(cold, 99) / percentile(warm, 99), 2),
            }
        finally:
            daemon.stop()
    finally:
        if dbname is not None:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return result


def _quantiles(samples: list[float]) -> dict:
    return {"p50": round(percentile(samples, 50) * 1000, 2), "p90": round(percentile(samples, 90) * 1000, 2),
            "p99": round(percentile(samples, 99) * 1000, 2), "max": round(max(samples) * 1000, 2)}


def run_main(args: argparse.Namespace) -> dict:
    material = _make_ca_material()
    top = Path(tempfile.mkdtemp(prefix="jobhost-bench-scale-"))
    result = {"command": "run", "machine": machine(), "config": {
        k: getattr(args, k) for k in ("hostnames", "cache_size", "context_cache_size", "touch", "p99_cache",
                                      "samples", "warm_names", "settle", "seed_workers", "key_pool", "stores", "workers")}}
    started = time.monotonic()
    try:
        result["stores"] = [run_store(kind, args, material, top) for kind in args.stores.split(",")]
    finally:
        shutil.rmtree(top, True)
    result["total_s"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["memory-child"]:
        print(json.dumps(memory_child(argv[1], int(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", required=True)
    memory = sub.add_parser("memory", help="RSS and build time per cache entry, per kind")
    memory.add_argument("--entries", type=int, default=3000)
    memory.add_argument("--json", action="store_true")
    run = sub.add_parser("run", help="seed a store, start the daemon, measure")
    run.add_argument("--hostnames", type=int, default=100_000)
    run.add_argument("--stores", default="sqlite,postgresql")
    run.add_argument("--cache-size", type=int, default=10_000)
    run.add_argument("--context-cache-size", type=int, default=1000)
    run.add_argument("--touch", type=int, default=10_000, help="distinct names to handshake with after start")
    run.add_argument("--workers", type=int, default=1,
                     help="[server] workers in the memory phase (1); RSS and CPU summed over all processes, each"
                          " touched name reaches every worker (their caches are their own)")
    run.add_argument("--p99-cache", type=int, default=1000, help="cache_size of the latency phase")
    run.add_argument("--samples", type=int, default=2000, help="handshakes per latency sample")
    run.add_argument("--warm-names", type=int, default=50, help="names of the warm sample (kept cached)")
    run.add_argument("--settle", type=float, default=10.0, help="seconds to watch the daemon after it serves")
    run.add_argument("--seed-workers", type=int, default=2)
    run.add_argument("--key-pool", type=int, default=64)
    run.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = memory_main(args) if args.command == "memory" else run_main(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_report(result))
    return 0


def _report(result: dict) -> str:
    if result["command"] == "memory":
        lines = [f"per cache entry, {result['entries']} entries, RSS growth of a fresh process:"]
        for k in result["kinds"]:
            extra = f", to a context {k['to_context_ms']} ms" if "to_context_ms" in k else ""
            lines.append(f"  {k['kind']:<10} {k['rss_bytes_per_entry']:>7} B/entry, "
                         f"made in {k['build_ms_per_entry']} ms{extra}")
        return "\n".join(lines)
    lines = [f"scale: {result['config']['hostnames']} hostnames, total {result['total_s']} s"]
    for s in result["stores"]:
        lat = s["latency"]
        lines.append(
            f"  {s['store']:<10} seeded in {s['seed']['seed_s']} s; first handshake {s['time_to_first_handshake_s']} s "
            f"after spawn; RSS {s['rss_at_serving_mib']} MiB at serving, {s['rss_after_settle_mib']} MiB after "
            f"settle ({s['cpu_s_during_settle']} CPU s meanwhile; 'Stopped working' lines: "
            f"{s['log_lines_stopped_working']}); after {s['touch']['names']} names: {s['touch']['rss_after_mib']} MiB "
            f"({s['touch']['rss_bytes_per_name']} B/name, {s['touch']['failures']} failures); latency warm p99 "
            f"{lat['warm_ms']['p99']} ms, working set {lat['working_set']} (4x cache {lat['cache_size']}) p99 "
            f"{lat['working_set_ms']['p99']} ms, ratio {lat['p99_ratio']}, hit ratio "
            f"{lat['working_set_cache_hit_ratio']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
