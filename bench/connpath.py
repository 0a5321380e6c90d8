"""
Server CPU of one HTTPS connection through jobhost's own code, without sockets or a kernel.

Drives the real listener (``SNIServerFactory``: ClientHello hold, certificate
cache, TLS hand-over) and the real HTTPS site (``HttpsRootResource`` with its
page cache, over a ``MemoryStore``) with in-memory transports, and a pyOpenSSL
client driven step by step in the same process.  Only the server's calls are
timed (``time.process_time`` around ``buildProtocol``/``makeConnection``, each
``dataReceived`` and ``connectionLost``), so the client's cryptography is not
counted.  What it leaves out, by design: the kernel (accept, read, write,
close) and the reactor's select loop, which ``bench/handshake.py`` measures
with real sockets against nginx.

With ``--profile FILE`` it also writes a cProfile of the server calls only (for
``python -m pstats FILE`` or snakeviz), and prints the top functions by
cumulative time: the map for cutting the per-connection path.

The same run also measures the *floor*: pyOpenSSL alone serving the same
connection (same certificate context and ticket settings, memory BIOs, the
same response bytes), with no Twisted and no jobhost code: the least any
Python server on this stack can spend.  Batches alternate between jobhost and
the floor, ``--repeat`` times, and the medians and their ratio are reported,
so a busy neighbour on the shared cores hits both alike.

Usage (from the repository root)::

    python bench/connpath.py --connections 2000 [--mode handshake|get] [--resume] [--repeat 5]
                             [--profile out.pstats]

Without ``--resume`` every handshake is a full TLS 1.3 handshake.  With it,
every batch of full handshakes (jobhost and floor) is followed by a batch in
which each connection offers the ticket the previous connection to its
hostname got (TLS 1.3 PSK resumption), and the medians of both and their ratio
(resumed / full) are reported, with the count of handshakes that resumed.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, machine  # noqa: E402
from OpenSSL import SSL  # noqa: E402
from OpenSSL._util import lib as _lib  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from jobhost.certs import self_signed_certificate  # noqa: E402
from jobhost.store.memory import MemoryStore  # noqa: E402
from jobhost.store.records import DomainRecord, DomainState, certificate_record  # noqa: E402
from jobhost.testing import TestCA  # noqa: E402
from jobhost.tls.listener import SNIServerFactory  # noqa: E402
from jobhost.tls.sni import CertificateCache  # noqa: E402
from jobhost.web.site import HttpsRootResource, PageCache, make_site  # noqa: E402

NOW = datetime.now(timezone.utc)


class _Transport(StringTransport):
    """A StringTransport the TLS layer can close (TLSMemoryBIOProtocol calls these)."""

    def abortConnection(self):
        self.loseConnection()

    def setTcpNoDelay(self, enabled):
        pass

    def getTcpNoDelay(self):
        return True


def build(hostnames: list[str]):
    ca = TestCA.create("connpath CA")
    store = MemoryStore()
    page = json.loads((REPO / "etc" / "example-page.json").read_text())
    for hostname in hostnames:
        store.certificates[hostname] = certificate_record(hostname, *ca.issue(hostname))
        store.domains[hostname] = DomainRecord(
            hostname=hostname, state=DomainState.ACTIVE, created_at=NOW, updated_at=NOW, page=page
        )
    clock = Clock()
    cache = CertificateCache(store=store, clock=clock, max_entries=len(hostnames) + 10)
    pages = PageCache(max_entries=len(hostnames) + 10)
    site = make_site(HttpsRootResource(store=store, page_cache=pages), clock=clock)
    fallback = self_signed_certificate("fallback.jobhost.invalid", NOW)
    factory = SNIServerFactory.create(site, cache, clock, *fallback)
    factory.doStart()
    # The floor's contexts: the same policy, certificate and ticket settings, and a servername
    # callback that does nothing (OpenSSL keeps the SNI name in the session only when a
    # servername callback accepted it, and does not resume a session without it).
    floor_contexts = {}
    for hostname in hostnames:
        record = store.certificates[hostname]
        floor_contexts[hostname] = cache.policy.context(record.key_pem, record.chain_pem)
        floor_contexts[hostname].set_tlsext_servername_callback(lambda connection: None)
    client_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_context.set_min_proto_version(SSL.TLS1_3_VERSION)
    client_context.set_alpn_protos([b"http/1.1"])
    return factory, client_context, floor_contexts


class _Timer:
    """Server CPU seconds, and (optionally) a cProfile of the server's calls only."""

    def __init__(self, profiler: cProfile.Profile | None = None) -> None:
        self.seconds = 0.0
        self.profiler = profiler

    def start(self) -> float:
        if self.profiler is not None:
            self.profiler.enable()
        return time.process_time()

    def stop(self, started: float) -> None:
        self.seconds += time.process_time() - started
        if self.profiler is not None:
            self.profiler.disable()


