"""
A Twisted-native ACME v2 (RFC 8555) client on treq, answering HTTP-01.

This module owns the order flow: the directory, the account (find-or-create,
external account binding), orders, authorizations, HTTP-01 answers, polling
with ``Retry-After``, finalization, chain download with alternate chains,
revocation, deactivation and ACME Renewal Information (RFC 9773).  Message
types, JWS signing and key authorizations come from certbot's ``acme``
package and ``josepy``; its blocking ``ClientV2`` is never used.  The wire
(nonces, ``badNonce`` retries, timeouts, problem documents) lives in
:mod:`jobhost.acme.transport`; the records this flow returns (orders,
authorizations, issued chains), their parsing and the pure chain helpers
(:func:`~jobhost.acme.resources.ari_cert_id`,
:func:`~jobhost.acme.resources.select_chain`) live in
:mod:`jobhost.acme.resources`.

Authorization lifecycle (RFC 8555 section 7.1.6)::

                    pending --------------------------+
                       |                              |
     challenge failed  |   challenge valid            | deactivated by us,
                       |        |                     | or expired
                       v        v                     v
                    invalid   valid ------> expired / revoked / deactivated

Challenge lifecycle: ``pending --(we POST {})--> processing --> valid | invalid``.

Order lifecycle::

    pending --(every authorization valid)--> ready --(finalize with CSR)--> processing
       |                                       |                               |
       |                                       |                               v
       +--(an authorization failed, expired)---+-------> invalid <--------  valid
                                                         (error)      (certificate URL)

jobhost answers a ``pending`` authorization by publishing the key
authorization through a :class:`IHTTP01Responder` (the store, so any process
can answer), optionally checking its own challenge URL, and only then telling
the CA: a failed self-check costs no CA validation.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Callable, Iterable, Mapping

import attrs
import josepy as jose
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from jobhost.certs import AriWindow, split_pem_chain
from jobhost.errors import (
    AcmeProblem,
    AcmeTimeout,
    AcmeTransportError,
    AcmeUnsupported,
    AuthorizationFailed,
    ConfigError,
    InvalidCertificate,
)
from jobhost.timeutil import from_iso, now
from jobhost.acme.resources import (
    AcmeAuthorization,
    AcmeOrder,
    IssuedChain,
    ari_cert_id,
    authorization_from,
    normalise_all,
    order_from,
    select_chain,
)
from jobhost.acme.interfaces import IAcmeClient, IHTTP01Responder
from jobhost.acme.transport import PEM_CHAIN_CONTENT_TYPE, AcmeResponse, JWSTransport
from jobhost.acme.urls import resolve_directory_url

#: RFC 9773 section 4.3: without a ``Retry-After`` ask again in six hours; clamp what the CA says.
ARI_DEFAULT_RETRY_AFTER = 6 * 3600.0
#: A challenge token is base64url text (RFC 8555 section 8.1).
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
ARI_RETRY_AFTER_BOUNDS = (60.0, 24 * 3600.0)


@inlineCallbacks
def _gather_all(deferreds: list[Deferred]) -> Any:
    """Wait for every Deferred (none is left running unobserved), then fail with the first failure."""
    results = yield DeferredList(deferreds, consumeErrors=True)
    for ok, value in results:
        if not ok:
            value.raiseException()
    return [value for _, value in results]


@implementer(IAcmeClient)
@attrs.define
class AcmeClient:
    """An ACME v2 client for one CA directory and (after :meth:`register`) one account.

    Build it with :meth:`create`; tests call the constructor with a
    ``treq.testing.StubTreq`` and a ``Clock``.

    Attributes:
        http_client: Anything with treq's ``request`` (``AgentRequester``, ``treq.HTTPClient``, ``StubTreq``).
        clock: Schedules request timeouts and polling.
        directory_url: The CA's directory URL.
        timeout: Seconds each HTTP request may take.
        preferred_chain: Issuer common name of the chain to prefer, e.g. ``"ISRG Root X1"``.
        poll_interval: First delay between polls, in seconds (grows 1.5x per poll).  Short, because
            a CA often validates within tens of milliseconds (Pebble; Let's Encrypt from a
            nearby vantage point): 50 ms costs a slow CA only about three extra polls per
            authorization over starting at 200 ms, and saves a fast one 150 ms per certificate.
        max_poll_interval: Cap on the delay between polls when the CA gives no ``Retry-After``.
        poll_timeout: Seconds an authorization or order may take before :class:`AcmeTimeout`.
        max_bad_nonce_retries: Re-signs per request after ``badNonce``.
        pool: The connection pool to close in :meth:`close`, when this client owns one.
        account_key / account_url: Set by :meth:`register` or :meth:`use_account`.
    """

    log = Logger()

    http_client: Any
    clock: IReactorTime
    directory_url: str
    timeout: float = 30.0
    preferred_chain: str | None = None
    poll_interval: float = 0.05
    max_poll_interval: float = 5.0
    poll_timeout: float = 300.0
    max_bad_nonce_retries: int = 10
    pool: Any = None
    #: Called with ``(endpoint_name, status)`` after every request (metrics); None for none.
    on_response: Any = None
    account_key: jose.JWK | None = attrs.field(default=None, init=False, repr=False)
    account_url: str | None = attrs.field(default=None, init=False)
    _transport: JWSTransport = attrs.field(init=False, repr=False)
    _directory: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)
    _directory_waiters: list[Deferred] | None = attrs.field(default=None, init=False, repr=False)
    #: The CA answered a deactivation with malformed (said once in the log).
    _deactivation_refused: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._transport = JWSTransport(
            self.http_client, self.clock, timeout=self.timeout, max_bad_nonce_retries=self.max_bad_nonce_retries,
            on_response=self._report_response,
        )

    def _report_response(self, method: str, url: str, status: str) -> None:
        if self.on_response is not None:
            self.on_response(self.endpoint_name(url), status)

    def endpoint_name(self, url: str) -> str:
        """A bounded label for a request URL: the directory's name for it, else ``"directory"``
        for the directory itself and ``"resource"`` for orders, authorizations, challenges
        and certificates (whose URLs carry identifiers)."""
        if url == self.directory_url:
            return "directory"
        for name, value in (self._directory or {}).items():
            if value == url:
                return name
        if self._directory and isinstance(self._directory.get("renewalInfo"), str) and url.startswith(
            self._directory["renewalInfo"]
        ):
            return "renewalInfo"
        return "resource"

    @classmethod
    def create(
        cls, reactor: Any, directory_url: str, ca_bundle: str | None = None, timeout: float = 30.0,
        max_connections: int = 32, **options: Any
    ) -> AcmeClient:
        """Build a client on an ``Agent`` (:class:`jobhost.httpclient.AgentRequester`) with a persistent connection pool.

        Reads ``ca_bundle`` once, here (startup, not a hot path).

        Args:
            reactor: The reactor (TCP, TLS, time).
            directory_url: A directory URL or a name from :data:`jobhost.acme.urls.DIRECTORIES`.
            ca_bundle: A PEM file of CA certificates to trust for the CA's
                HTTPS (Pebble's); None or ``""`` trusts the system roots.
            timeout: Seconds per request (also the TCP connect timeout).
            max_connections: Idle connections to the CA kept open for the next requests.
                Every order in flight has a request or two outstanding at a time; a pool
                smaller than that closes connections as requests finish and pays a new
                TLS handshake per request (Twisted's default pool keeps 2).
            options: Further attributes (``preferred_chain``, ``poll_timeout``, ...).

        Raises:
            ConfigError: for an unknown directory name or an unreadable bundle.
        """
        from twisted.internet import ssl

        from jobhost.httpclient import AgentRequester, outgoing_http

        url = resolve_directory_url(directory_url)
        trust_root = None
        if ca_bundle:
            try:
                with open(ca_bundle, "rb") as f:
                    certs = x509.load_pem_x509_certificates(f.read())
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read CA bundle {ca_bundle!r} ({e})", path=("acme", "ca_bundle")) from None
            trust_root = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in certs]
            )
        http = outgoing_http(reactor, timeout, trust_root=trust_root, max_per_host=max_connections)
        return cls(
            http_client=AgentRequester(http.agent), clock=reactor, directory_url=url, timeout=timeout, pool=http.pool, **options
        )

    def close(self) -> Deferred:
        """Close pooled connections (call when done; tests must, to leave the reactor clean).

        Returns:
            Deferred firing when every cached connection is closed.
        """
        if self.pool is None:
            return succeed(None)
        return self.pool.closeCachedConnections()

    # -- directory and account -------------------------------------------------------------

    def directory(self) -> Deferred:
        """Fetch the directory once and cache it; concurrent callers share the fetch.

        Returns:
            Deferred firing with the directory as a JSON object; failing with
            :class:`AcmeTransportError` or :class:`AcmeProblem` (not cached, so
            the next call retries).
        """
        if self._directory is not None:
            return succeed(self._directory)
        waiter: Deferred = Deferred()
        if self._directory_waiters is not None:
            self._directory_waiters.append(waiter)
            return waiter
        self._directory_waiters = [waiter]

        def done(result: Any) -> None:
            waiters, self._directory_waiters = self._directory_waiters or [], None
            if not isinstance(result, Failure):
                self._directory = result
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result)

        d = self._transport.get(self.directory_url)
        d.addCallback(self._check_directory)
        d.addBoth(done)
        return waiter

    def _check_directory(self, response: AcmeResponse) -> dict[str, Any]:
        doc = response.json()
        missing = [k for k in ("newNonce", "newAccount", "newOrder") if not isinstance(doc.get(k), str)]
        if missing:
            raise AcmeTransportError(f"not an ACME directory (no {', '.join(missing)})", url=response.url)
        if not isinstance(doc.get("meta"), Mapping):
            doc["meta"] = {}
        return doc

    @inlineCallbacks
    def register(
        self,
        account_key: jose.JWK,
        contact: Iterable[str] = (),
        terms_agreed: bool = True,
        eab: tuple[str, str] | None = None,
    ) -> Any:
        """Find the account for ``account_key``, or create it; then use it for every request.

        Asks with ``onlyReturnExisting`` first, so registering the same key
        twice never makes a second account; creates it only on
        ``accountDoesNotExist``.

        Args:
            account_key: The account's private key (``josepy.JWKEC``/``JWKRSA``).
            contact: ``mailto:`` URLs.
            terms_agreed: Agree to the CA's terms of service.
            eab: ``(kid, hmac_key_base64url)`` for external account binding.

        Returns:
            Deferred firing with the account URL; failing with
            :class:`AcmeProblem` or :class:`AcmeTransportError`.
        """
        directory = yield self.directory()
        new_account = directory["newAccount"]
        try:
            response = yield self._transport.post(
                new_account,
                messages.NewRegistration(only_return_existing=True),
                key=account_key,
                kid=None,
                new_nonce_url=directory["newNonce"],
            )
            created = False
        except AcmeProblem as problem:
            if problem.code != "accountDoesNotExist":
                raise
            fields: dict[str, Any] = {"terms_of_service_agreed": bool(terms_agreed)}
            contact = tuple(contact)
            if contact:
                fields["contact"] = contact
            if eab is not None:
                fields["external_account_binding"] = messages.ExternalAccountBinding.from_data(
                    account_public_key=account_key.public_key(),
                    kid=eab[0],
                    hmac_key=eab[1],
                    directory=messages.Directory.from_json(dict(directory)),
                )
            response = yield self._transport.post(
                new_account,
                messages.NewRegistration(**fields),
                key=account_key,
                kid=None,
                new_nonce_url=directory["newNonce"],
            )
            created = True
        account_url = response.location
        if not account_url:
            raise AcmeTransportError("newAccount answered without a Location header", url=new_account)
        self.use_account(account_key, account_url)
        if created:
            self.log.debug("Created ACME account {account_url}", account_url=account_url, created=True)
        else:
            self.log.debug("Found existing ACME account {account_url}", account_url=account_url, created=False)
        return account_url

    def use_account(self, account_key: jose.JWK, account_url: str) -> None:
        """Use a known account (key and URL from the store) without asking the CA."""
        self.account_key = account_key
        self.account_url = account_url

    @inlineCallbacks
    def _post(self, url: str, payload: Any, accept: str | None = None, key: jose.JWK | None = None) -> Any:
        directory = yield self.directory()
        if key is None and (self.account_key is None or self.account_url is None):
            raise RuntimeError("AcmeClient has no account: call register() or use_account() first")
        response = yield self._transport.post(
            url,
            payload,
            key=key or self.account_key,
            kid=None if key is not None else self.account_url,
            new_nonce_url=directory["newNonce"],
            accept=accept,
        )
        return response

    # -- orders and authorizations -----------------------------------------------------------

    @inlineCallbacks
    def profiles(self) -> Any:
        """Deferred firing with the directory's profiles, ``name -> description`` (empty when none)."""
        directory = yield self.directory()
        offered = directory["meta"].get("profiles")
        return dict(offered) if isinstance(offered, Mapping) else {}

    @inlineCallbacks
    def new_order(self, hostnames: Iterable[str], replaces: str | None = None, profile: str | None = None) -> Any:
        """Ask the CA for an order for ``hostnames``.

        Args:
            hostnames: Hostnames (normalised here; duplicates dropped).
            replaces: The RFC 9773 certificate ID this order renews; sent only
                when the directory has ``renewalInfo``.
            profile: A certificate profile the directory's ``meta.profiles`` offers.

        Returns:
            Deferred firing with an :class:`AcmeOrder`; failing with
            :class:`AcmeUnsupported` (profile not offered; nothing is sent),
            :class:`AcmeProblem` (e.g. ``rateLimited`` with ``retry_after``) or
            :class:`AcmeTransportError`.
        """
        names = normalise_all(hostnames)
        directory = yield self.directory()
        payload: dict[str, Any] = {"identifiers": [{"type": "dns", "value": n} for n in names]}
        if profile is not None:
            offered = yield self.profiles()
            if profile not in offered:
                raise AcmeUnsupported("profile", profile, tuple(sorted(offered)), self.directory_url)
            payload["profile"] = profile
        if replaces is not None:
            if isinstance(directory.get("renewalInfo"), str):
                payload["replaces"] = replaces
            else:
                self.log.debug("The CA offers no renewal information; not sending replaces={replaces}", replaces=replaces)
        response = yield self._post(directory["newOrder"], payload)
        if not response.location:
            raise AcmeTransportError("newOrder answered without a Location header", url=response.url)
        order = order_from(response.location, response)
        self.log.debug(
            "Created order {order_url} for {hostnames} ({status})",
            order_url=order.url,
            hostnames=list(names),
            status=order.status,
        )
        return order

    def fetch_order(self, order: AcmeOrder | str) -> Deferred:
        """POST-as-GET an order (or its URL); Deferred firing with a fresh :class:`AcmeOrder`."""
        url = order if isinstance(order, str) else order.url
        return self._post(url, None).addCallback(lambda r: order_from(url, r))

    def authorization(self, url: str) -> Deferred:
        """POST-as-GET an authorization; Deferred firing with an :class:`AcmeAuthorization`."""
        return self._post(url, None).addCallback(lambda r: authorization_from(url, r))

    def answer_challenge(self, challenge_url: str) -> Deferred:
        """Tell the CA to validate a challenge (POST ``{}``); Deferred firing with its JSON."""
        return self._post(challenge_url, {}).addCallback(lambda r: r.json())

    def deactivate_authorization(self, url: str) -> Deferred:
        """Deactivate an authorization (e.g. a pending one of an abandoned order).

        Returns:
            Deferred firing with the :class:`AcmeAuthorization` the CA returns
            (status ``deactivated``); failing with :class:`AcmeProblem` (e.g.
            when it is already invalid) or :class:`AcmeTransportError`.
        """
        d = self._post(url, {"status": "deactivated"})
        d.addCallback(lambda r: authorization_from(url, r))
        d.addCallback(self._log_deactivated)
        return d

    def _log_deactivated(self, authz: AcmeAuthorization) -> AcmeAuthorization:
        self.log.debug(
            "Deactivated authorization {authz_url} for {hostname}", authz_url=authz.url, hostname=authz.hostname
        )
        return authz

    @inlineCallbacks
    def _poll(self, fetch: Callable[[], Deferred], keep_polling: Callable[[Any], bool], url: str) -> Any:
        started = self.clock.seconds()
        deadline = started + self.poll_timeout
        interval = self.poll_interval
        current = yield fetch()
        while keep_polling(current):
            remaining = deadline - self.clock.seconds()
            retry_after = current.retry_after
            if remaining <= 0 or (retry_after is not None and retry_after > remaining):
                raise AcmeTimeout(url, current.status, self.clock.seconds() - started, retry_after)
            delay = max(retry_after, self.poll_interval) if retry_after is not None else interval
            yield deferLater(self.clock, min(delay, remaining))
            interval = min(interval * 1.5, self.max_poll_interval)
            current = yield fetch()
        return current

    @inlineCallbacks
    def poll_authorization(self, url: str, challenge_url: str | None = None) -> Any:
        """Poll an authorization until it leaves ``pending`` (honouring ``Retry-After``).

        With ``challenge_url`` (the challenge we answered), a ``pending`` authorization
        whose challenge carries an ``error`` ends the polling at once: some CAs leave a
        challenge whose validation failed ``pending`` with the problem attached and never
        retry it (RFC 8555 section 8.2 lets a CA retry, but then it clears the error or
        moves on), and waiting out ``poll_timeout`` would only hide their answer.

        Returns:
            Deferred firing with the ``valid`` :class:`AcmeAuthorization`;
            failing with :class:`AuthorizationFailed` (any other final status, or
            ``pending`` with a failed challenge, with the CA's problem or, when it gave
            none, the challenges' states), :class:`AcmeTimeout` after ``poll_timeout``,
            :class:`AcmeProblem` or :class:`AcmeTransportError`.
        """

        def waiting(a: AcmeAuthorization) -> bool:
            return a.status == "pending" and (challenge_url is None or a.challenge_problem(challenge_url) is None)

        authz = yield self._poll(lambda: self.authorization(url), waiting, url)
        if authz.status != "valid":
            raise AuthorizationFailed(authz.hostname, authz.status, authz.problem(), challenges=authz.challenge_states())
        return authz

    @inlineCallbacks
    def poll_order(self, order: AcmeOrder, until: str = "valid") -> Any:
        """Poll an order until it is ``until`` (``"ready"`` or ``"valid"``).

        ``pending`` is waited out when ``until`` is ``ready``; ``processing``
        (and ``ready``, which some CAs show briefly) when it is ``valid``.  A
        ``valid`` order also satisfies ``until="ready"``.

        Returns:
            Deferred firing with the :class:`AcmeOrder`; failing with
            :class:`AcmeProblem` (the order's error) when it is ``invalid`` or in
            an unexpected state, :class:`AcmeTimeout` after ``poll_timeout``, or
            :class:`AcmeTransportError`.
        """
        waiting = {"ready": ("pending",), "valid": ("processing",)}[until]
        current = order
        if current.status in waiting or current.status not in (until, "valid", "invalid"):
            current = yield self._poll(lambda: self.fetch_order(order), lambda o: o.status in waiting, order.url)
        if current.status == until or current.status == "valid":
            return current
        if current.error is not None:
            raise current.error
        raise AcmeProblem(
            type="urn:jobhost:error:orderInvalid",
            detail=f"order is {current.status} (wanted {until}) and the CA gave no reason",
            url=order.url,
        )

    @inlineCallbacks
    def finalize(self, order: AcmeOrder, csr_pem: bytes) -> Any:
        """Send the CSR to a ``ready`` order's finalize URL.

        Returns:
            Deferred firing with the :class:`AcmeOrder` as answered (usually
            ``processing`` or ``valid``; wait with :meth:`poll_order`); failing
            with :class:`AcmeProblem` (e.g. ``badCSR``, ``orderNotReady``).
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise InvalidCertificate(f"cannot parse the CSR ({e})") from None
        der = csr.public_bytes(serialization.Encoding.DER)
        response = yield self._post(order.finalize, {"csr": jose.b64encode(der).decode("ascii")})
        return order_from(order.url, response)

    @inlineCallbacks
    def download_certificate(self, order: AcmeOrder) -> Any:
        """Download a ``valid`` order's chain and its alternates (``Link: rel="alternate"``).

        Picks the chain by :attr:`preferred_chain` (see :func:`select_chain`).
        An alternate that cannot be fetched is logged and skipped.

        Returns:
            Deferred firing with an :class:`IssuedChain`; failing with
            :class:`AcmeProblem` or :class:`AcmeTransportError` (also when the
            default chain is not PEM certificates).
        """
        if not order.certificate:
            raise AcmeProblem(type="urn:jobhost:error:orderInvalid", detail="order has no certificate URL", url=order.url)
        response = yield self._post(order.certificate, None, accept=PEM_CHAIN_CONTENT_TYPE)
        try:
            split_pem_chain(response.body)
        except InvalidCertificate as e:
            raise AcmeTransportError(f"certificate download is not a PEM chain ({e.message})", url=order.certificate)
        chains = [response.body]
        for url in response.links.get("alternate", ()):
            try:
                alternate = yield self._post(url, None, accept=PEM_CHAIN_CONTENT_TYPE)
                split_pem_chain(alternate.body)
            except (AcmeProblem, AcmeTransportError, InvalidCertificate) as e:
                self.log.warn("Skipping alternate chain {url}: {error}", url=url, error=str(e))
                continue
            chains.append(alternate.body)
        chosen = select_chain(chains, self.preferred_chain)
        self.log.debug(
            "Downloaded certificate {cert_url} for order {order_url} ({count} chains offered)",
            cert_url=order.certificate,
            order_url=order.url,
            count=len(chains),
        )
        return IssuedChain(
            chain_pem=chains[chosen],
            alternates=tuple(c for i, c in enumerate(chains) if i != chosen),
            order_url=order.url,
            cert_url=order.certificate,
        )

    # -- revocation and renewal information ------------------------------------------------------

    @inlineCallbacks
    def revoke(self, cert_pem: bytes, reason: int = 0, cert_key: jose.JWK | None = None) -> Any:
        """Revoke the first certificate in ``cert_pem`` (RFC 8555 section 7.6).

        Args:
            cert_pem: The leaf (a chain is fine; the first certificate is revoked).
            reason: An RFC 5280 CRLReason code (0 unspecified, 1 keyCompromise, 4 superseded, ...).
            cert_key: Sign with the certificate's own key (``jwk`` header)
                instead of the account.

        Returns:
            Deferred firing with None; failing with :class:`AcmeProblem` (e.g.
            ``alreadyRevoked``, ``unauthorized``) or :class:`AcmeTransportError`.
        """
        leaf = split_pem_chain(cert_pem)[0]
        der = leaf.public_bytes(serialization.Encoding.DER)
        directory = yield self.directory()
        payload = {"certificate": jose.b64encode(der).decode("ascii"), "reason": int(reason)}
        yield self._post(directory["revokeCert"], payload, key=cert_key)
        self.log.debug("Revoked certificate {serial} (reason {reason})", serial=format(leaf.serial_number, "x"), reason=reason)

    @inlineCallbacks
    def renewal_info(self, leaf_pem: bytes) -> Any:
        """Ask the CA's ARI endpoint (RFC 9773) when to renew a certificate.

        Returns:
            Deferred firing with ``(AriWindow, retry_after_seconds)``, where the
            retry delay is the CA's ``Retry-After`` clamped to
            :data:`ARI_RETRY_AFTER_BOUNDS` (six hours when absent), or with None
            when the directory has no ``renewalInfo``; failing with
            :class:`AcmeProblem` (e.g. 404 for a certificate the CA does not know),
            :class:`AcmeTransportError` (also for a malformed window) or
            :class:`InvalidCertificate`.
        """
        cert_id = ari_cert_id(leaf_pem)
        directory = yield self.directory()
        base = directory.get("renewalInfo")
        if not isinstance(base, str):
            return None
        url = base + ("" if base.endswith("/") else "/") + cert_id
        response = yield self._transport.get(url)
        doc = response.json()
        window = doc.get("suggestedWindow")
        try:
            start, end = from_iso(window["start"]), from_iso(window["end"])
        except (TypeError, KeyError, ValueError, AttributeError):
            raise AcmeTransportError("renewalInfo has no valid suggestedWindow", url=url) from None
        if end < start:
            raise AcmeTransportError("renewalInfo window ends before it starts", url=url)
        retry_after = response.retry_after if response.retry_after is not None else ARI_DEFAULT_RETRY_AFTER
        retry_after = min(max(retry_after, ARI_RETRY_AFTER_BOUNDS[0]), ARI_RETRY_AFTER_BOUNDS[1])
        explanation = doc.get("explanationURL")
        return (
            AriWindow(
                start=start,
                end=end,
                retry_after=now(self.clock) + timedelta(seconds=retry_after),
                explanation_url=explanation if isinstance(explanation, str) else None,
            ),
            retry_after,
        )

    # -- the whole flow ------------------------------------------------------------------------

    @inlineCallbacks
    def obtain_certificate(
        self,
        hostnames: Iterable[str],
        csr_pem: bytes,
        responder: IHTTP01Responder,
        self_check: Callable[[str, str, str], Deferred] | None = None,
        replaces: str | None = None,
        profile: str | None = None,
        challenge_type: str = "http-01",
    ) -> Any:
        """Order, validate over HTTP-01 (or ``challenge_type``), finalize and download a certificate.

        For the pending authorizations: publish every key authorization
        (``responder.start_responding``), run ``self_check`` on each (a
        failure aborts before the CA is told, so no validation is spent), tell
        the CA, and poll each to ``valid``; then wait for the order to be
        ``ready``, finalize with ``csr_pem``, wait for ``valid`` and download.
        Every started challenge is stopped whatever happens; on failure,
        authorizations still ``pending`` are deactivated.  Authorizations the
        CA already holds as ``valid`` are reused.

        Args:
            hostnames: The certificate's names (normalised here).
            csr_pem: A PEM CSR covering exactly those names.
            responder: Publishes key authorizations (:class:`IHTTP01Responder`).
            self_check: ``(hostname, token, key_authorization) -> Deferred``
                (or a coroutine) that fails when our challenge URL does not
                answer, e.g. :class:`jobhost.selfcheck.HttpSelfCheck`.
            replaces: RFC 9773 certificate ID of the certificate this renews.
            profile: A profile the CA offers.
            challenge_type: ``"http-01"`` or ``"tls-alpn-01"`` (RFC 8737): the challenge
                answered; ``responder`` and ``self_check`` must be that type's.

        Returns:
            Deferred firing with an :class:`IssuedChain`; failing with
            :class:`AuthorizationFailed` (carrying the CA's problem),
            :class:`AcmeProblem`, :class:`AcmeTimeout`,
            :class:`AcmeTransportError`, :class:`AcmeUnsupported`, or whatever
            ``self_check`` failed with.
        """
        if self.account_key is None:
            raise RuntimeError("AcmeClient has no account: call register() or use_account() first")
        order = yield self.new_order(hostnames, replaces=replaces, profile=profile)
        statuses: dict[str, str] = {}
        started: list[tuple[str, str]] = []
        try:
            try:
                if order.status == "pending":
                    yield self._validate(order, responder, self_check, statuses, started, challenge_type)
                    order = yield self.poll_order(order, until="ready")
                if order.status == "ready":
                    order = yield self.finalize(order, csr_pem)
                order = yield self.poll_order(order, until="valid")
                chain = yield self.download_certificate(order)
            except BaseException as error:
                yield self._deactivate_pending(statuses)
                raise error
        finally:
            for hostname, token in started:
                try:
                    yield maybeDeferred(responder.stop_responding, hostname, token)
                except Exception:
                    self.log.failure("Could not stop responding to {token} for {hostname}", hostname=hostname, token=token)
        self.log.debug("Obtained certificate for {hostnames} (order {order_url})", hostnames=list(order.hostnames), order_url=order.url)
        return chain

    @inlineCallbacks
    def _validate(
        self,
        order: AcmeOrder,
        responder: IHTTP01Responder,
        self_check: Callable[[str, str, str], Any] | None,
        statuses: dict[str, str],
        started: list[tuple[str, str]],
        challenge_type: str = "http-01",
    ) -> Any:
        # Publish every token, then self-check them all, and only then tell the CA about
        # any: one unreachable name must not spend validations for the others.
        authzs = yield _gather_all([self.authorization(url) for url in order.authorizations])
        for authz in authzs:
            statuses[authz.url] = authz.status
        for authz in authzs:
            if authz.status not in ("pending", "valid"):
                raise AuthorizationFailed(authz.hostname, authz.status, authz.problem())
        work = []
        for authz in (a for a in authzs if a.status == "pending"):
            found = self._challenge(authz, challenge_type)
            if found is None:
                offered = tuple(str(c.get("type")) for c in authz.challenges)
                raise AcmeUnsupported("challenge", challenge_type, offered, self.directory_url)
            work.append((authz, *found))
        for authz, _, token, key_authorization in work:
            yield maybeDeferred(responder.start_responding, authz.hostname, token, key_authorization)
            started.append((authz.hostname, token))
        if self_check is not None:
            yield _gather_all([maybeDeferred(self_check, a.hostname, t, k) for a, _, t, k in work])
        yield _gather_all([self._answer_and_poll(authz, url, statuses, challenge_type) for authz, url, _, _ in work])

    def _challenge(self, authz: AcmeAuthorization, challenge_type: str) -> tuple[str, str, str] | None:
        """``(challenge URL, token, key authorization)`` of ``authz``'s ``challenge_type`` challenge, or None."""
        if challenge_type == "http-01":
            challb = authz.http01()
            if challb is None:
                return None
            return challb.uri, challb.chall.encode("token"), challb.chall.key_authorization(self.account_key)
        # certbot's acme package no longer knows tls-alpn-01: read the challenge document.
        for doc in authz.challenges:
            if doc.get("type") != challenge_type:
                continue
            url, token = doc.get("url"), doc.get("token")
            if not isinstance(url, str) or not isinstance(token, str) or not _TOKEN.fullmatch(token):
                raise AcmeTransportError(f"the {challenge_type} challenge has no valid url and token", url=authz.url)
            thumbprint = jose.b64encode(self.account_key.thumbprint()).decode("ascii")
            return url, token, f"{token}.{thumbprint}"  # RFC 8555 section 8.1
        return None

    @inlineCallbacks
    def _answer_and_poll(
        self, authz: AcmeAuthorization, challenge_url: str, statuses: dict[str, str], challenge_type: str = "http-01"
    ) -> Any:
        self.log.debug(
            "Asking the CA to validate {hostname} over {challenge} ({authz_url})",
            hostname=authz.hostname, challenge=challenge_type.upper(), authz_url=authz.url,
        )
        yield self.answer_challenge(challenge_url)
        # The CA is validating now: deactivate it on failure only if it is still pending when we give up.
        statuses[authz.url] = "processing"
        try:
            result = yield self.poll_authorization(authz.url, challenge_url)
        except AuthorizationFailed as failed:
            statuses[authz.url] = failed.status
            self.log.warn(
                "Authorization for {hostname} is {status}: {problem}",
                hostname=authz.hostname,
                status=failed.status,
                problem=failed.reason(),
            )
            raise
        except AcmeTimeout:
            statuses[authz.url] = "pending"
            raise
        statuses[authz.url] = result.status
        self.log.debug("Authorization for {hostname} is valid", hostname=authz.hostname)

    @inlineCallbacks
    def _deactivate_pending(self, statuses: dict[str, str]) -> Any:
        for url, status in statuses.items():
            if status != "pending":
                continue
            try:
                yield self.deactivate_authorization(url)
            except AcmeProblem as e:
                if e.code != "malformed":
                    self.log.warn("Could not deactivate authorization {authz_url}: {error}", authz_url=url, error=str(e))
                elif not self._deactivation_refused:
                    # Some CAs do not implement deactivation and answer malformed every time: say
                    # so once, not as a warning per failed attempt (the authorization just expires).
                    self._deactivation_refused = True
                    self.log.info(
                        "The CA at {directory_url} refuses to deactivate authorizations ({error}); an abandoned "
                        "authorization expires on its own (said once)",
                        directory_url=self.directory_url, error=str(e),
                    )
            except Exception as e:
                self.log.warn("Could not deactivate authorization {authz_url}: {error}", authz_url=url, error=str(e))


__all__ = [
    "ARI_DEFAULT_RETRY_AFTER",
    "ARI_RETRY_AFTER_BOUNDS",
    "AcmeClient",
    "IHTTP01Responder",
]
