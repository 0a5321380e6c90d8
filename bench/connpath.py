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

Usage (from the repository root)::

    python bench/connpath.py --connections 2000 [--mode handshake|get] [--profile out.pstats]

Every handshake is a full TLS 1.3 handshake (resumed handshakes: ``bench/handshake.py --resume``).
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
    client_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_context.set_min_proto_version(SSL.TLS1_3_VERSION)
    client_context.set_alpn_protos([b"http/1.1"])
    return factory, client_context


def one_connection(factory, client_context, hostname: str, get: bool, session, timer: list[float]):
    """One connection; adds the server's CPU seconds to ``timer[0]``; returns (client session, resumed)."""
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    client.set_tlsext_host_name(hostname.encode())
    if session is not None:
        client.set_session(session)
    transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))

    def to_server(data: bytes) -> bytes:
        started = time.process_time()
        server.dataReceived(data)
        timer[0] += time.process_time() - started
        out = transport.value()
        transport.clear()
        return out

    started = time.process_time()
    server = factory.buildProtocol(transport.getPeer())
    server.makeConnection(transport)
    timer[0] += time.process_time() - started
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
    started = time.process_time()
    server.connectionLost(None)
    timer[0] += time.process_time() - started
    return new_session, resumed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--hostnames", type=int, default=100)
    parser.add_argument("--mode", choices=("handshake", "get"), default="get")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the server's calls")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    hostnames = [f"h{i}.connpath.test" for i in range(args.hostnames)]
    factory, client_context = build(hostnames)
    sessions: dict[str, object] = {}
    timer = [0.0]
    # warm-up: every hostname's context loaded into the cache, every page rendered once
    for hostname in hostnames:
        sessions[hostname], _ = one_connection(factory, client_context, hostname, True, None, timer)
    timer = [0.0]
    profiler = cProfile.Profile() if args.profile else None
    resumed = 0
    if profiler is not None:
        profiler.enable()
    for i in range(args.connections):
        hostname = hostnames[i % len(hostnames)]
        session, was_resumed = one_connection(
            factory, client_context, hostname, args.mode == "get",
            None, timer,
        )
        sessions[hostname] = session
        resumed += was_resumed
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    result = {
        "connections": args.connections,
        "mode": args.mode,
        "resumed": resumed,
        "server_cpu_us_per_connection": round(timer[0] / args.connections * 1e6, 1),
        "profiled": bool(profiler),
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.connections} connections ({args.mode}, resumed {resumed}): "
              f"server CPU {result['server_cpu_us_per_connection']} us per connection"
              f"{' (under cProfile: inflated)' if profiler else ''}")
        if profiler is not None:
            pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