def _keep_resumable(client: SSL.Connection) -> None:
    """Let the client's session outlive its connection, as a browser's or Go's does.

    OpenSSL marks a session not resumable when its ``SSL`` is freed without having sent a
    close_notify (``ssl_clear_bad_session``, called from ``SSL_free``), and the session object
    ``get_session`` returns is that same object: without this, every ticket the benchmark's
    client kept was dead by the time it was offered, unless the garbage collector happened to
    free the connection late (the "few resume in-process" of the 2026-12-03 round).
    """
    client.set_shutdown(client.get_shutdown() | SSL.SENT_SHUTDOWN)


def one_connection(factory, client_context, hostname: str, get: bool, session, timer: _Timer):
    """One connection through jobhost; adds the server's CPU to ``timer``; returns (session, resumed)."""
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    client.set_tlsext_host_name(hostname.encode())
    if session is not None:
        client.set_session(session)
    transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))

    def to_server(data: bytes) -> bytes:
        started = timer.start()
        server.dataReceived(data)
        timer.stop(started)
        out = transport.value()
        transport.clear()
        return out

    started = timer.start()
    server = factory.buildProtocol(transport.getPeer())
    server.makeConnection(transport)
    timer.stop(started)
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    reply = to_server(client.bio_read(65536))
    if not reply:
        raise AssertionError("the server did not answer the ClientHello")
    client.bio_write(reply)
    try:
        client.do_handshake()
    except SSL.WantReadError:
        raise AssertionError("handshake did not complete in one round trip")
    if get:
        client.send(b"GET / HTTP/1.1\r\nHost: " + hostname.encode() + b"\r\nConnection: close\r\n\r\n")
    pending = client.bio_read(65536)
    reply = to_server(pending)
    if reply:
        client.bio_write(reply)
    body = b""
    try:
        while True:
            body += client.recv(65536)
    except (SSL.WantReadError, SSL.ZeroReturnError):
        pass
    if get and not body.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"unexpected response {body[:80]!r}")
    resumed = bool(_lib.SSL_session_reused(client._ssl))
    new_session = client.get_session()
    _keep_resumable(client)
    started = timer.start()
    server.connectionLost(None)
    timer.stop(started)
    return new_session, resumed, body


