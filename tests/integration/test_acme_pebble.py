"""
jobhost's ACME client against a real Pebble (and pebble-challtestsrv as its DNS).

Each test starts its own Pebble (under a second) whose HTTP-01 port is a
tiny twisted.web responder on 127.0.0.1 backed by a dict, so Pebble's VA
really fetches the key authorization.  challtestsrv resolves every name to
127.0.0.1.  The proxy tests put :class:`acme_proxy.AcmeDirectoryProxy` in
front of Pebble for what Pebble 2.4 lacks (ARI, profiles, rate limits).
"""

from __future__ import annotations

import os
from datetime import timezone
from typing import Any

import josepy as jose
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from acme_proxy import AcmeDirectoryProxy
from acme_servers import PebbleServer, ServerStartError, free_port
from jobhost.acme.client import AcmeClient, IHTTP01Responder
from jobhost.acme.resources import ari_cert_id
from jobhost.acme.urls import HTTP01_PATH_PREFIX
from jobhost.certs import dns_names, generate_private_key, make_csr, split_pem_chain
from jobhost.errors import AcmeProblem, AcmeTransportError, AcmeUnsupported, AuthorizationFailed
from jobhost.testing import MemoryResponder


class ChallengeResponder(Resource, MemoryResponder):
    """Answers ``GET /.well-known/acme-challenge/{token}`` from a dict; records every fetch."""

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        MemoryResponder.__init__(self)
        self.fetches: list[tuple[str, str]] = []
        self.corrupt = False

    def render_GET(self, request: Any) -> bytes:
        path = request.path.decode("ascii")
        host = (request.getHeader("host") or "").split(":")[0]
        token = path[len(HTTP01_PATH_PREFIX):] if path.startswith(HTTP01_PATH_PREFIX) else ""
        self.fetches.append((host, token))
        answer = self.answers.get((host, token))
        if answer is None:
            request.setResponseCode(404)
            return b"unknown token\n"
        request.setHeader("Content-Type", "text/plain")
        return (answer + ("-wrong" if self.corrupt else "")).encode("ascii")


def _verify_chain(chain_pem: bytes, root_pem: bytes, hostname: str) -> list[x509.Certificate]:
    """Verify leaf + intermediates up to ``root_pem`` for ``hostname`` (raises on failure)."""
    leaf, *intermediates = split_pem_chain(chain_pem)
    root = x509.load_pem_x509_certificate(root_pem)
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(hostname))
    return verifier.verify(leaf, intermediates)


