"""
ACME resources as jobhost sees them, parsed from the CA's answers, and pure helpers on chains.

This module owns the plain record types the order flow of
:mod:`jobhost.acme.client` returns (:class:`AcmeOrder`,
:class:`AcmeAuthorization`, :class:`IssuedChain`), building them from a
:class:`jobhost.acme.transport.AcmeResponse`, and the certificate helpers
that need no CA: the RFC 9773 certificate identifier (:func:`ari_cert_id`)
and preferred-chain selection (:func:`select_chain`).  It does no I/O.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs
import josepy as jose
from acme import messages
from cryptography import x509
from cryptography.x509.oid import NameOID

from jobhost.acme.transport import AcmeResponse, problem_from_document
from jobhost.certs import split_pem_chain
from jobhost.errors import AcmeProblem, AcmeTransportError, InvalidCertificate
from jobhost.hostnames import normalise_hostname


@attrs.frozen
class AcmeOrder:
    """An order as the CA last described it.

    Attributes:
        url: The order URL.
        status: ``pending``, ``ready``, ``processing``, ``valid`` or ``invalid``.
        hostnames: The order's DNS identifiers.
        authorizations: Authorization URLs.
        finalize: The finalize URL.
        certificate: The certificate URL once ``valid``.
        error: The CA's problem when ``invalid``.
        retry_after: Seconds from the last response's ``Retry-After``.
        body: The parsed :class:`acme.messages.Order`.
    """

    url: str
    status: str
    hostnames: tuple[str, ...]
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str | None = None
    error: AcmeProblem | None = None
    retry_after: float | None = None
    body: messages.Order | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class AcmeAuthorization:
    """An authorization as the CA last described it.

    Attributes:
        url: The authorization URL.
        status: ``pending``, ``valid``, ``invalid``, ``deactivated``, ``expired`` or ``revoked``.
        hostname: The DNS identifier it authorizes.
        retry_after: Seconds from the last response's ``Retry-After``.
        challenges: The raw challenge documents.
        body: The parsed :class:`acme.messages.Authorization`.
    """

    url: str
    status: str
    hostname: str
    retry_after: float | None = None
    challenges: tuple[Mapping[str, Any], ...] = attrs.field(default=(), repr=False)
    body: messages.Authorization | None = attrs.field(default=None, repr=False, eq=False)

    def http01(self) -> messages.ChallengeBody | None:
        """The HTTP-01 challenge, or None when the CA offers none."""
        for challb in self.body.challenges if self.body else ():
            if challb.chall.typ == "http-01":
                return challb
        return None

    def problem(self) -> AcmeProblem | None:
        """The first challenge's problem document (why validation failed), or None."""
        for doc in self.challenges:
            error = doc.get("error")
            if isinstance(error, Mapping):
                return problem_from_document(error, url=doc.get("url"))
        return None

    def challenge_problem(self, challenge_url: str) -> AcmeProblem | None:
        """The problem document of the challenge at ``challenge_url``, or None when it has none."""
        for doc in self.challenges:
            error = doc.get("error")
            if doc.get("url") == challenge_url and isinstance(error, Mapping):
                return problem_from_document(error, url=challenge_url)
        return None

    def challenge_states(self) -> tuple[str, ...]:
        """What is known without a problem document: each challenge as ``"<type> <status>"``."""
        return tuple(f"{doc.get('type', '?')} {doc.get('status', '?')}" for doc in self.challenges)


@attrs.frozen
class IssuedChain:
    """A downloaded certificate chain.

    Attributes:
        chain_pem: The chosen chain, leaf first (the ``preferred_chain`` one, else the default).
        alternates: The other chains the CA offered, in the CA's order.
        order_url: The order it was issued for.
        cert_url: The order's certificate URL.
    """

    chain_pem: bytes
    alternates: tuple[bytes, ...]
    order_url: str
    cert_url: str