def floor_connection(contexts, client_context, hostname: str, response: bytes | None, session, timer: _Timer):
    """The same connection served by pyOpenSSL alone: the least a Python server does per connection.

    The server side: an ``SSL.Connection`` in the hostname's certificate context, fed
    and drained through its memory BIOs; with ``response``, read the request and
    send those bytes; then close_notify.  Same calls as ``one_connection`` on the
    client side.
    """
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    client.set_tlsext_host_name(hostname.encode())
    if session is not None:
        client.set_session(session)
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    hello = client.bio_read(65536)
    started = timer.start()
    server = SSL.Connection(contexts[hostname], None)
    server.set_accept_state()
    server.bio_write(hello)
    try:
        server.do_handshake()
    except SSL.WantReadError:
        pass
    reply = server.bio_read(65536)
    timer.stop(started)
    client.bio_write(reply)
    client.do_handshake()
    if response is not None:
        client.send(b"GET / HTTP/1.1\r\nHost: " + hostname.encode() + b"\r\nConnection: close\r\n\r\n")
    pending = client.bio_read(65536)
    started = timer.start()
    server.bio_write(pending)
    try:
        server.do_handshake()
        if response is not None:
            server.recv(65536)
            server.send(response)
        server.shutdown()
    except SSL.WantReadError:
        pass
    reply = server.bio_read(65536)
    timer.stop(started)
    client.bio_write(reply)
    try:
        while True:
            client.recv(65536)
    except (SSL.WantReadError, SSL.ZeroReturnError):
        pass
    resumed = bool(_lib.SSL_session_reused(client._ssl))
    _keep_resumable(client)
    return client.get_session(), resumed


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000, help="per batch")
    parser.add_argument("--hostnames", type=int, default=100)
    parser.add_argument("--mode", choices=("handshake", "get"), default="get")
    parser.add_argument("--resume", action="store_true", help="offer the hostname's last ticket")
    parser.add_argument("--repeat", type=int, default=3, help="batches of each (jobhost, floor), alternating")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of jobhost's server calls")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    hostnames = [f"h{i}.connpath.test" for i in range(args.hostnames)]
    factory, client_context, contexts = build(hostnames)
    get = args.mode == "get"
    sessions: dict[str, object] = {}
    floor_sessions: dict[str, object] = {}
    # warm-up: every hostname's context loaded into the cache, every page rendered once
    response = b""
    for hostname in hostnames:
        sessions[hostname], _, response = one_connection(factory, client_context, hostname, True, None, _Timer())
    # A second pass with the first pass's tickets (the resumed path warmed too).
    for hostname in hostnames:
        sessions[hostname], _, _ = one_connection(
            factory, client_context, hostname, True, sessions[hostname], _Timer()
        )
    for hostname in hostnames:
        floor_sessions[hostname], _ = floor_connection(
            contexts, client_context, hostname, response, None, _Timer()
        )
    profiler = cProfile.Profile() if args.profile else None
    batches: dict[str, list[float]] = {"jobhost": [], "floor": []}
    resumed = {"jobhost": 0, "floor": 0}
    full_batches: dict[str, list[float]] = {"jobhost": [], "floor": []}  # with --resume: the paired full batches

    def jobhost_batch(resume: bool) -> float:
        timer = _Timer(profiler)
        for i in range(args.connections):
            hostname = hostnames[i % len(hostnames)]
            session, was_resumed, _ = one_connection(
                factory, client_context, hostname, get, sessions[hostname] if resume else None, timer
            )
            sessions[hostname] = session
            resumed["jobhost"] += was_resumed
        return timer.seconds / args.connections * 1e6

    def floor_batch(resume: bool) -> float:
        timer = _Timer()
        for i in range(args.connections):
            hostname = hostnames[i % len(hostnames)]
            session, was_resumed = floor_connection(
                contexts, client_context, hostname, response if get else None,
                floor_sessions[hostname] if resume else None, timer,
            )
            floor_sessions[hostname] = session
            resumed["floor"] += was_resumed
        return timer.seconds / args.connections * 1e6

    for _ in range(args.repeat):
        if args.resume:
            full_batches["jobhost"].append(jobhost_batch(False))
        batches["jobhost"].append(jobhost_batch(args.resume))
        if args.resume:
            full_batches["floor"].append(floor_batch(False))
        batches["floor"].append(floor_batch(args.resume))
    if profiler is not None:
        profiler.dump_stats(args.profile)
    jobhost, floor = _median(batches["jobhost"]), _median(batches["floor"])
    result = {
        "connections_per_batch": args.connections,
        "repeat": args.repeat,
        "mode": args.mode,
        "resume": args.resume,
        "resumed": resumed,
        "server_cpu_us_per_connection": round(jobhost, 1),
        "floor_cpu_us_per_connection": round(floor, 1),
        "ratio_to_floor": round(jobhost / floor, 2),
        "batches_us": {name: [round(v, 1) for v in values] for name, values in batches.items()},
        "profiled": bool(profiler),
        "machine": machine(),
    }
    if args.resume:
        full = {name: _median(values) for name, values in full_batches.items()}
        result["full"] = {
            "batches_us": {name: [round(v, 1) for v in values] for name, values in full_batches.items()},
            "server_cpu_us_per_connection": round(full["jobhost"], 1),
            "floor_cpu_us_per_connection": round(full["floor"], 1),
            "resumed_to_full": {"jobhost": round(jobhost / full["jobhost"], 2), "floor": round(floor / full["floor"], 2)},
        }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        total = args.connections * args.repeat
        print(f"{args.repeat} x {args.connections} connections ({args.mode}, resumed {resumed['jobhost']}/{total}"
              f", floor {resumed['floor']}/{total}): server CPU median {result['server_cpu_us_per_connection']} us "
              f"per connection, pyOpenSSL floor {result['floor_cpu_us_per_connection']} us, "
              f"ratio {result['ratio_to_floor']}{' (jobhost under cProfile: inflated)' if profiler else ''}")
        print(f"  batches: jobhost {result['batches_us']['jobhost']}, floor {result['batches_us']['floor']}")
        if args.resume:
            full = result["full"]
            print(f"  full handshakes in the same run: jobhost {full['server_cpu_us_per_connection']} us, floor "
                  f"{full['floor_cpu_us_per_connection']} us; resumed / full: jobhost "
                  f"{full['resumed_to_full']['jobhost']}, floor {full['resumed_to_full']['floor']}")
            print(f"  full batches: jobhost {full['batches_us']['jobhost']}, floor {full['batches_us']['floor']}")
        if profiler is not None:
            pstats.Stats(args.profile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