class _PebbleCase(TestCase):
    """Starts a responder and a Pebble validating against it, and a client; stops all after."""

    nonce_reject = 5
    env_extra: dict[str, str] = {}
    client_options: dict[str, Any] = {}

    def setUp(self) -> None:
        self.responder = ChallengeResponder()
        port = reactor.listenTCP(0, Site(self.responder), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.pebble = self.start_pebble(port.getHost().port)
        self.addCleanup(self.pebble.stop)
        self.client = self.make_client(self.pebble.directory_url)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start_pebble(self, http_port: int) -> PebbleServer:
        return PebbleServer.start(http_port=http_port, nonce_reject=self.nonce_reject, env_extra=self.env_extra)

    def make_client(self, directory_url: str, **options: Any) -> AcmeClient:
        client = AcmeClient.create(
            reactor, directory_url, self.pebble.ca_bundle_path, timeout=10, **{**self.client_options, **options}
        )
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def obtain(self, client: AcmeClient, hostnames: list[str], **kwargs: Any) -> Any:
        key = generate_private_key()
        chain = yield client.obtain_certificate(hostnames, make_csr(key, hostnames), self.responder, **kwargs)
        return chain

    def register(self, client: AcmeClient | None = None) -> Any:
        self.account_key = jose.JWKEC(key=generate_private_key("ecdsa-p256"))
        return (client or self.client).register(self.account_key, contact=["mailto:ops@example.com"])


class PebbleIssuanceTests(_PebbleCase):
    """Accounts, issuance, failures and revocation against Pebble."""

    env_extra = {"PEBBLE_ALTERNATE_ROOTS": "1"}

    def test_responder_provides_interface(self) -> None:
        """The test responder satisfies IHTTP01Responder (so it is a fair stand-in)."""
        self.assertTrue(verifyObject(IHTTP01Responder, self.responder))

    @inlineCallbacks
    def test_register_finds_existing_account(self) -> None:
        """Registering the same key twice (two clients) returns one account URL; only the first creates it."""
        first = yield self.register()
        second = yield self.make_client(self.pebble.directory_url).register(self.account_key)
        self.assertEqual(first, second)
        self.assertTrue(first.startswith(f"https://127.0.0.1:{self.pebble.listen_port}/"))
        created = [e["created"] for e in self.events if "created" in e and "account_url" in e]
        self.assertEqual(created, [True, False])

    @inlineCallbacks
    def test_issue_certificate(self) -> None:
        """A certificate for jobs.acme-corp.test verifies against Pebble's root and names the host."""
        yield self.register()
        chain = yield self.obtain(self.client, ["jobs.acme-corp.test"])
        verified = _verify_chain(chain.chain_pem, self.pebble.root_pem(0), "jobs.acme-corp.test")
        self.assertEqual(len(verified), 3)
        self.assertEqual(dns_names(split_pem_chain(chain.chain_pem)[0]), ("jobs.acme-corp.test",))
        self.assertIn("jobs.acme-corp.test", [host for host, _ in self.responder.fetches])
        self.assertEqual(self.responder.answers, {})

    @inlineCallbacks
    def test_preferred_chain(self) -> None:
        """preferred_chain naming the alternate root's common name picks the chain up to that root."""
        alternate_root = x509.load_pem_x509_certificate(self.pebble.root_pem(1))
        name = alternate_root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        client = self.make_client(self.pebble.directory_url, preferred_chain=name)
        yield self.register(client)
        chain = yield self.obtain(client, ["chains.acme-corp.test"])
        _verify_chain(chain.chain_pem, self.pebble.root_pem(1), "chains.acme-corp.test")
        (default,) = chain.alternates
        _verify_chain(default, self.pebble.root_pem(0), "chains.acme-corp.test")

    @inlineCallbacks
    def test_three_hostnames_concurrently(self) -> None:
        """Three orders run at once on one client (one nonce pool) and each gets its own certificate."""
        yield self.register()
        names = ["a.acme-corp.test", "b.acme-corp.test", "c.acme-corp.test"]
        chains = yield gatherResults([self.obtain(self.client, [n]) for n in names], consumeErrors=True)
        root = self.pebble.root_pem(0)
        for name, chain in zip(names, chains):
            _verify_chain(chain.chain_pem, root, name)
        self.assertEqual(len({c.order_url for c in chains}), 3)

    @inlineCallbacks
    def test_self_check_failure_spends_no_validation(self) -> None:
        """A failing self-check aborts while the authorization is pending, Pebble never fetches, and it ends deactivated."""
        yield self.register()
        seen: dict[str, str] = {}

        class NotServing(Exception):
            pass

        @inlineCallbacks
        def self_check(hostname: str, token: str, key_authorization: str) -> Any:
            (order_url,) = [e["order_url"] for e in self.events if "order_url" in e and "status" in e]
            order = yield self.client.fetch_order(order_url)
            (authz_url,) = order.authorizations
            authz = yield self.client.authorization(authz_url)
            seen["url"], seen["before"] = authz_url, authz.status
            raise NotServing(hostname)

        yield self.assertFailure(self.obtain(self.client, ["broken.acme-corp.test"], self_check=self_check), NotServing)
        after = yield self.client.authorization(seen["url"])
        self.assertEqual((seen["before"], after.status), ("pending", "deactivated"))
        self.assertEqual(self.responder.fetches, [])
        self.assertEqual(self.responder.answers, {})

    @inlineCallbacks
    def test_failed_validation_carries_pebble_problem(self) -> None:
        """A wrong key authorization fails with AuthorizationFailed carrying Pebble's unauthorized problem."""
        yield self.register()
        self.responder.corrupt = True
        error = yield self.assertFailure(self.obtain(self.client, ["wrong.acme-corp.test"]), AuthorizationFailed)
        self.assertEqual((error.hostname, error.status), ("wrong.acme-corp.test", "invalid"))
        self.assertEqual(error.problem.code, "unauthorized")
        self.assertTrue(self.responder.fetches)
        self.assertEqual(self.responder.answers, {})

    @inlineCallbacks
    def test_revoke(self) -> None:
        """A revoked certificate shows as Revoked, with the reason, in Pebble's management API."""
        yield self.register()
        chain = yield self.obtain(self.client, ["revoked.acme-corp.test"])
        yield self.client.revoke(chain.chain_pem, reason=4)
        serial = format(split_pem_chain(chain.chain_pem)[0].serial_number, "x")
        status = self.pebble.cert_status(serial)
        self.assertEqual((status["Status"], status["Reason"]), ("Revoked", 4))
        error = yield self.assertFailure(self.client.revoke(chain.chain_pem), AcmeProblem)
        self.assertEqual(error.code, "alreadyRevoked")

    @inlineCallbacks
    def test_untrusted_ca_is_transport_error(self) -> None:
        """A client that does not trust Pebble's HTTPS certificate fails with AcmeTransportError."""
        client = AcmeClient.create(reactor, self.pebble.directory_url, None, timeout=5)
        self.addCleanup(client.close)
        error = yield self.assertFailure(client.directory(), AcmeTransportError)
        self.assertEqual(error.url, self.pebble.directory_url)


class PebbleNonceRejectTests(_PebbleCase):
    """Pebble refusing half of all good nonces."""

    nonce_reject = 50
    # At 50 % a request fails after n re-signs with probability 0.5**(n+1): the default 10
    # would make this test flaky (~0.5 % per run over ~15 requests), 30 does not.
    client_options = {"max_bad_nonce_retries": 30}

    @inlineCallbacks
    def test_issuance_survives_bad_nonces(self) -> None:
        """Issuance succeeds although Pebble rejects half the nonces, and badNonce was really retried."""
        yield self.register()
        chain = yield self.obtain(self.client, ["nonces.acme-corp.test"])
        _verify_chain(chain.chain_pem, self.pebble.root_pem(0), "nonces.acme-corp.test")
        retries = [e for e in self.events if "max_retries" in e]
        self.assertGreater(len(retries), 0)


class PebbleExternalAccountTests(_PebbleCase):
    """Pebble requiring external account binding."""

    hmac_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"

    def setUp(self) -> None:
        self.eab_keys = {"kid-1": self.hmac_key}
        super().setUp()

    def start_pebble(self, http_port: int) -> PebbleServer:
        return PebbleServer.start(http_port=http_port, eab_keys=self.eab_keys)

    @inlineCallbacks
    def test_register_with_eab(self) -> None:
        """Without a binding Pebble refuses the account; with (kid, HMAC key) it is created."""
        key = jose.JWKEC(key=generate_private_key("ecdsa-p256"))
        problem = yield self.assertFailure(self.client.register(key), AcmeProblem)
        self.assertEqual(problem.code, "externalAccountRequired")
        url = yield self.client.register(key, eab=("kid-1", self.hmac_key))
        self.assertTrue(url.startswith(f"https://127.0.0.1:{self.pebble.listen_port}/"))


class HarnessTests(TestCase):
    """The Pebble harness itself: restart, and cleanup when a start fails halfway."""

    def test_failed_start_stops_what_it_started(self) -> None:
        """When Pebble cannot start, ServerStartError carries its log, and its challtestsrv and files are gone."""
        started: list[PebbleServer] = []

        class BrokenPebble(PebbleServer):
            def _write_config(self) -> str:
                started.append(self)
                self.tls.cert_path = self.workdir + "/missing.pem"
                return super()._write_config()

        error = self.assertRaises(ServerStartError, BrokenPebble.start, http_port=free_port())
        self.assertIn("missing.pem", str(error))
        server = started[0]
        self.assertIsNotNone(server.process.poll())
        self.assertIsNotNone(server.dns.process.poll())
        self.assertFalse(os.path.exists(server.workdir))

    @inlineCallbacks
    def test_restart_keeps_the_url_and_drops_state(self) -> None:
        """After restart the directory URL is the same, the roots are new and old accounts are unknown."""
        pebble = PebbleServer.start(http_port=free_port())
        self.addCleanup(pebble.stop)
        client = AcmeClient.create(reactor, pebble.directory_url, pebble.ca_bundle_path, timeout=10)
        self.addCleanup(client.close)
        key = jose.JWKEC(key=generate_private_key("ecdsa-p256"))
        yield client.register(key)
        url, root = pebble.directory_url, pebble.root_pem()
        pebble.restart()
        self.assertEqual(pebble.directory_url, url)
        self.assertNotEqual(pebble.root_pem(), root)
        # The old connection is gone: a fresh client finds no account for the key and makes one.
        fresh = AcmeClient.create(reactor, pebble.directory_url, pebble.ca_bundle_path, timeout=10)
        self.addCleanup(fresh.close)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield fresh.register(key)
        self.assertEqual([e["created"] for e in events if "created" in e], [True])


class ProxiedPebbleTests(_PebbleCase):
    """ARI, profiles and rate limits through the directory proxy."""

    def setUp(self) -> None:
        super().setUp()
        self.proxy = AcmeDirectoryProxy.start(reactor, self.pebble)
        self.addCleanup(self.proxy.stop)
        self.client = self.make_client(self.proxy.directory_url)

    @inlineCallbacks
    def test_renewal_info_and_replaces(self) -> None:
        """The ARI window and Retry-After are read for the certificate's ID, and the renewal order sends replaces."""
        yield self.register()
        chain = yield self.obtain(self.client, ["ari.acme-corp.test"])
        self.assertTrue(chain.order_url.startswith(self.proxy.base_url))
        window, retry_after = yield self.client.renewal_info(chain.chain_pem)
        cert_id = ari_cert_id(chain.chain_pem)
        self.assertEqual(self.proxy.renewal_info_requests, [cert_id])
        start, end = self.proxy.ari_window
        self.assertEqual(window.start, start.astimezone(timezone.utc).replace(microsecond=0))
        self.assertEqual(window.end, end.astimezone(timezone.utc).replace(microsecond=0))
        self.assertEqual(retry_after, float(self.proxy.ari_retry_after))
        yield self.obtain(self.client, ["ari.acme-corp.test"], replaces=cert_id)
        self.assertEqual(self.proxy.new_orders[-1].get("replaces"), cert_id)
        self.assertNotIn("replaces", self.proxy.new_orders[0])

    @inlineCallbacks
    def test_profile_sent(self) -> None:
        """An advertised profile is sent in newOrder; an unknown one fails naming the offered profiles."""
        yield self.register()
        yield self.obtain(self.client, ["profile.acme-corp.test"], profile="shortlived")
        self.assertEqual(self.proxy.new_orders[-1]["profile"], "shortlived")
        # (A badNonce retry may send the same newOrder twice; count what the proxy saw so far.)
        orders = len(self.proxy.new_orders)
        error = yield self.assertFailure(self.obtain(self.client, ["profile.acme-corp.test"], profile="weekly"), AcmeUnsupported)
        self.assertEqual(error.offered, ("classic", "shortlived", "tlsserver"))
        self.assertEqual(len(self.proxy.new_orders), orders, "an unknown profile is refused before any request")

    @inlineCallbacks
    def test_rate_limited(self) -> None:
        """An injected rateLimited newOrder raises AcmeProblem with retry_after and the help link; the next order works."""
        yield self.register()
        self.proxy.inject_rate_limit(1, retry_after=1234)
        problem = yield self.assertFailure(self.obtain(self.client, ["busy.acme-corp.test"]), AcmeProblem)
        self.assertEqual((problem.code, problem.status, problem.retry_after), ("rateLimited", 429, 1234.0))
        self.assertEqual(problem.links["help"], (self.proxy.base_url + "/docs/rate-limits",))
        chain = yield self.obtain(self.client, ["busy.acme-corp.test"])
        _verify_chain(chain.chain_pem, self.pebble.root_pem(0), "busy.acme-corp.test")


def _pending_with_error(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A CA that leaves a failed challenge (and its authorization) ``pending``, with the problem attached."""
    if doc.get("status") == "invalid" and "challenges" in doc:
        doc["status"] = "pending"
        for challenge in doc["challenges"]:
            if challenge.get("status") == "invalid":
                challenge["status"] = "pending"
    return doc


def _invalid_without_problem(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A CA that marks an authorization ``invalid`` and says nothing about why."""
    if doc.get("status") == "invalid" and "challenges" in doc:
        for challenge in doc["challenges"]:
            challenge.pop("error", None)
    return doc


class CaHabitTests(_PebbleCase):
    """Habits of RFC 8555 servers other than Pebble, played by the directory proxy in front of it."""

    def setUp(self) -> None:
        super().setUp()
        self.proxy = AcmeDirectoryProxy.start(reactor, self.pebble)
        self.addCleanup(self.proxy.stop)
        self.client = self.make_client(self.proxy.directory_url, poll_timeout=60.0)

    def lines(self, level: Any = None) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if level is None or e.get("log_level") == level]

    @inlineCallbacks
    def test_a_pending_challenge_with_an_error_ends_the_attempt_at_once(self) -> None:
        """A challenge left pending with the CA's problem ends the attempt with that problem, without polling
        out the 60 s poll timeout (AcmeTimeout, the problem lost)."""
        from jobhost.issuing import describe_failure
        from twisted.python.failure import Failure

        yield self.register()
        self.responder.corrupt = True
        self.proxy.rewrite_json = _pending_with_error
        started = reactor.seconds()
        error = yield self.assertFailure(self.obtain(self.client, ["stuck.acme-corp.test"]), AuthorizationFailed)
        self.assertLess(reactor.seconds() - started, 20.0)
        self.assertEqual((error.hostname, error.status, error.problem.code), ("stuck.acme-corp.test", "pending", "unauthorized"))
        self.assertEqual(describe_failure(Failure(error))["problem"]["type"], "urn:ietf:params:acme:error:unauthorized")

    @inlineCallbacks
    def test_an_invalid_authorization_without_a_problem_says_what_is_known(self) -> None:
        """An authorization marked invalid with no problem document is reported as "the CA gave no reason"
        with the challenges' states, never as "None"."""
        yield self.register()
        self.responder.corrupt = True
        self.proxy.rewrite_json = _invalid_without_problem
        error = yield self.assertFailure(self.obtain(self.client, ["mute.acme-corp.test"]), AuthorizationFailed)
        self.assertIsNone(error.problem)
        self.assertEqual(str(error), "authorization for mute.acme-corp.test is invalid: the CA gave no reason "
                                     "(challenges: http-01 invalid)")
        (line,) = [line for line in self.lines() if line.startswith("Authorization for mute.acme-corp.test is invalid")]
        self.assertNotIn("None", line)
        self.assertIn("the CA gave no reason (challenges: http-01 invalid)", line)

    @inlineCallbacks
    def test_a_ca_refusing_deactivation_as_malformed_is_logged_once_at_info(self) -> None:
        """Deactivation answered with malformed on every abandoned attempt: one info line, no warnings."""
        from twisted.logger import LogLevel

        deactivations = []

        def refuse_deactivation(path: str, payload: Any) -> Any:
            if payload == {"status": "deactivated"}:
                deactivations.append(path)
                return 400, {"type": "urn:ietf:params:acme:error:malformed", "detail": "deactivation is not supported",
                             "status": 400}
            return None

        self.proxy.answer_post = refuse_deactivation

        class NotServing(Exception):
            pass

        def self_check(hostname: str, token: str, key_authorization: str) -> Any:
            raise NotServing(hostname)

        yield self.register()
        for name in ("one.acme-corp.test", "two.acme-corp.test"):
            yield self.assertFailure(self.obtain(self.client, [name], self_check=self_check), NotServing)
        self.assertEqual(len(deactivations), 2, "each abandoned attempt still asks")
        self.assertEqual([line for line in self.lines(LogLevel.warn) if "deactivate" in line], [])
        refused = [line for line in self.lines(LogLevel.info) if "refuses to deactivate" in line]
        self.assertEqual(len(refused), 1)
        self.assertIn("deactivation is not supported", refused[0])
