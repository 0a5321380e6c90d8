"""
The ACME boundary: what jobhost asks of an ACME client, and what the client asks of us.

:class:`IAcmeClient` is what the issuing service (and whoever else orders,
revokes or asks for renewal information) relies on; :class:`IHTTP01Responder`
is what the client relies on to publish HTTP-01 answers.  The real client is
:class:`jobhost.acme.client.AcmeClient`; the fake is
:class:`jobhost.testing.FakeAcmeClient`.  Both run one contract suite
(``tests/acme_client_contract.py``: the fake in
``tests/test_acme_client_contract_fake.py``, the real client against Pebble in
``tests/integration/test_acme_client_contract_pebble.py``),
so a caller tested against the fake sees what the real client does.

Every method returns a Deferred.  Failures are jobhost's own exception types
(:mod:`jobhost.errors`): :class:`~jobhost.errors.AcmeProblem` when the CA
answered with a problem document (its ``type`` is an ACME error URN, e.g.
``urn:ietf:params:acme:error:rateLimited``), and
:class:`~jobhost.errors.AcmeTransportError` when the CA could not be reached or
did not speak ACME.  Misuse on our side (no account yet) is a
:class:`RuntimeError`, never retried.  This module imports nothing but
:mod:`zope.interface`.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IHTTP01Responder(Interface):
    """Publishes HTTP-01 key authorizations where the CA will fetch them.

    jobhost's implementation writes them to the store, so that any process or
    node serving ``/.well-known/acme-challenge/`` can answer.  Methods may
    return a Deferred, a coroutine or a plain value.
    """

    def start_responding(hostname: str, token: str, key_authorization: str) -> object:
        """Serve ``key_authorization`` at ``http://hostname/.well-known/acme-challenge/token``.

        Returns:
            Deferred firing (with anything) once the answer is being served.
        """

    def stop_responding(hostname: str, token: str) -> object:
        """Stop serving ``token`` for ``hostname``; may be a no-op if it is already gone.

        Returns:
            Deferred firing when done.
        """


class IAcmeClient(Interface):
    """An RFC 8555 client for one CA directory and, once :meth:`register` fired, one account.

    The client keeps the account it registered last and signs every later
    request with it; :meth:`obtain_certificate` and :meth:`revoke` (without
    ``cert_key``) fail with :class:`RuntimeError` before any :meth:`register`.
    """

    directory_url = Attribute("The CA's directory URL (str): the CA this client talks to.")

    def register(account_key, contact=(), terms_agreed=True, eab=None):
        """Find the account for ``account_key`` at the CA, or create it; use it from now on.

        Idempotent per key: registering the same key again (on this or another
        client for the same directory) fires with the same account URL and
        creates nothing.  Different keys are different accounts.

        Args:
            account_key: The account's private key as a ``josepy`` JWK.
            contact: ``mailto:`` URLs.
            terms_agreed: Agree to the CA's terms of service.
            eab: ``(kid, hmac_key_base64url)`` for external account binding, or None.

        Returns:
            Deferred firing with the account URL (str); failing with
            :class:`AcmeProblem` (e.g. ``externalAccountRequired``) or
            :class:`AcmeTransportError`.
        """

    def obtain_certificate(
        hostnames, csr_pem, responder, self_check=None, replaces=None, profile=None, challenge_type="http-01"
    ):
        """Order, validate over HTTP-01, finalize and download a certificate.

        ``hostnames`` are normalised first (a name that is not a hostname fails
        with :class:`jobhost.errors.InvalidHostname` and nothing is sent).  For
        each hostname whose authorization is pending, the key authorization
        (``token + "." + base64url(account key thumbprint)``, RFC 8555 section
        8.1) is published with ``responder.start_responding`` and then checked
        with ``self_check`` (when given) *before* the CA is told, so a failed
        self-check spends no validation.  Every answer started is stopped with
        ``responder.stop_responding`` before the Deferred fires, whatever the
        outcome.  An authorization the CA already holds as valid is reused
        (nothing is published for it).

        Args:
            hostnames: The certificate's names (a sequence of str).
            csr_pem: A PEM CSR for exactly those names, signed by the key the
                certificate will certify.
            responder: An :class:`IHTTP01Responder`.
            self_check: ``(hostname, token, key_authorization) -> Deferred`` (or a
                coroutine) failing when our challenge URL does not answer, or None.
            replaces: RFC 9773 certificate ID of the certificate this order renews
                (sent only when the CA offers renewal information).
            profile: A certificate profile the CA offers, or None.
            challenge_type: The challenge to answer: ``"http-01"`` or ``"tls-alpn-01"``
                (the responder and self-check are that type's; a CA that does not offer
                it fails the order with :class:`jobhost.errors.AcmeUnsupported`).

        Returns:
            Deferred firing with an :class:`jobhost.acme.resources.IssuedChain`
            whose ``chain_pem`` is the leaf (certifying the CSR's key, naming the
            hostnames) followed by its intermediates; failing with
            :class:`AuthorizationFailed` (validation failed; carries the CA's
            problem), :class:`AcmeProblem` (the CA refused: the order, the CSR,
            a rate limit with ``retry_after``), :class:`AcmeTimeout`,
            :class:`AcmeTransportError`, :class:`AcmeUnsupported` (no HTTP-01,
            an unknown profile), :class:`InvalidHostname`, :class:`RuntimeError`
            (no account), or whatever ``self_check`` failed with.  Cancelling the
            Deferred abandons the order (pending authorizations are deactivated).
        """

    def renewal_info(leaf_pem):
        """Ask the CA when to renew a certificate (ACME Renewal Information, RFC 9773).

        Args:
            leaf_pem: The certificate (a chain is fine: the first one is asked about).

        Returns:
            Deferred firing with None when the CA offers no renewal information,
            else with a 2-tuple ``(window, retry_after_seconds)``: ``window`` is a
            :class:`jobhost.certs.AriWindow` (aware ``start <= end``,
            ``retry_after`` = the client clock's now + ``retry_after_seconds``,
            ``explanation_url`` or None) and ``retry_after_seconds`` a float, the
            CA's ``Retry-After`` clamped to
            :data:`jobhost.acme.client.ARI_RETRY_AFTER_BOUNDS` (six hours when the
            CA gave none).  Never anything else: callers may unpack it.  Fails
            with :class:`InvalidCertificate` (no certificate, or one without an
            authority key identifier), :class:`AcmeProblem` (e.g. 404 for a
            certificate the CA does not know) or :class:`AcmeTransportError`
            (also for a malformed window).
        """

    def revoke(cert_pem, reason=0, cert_key=None):
        """Revoke the first certificate in ``cert_pem`` (RFC 8555 section 7.6).

        Args:
            cert_pem: The leaf (a chain is fine).
            reason: An RFC 5280 CRLReason code (0 unspecified, 1 keyCompromise,
                4 superseded, ...).
            cert_key: Sign with the certificate's own key (a JWK) instead of the
                account's.

        Returns:
            Deferred firing with None; failing with :class:`AcmeProblem`
            (``alreadyRevoked`` for a second revocation, ``unauthorized`` when
            the account did not order it, ``badRevocationReason``),
            :class:`AcmeTransportError`, :class:`InvalidCertificate`, or
            :class:`RuntimeError` (no account and no ``cert_key``).
        """


__all__ = ["IAcmeClient", "IHTTP01Responder"]