def ari_cert_id(leaf_pem: bytes) -> str:
    """The RFC 9773 certificate identifier of the first certificate in ``leaf_pem``.

    ``base64url(AKI keyIdentifier) "." base64url(serial as DER INTEGER content)``,
    unpadded.

    Raises:
        InvalidCertificate: when the PEM does not parse or the leaf has no
            authority key identifier.
    """
    leaf = split_pem_chain(leaf_pem)[0]
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise InvalidCertificate("the certificate has no authority key identifier") from None
    if not aki.key_identifier:
        raise InvalidCertificate("the authority key identifier has no keyIdentifier")
    serial = leaf.serial_number
    # DER INTEGER content: big-endian two's complement, so a leading 0x00 when the top bit is set.
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return jose.b64encode(aki.key_identifier).decode("ascii") + "." + jose.b64encode(serial_bytes).decode("ascii")


def _issuer_names(chain_pem: bytes) -> set[str]:
    names = set()
    for cert in split_pem_chain(chain_pem):
        for attribute in cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME):
            names.add(str(attribute.value))
    return names


def select_chain(chains: list[bytes], preferred_issuer: str | None) -> int:
    """Index of the first chain any of whose certificates was issued by ``preferred_issuer``.

    Matches the issuer common name (as certbot's ``--preferred-chain`` does);
    0 (the CA's default) when nothing matches or no preference is given.
    """
    if preferred_issuer:
        for index, chain in enumerate(chains):
            if preferred_issuer in _issuer_names(chain):
                return index
    return 0


def normalise_all(hostnames: Iterable[str]) -> tuple[str, ...]:
    """Normalise an order's hostnames, dropping duplicates and keeping their order.

    Raises:
        InvalidHostname: for an invalid hostname (see
            :func:`jobhost.hostnames.normalise_hostname`).
        ValueError: when no hostname is given.
    """
    names: list[str] = []
    for hostname in hostnames:
        name = normalise_hostname(hostname)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("an order needs at least one hostname")
    return tuple(names)


def _parse(cls: Any, response: AcmeResponse, what: str) -> tuple[dict[str, Any], Any]:
    doc = response.json()
    try:
        return doc, cls.from_json(dict(doc))
    except (jose.DeserializationError, TypeError, ValueError) as e:
        raise AcmeTransportError(f"malformed {what} from the CA ({e})", url=response.url) from None


def order_from(url: str, response: AcmeResponse) -> AcmeOrder:
    """The :class:`AcmeOrder` at ``url`` as described by the CA's ``response``.

    Raises:
        AcmeTransportError: when the body is not a well-formed order.
    """
    doc, body = _parse(messages.Order, response, "order")
    error = doc.get("error")
    return AcmeOrder(
        url=url,
        status=str(doc.get("status", "")),
        hostnames=tuple(i.value for i in body.identifiers or ()),
        authorizations=tuple(body.authorizations or ()),
        finalize=str(doc.get("finalize", "")),
        certificate=doc.get("certificate"),
        error=problem_from_document(error, url=url) if isinstance(error, Mapping) else None,
        retry_after=response.retry_after,
        body=body,
    )


def authorization_from(url: str, response: AcmeResponse) -> AcmeAuthorization:
    """The :class:`AcmeAuthorization` at ``url`` as described by the CA's ``response``.

    Raises:
        AcmeTransportError: when the body is not a well-formed authorization.
    """
    doc, body = _parse(messages.Authorization, response, "authorization")
    return AcmeAuthorization(
        url=url,
        status=str(doc.get("status", "")),
        hostname=body.identifier.value if body.identifier else "",
        retry_after=response.retry_after,
        challenges=tuple(c for c in doc.get("challenges", ()) if isinstance(c, Mapping)),
        body=body,
    )


__all__ = [
    "AcmeAuthorization",
    "AcmeOrder",
    "IssuedChain",
    "ari_cert_id",
    "authorization_from",
    "normalise_all",
    "order_from",
    "select_chain",
]
