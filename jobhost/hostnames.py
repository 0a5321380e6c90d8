"""
Turn user input into a normalised hostname, or say why not.

A *hostname* in jobhost is always the output of :func:`normalise_hostname`:
an IDNA 2008 A-label form (UTS 46 mapping applied), lower case, with no
trailing dot, made of two or more LDH labels of 1-63 octets each and at most
253 octets in all.  Nothing else may reach a file path, a store query or a CA.

It also parses the one other kind of name jobhost takes from its operator: a
DNS resolver's address (:func:`parse_resolver`), used alike by the config, the
preflight checker and the self-check, so that a value one accepts the others do.
Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from jobhost.errors import InvalidHostname

MAX_HOSTNAME_OCTETS = 253
MAX_LABEL_OCTETS = 63

_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_RESERVED_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _refuse(value: str, reason: str) -> InvalidHostname:
    return InvalidHostname(value=value[:300], reason=reason)


def _looks_like_ip(text: str) -> bool:
    candidate = text.strip("[]")
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        return True
    # inet_aton also accepts forms like "127.1" or "0x7f.1"; a last label made only of
    # digits (or a hex number) is never a valid top-level domain, so refuse it too.
    last = text.rsplit(".", 1)[-1]
    return bool(re.fullmatch(r"[0-9]+|0x[0-9a-f]*", last))


def normalise_hostname(value: object) -> str:
    """Return the normalised A-label form of ``value``.

    Args:
        value: A hostname as a user typed it: unicode or punycode, any case,
            with or without a trailing dot.

    Returns:
        The normalised hostname, e.g. ``"xn--bcher-kva.example"`` for
        ``"Bücher.Example."``.

    Raises:
        InvalidHostname: naming the reason (not text, empty, an IP address, a
            wildcard, ``localhost``, an empty label, a label over 63 octets,
            over 253 octets in all, a single label, or a character outside
            letters, digits and hyphens).
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise _refuse(repr(value), "bytes that are not ASCII") from None
    if not isinstance(value, str):
        raise _refuse(repr(value), "a hostname must be text")
    original = value
    text = value.strip()
    if not text:
        raise _refuse(original, "empty")
    if len(text) > 1024:
        raise _refuse(original, f"longer than {MAX_HOSTNAME_OCTETS} octets")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if "*" in text:
        raise _refuse(original, "wildcards are not allowed; register each hostname")
    if any(c in text for c in "/\\:@?#%[] \t\r\n\x00"):
        if _looks_like_ip(text):
            raise _refuse(original, "IP addresses are not hostnames")
        raise _refuse(original, "contains a character that is not allowed in a hostname")
    if text.startswith(".") or ".." in text or text.endswith("."):
        raise _refuse(original, "empty label (leading, trailing or doubled dot)")
    if _looks_like_ip(text.lower()):
        raise _refuse(original, "IP addresses are not hostnames")
    if text.isascii():
        lowered = text.lower()
        labels = lowered.split(".")
        if any(label.startswith("xn--") for label in labels):
            # Punycode input: decoding then re-encoding checks it is a valid A-label.
            try:
                idna.decode(lowered)
            except idna.IDNAError as e:
                raise _refuse(original, f"not a valid IDNA name ({e})") from None
        ascii_name = lowered
    else:
        try:
            ascii_name = idna.encode(text, uts46=True, std3_rules=True).decode("ascii")
        except UnicodeError as e:  # idna.IDNAError is a UnicodeError
            raise _refuse(original, f"not a valid IDNA name ({e})") from None
        # UTS 46 maps "\u3002", "\uff0e" and "\uff61" to "." and drops ignorable characters, so a
        # name ending in one of those dots (or in "." and an ignorable) comes back with a trailing
        # dot: drop it, as for an ASCII one.  idna refuses every other empty label.
        ascii_name = ascii_name.removesuffix(".")
    labels = ascii_name.split(".")
    for label in labels:
        # no label is empty here: checked above for ASCII dots, by idna for the others
        if len(label) > MAX_LABEL_OCTETS:
            raise _refuse(original, f"label {label[:20]!r}... is longer than {MAX_LABEL_OCTETS} octets")
        if not _LDH_LABEL.match(label):
            raise _refuse(
                original,
                f"label {label!r} must be letters, digits and inner hyphens",
            )
    if len(ascii_name) > MAX_HOSTNAME_OCTETS:
        raise _refuse(original, f"longer than {MAX_HOSTNAME_OCTETS} octets")
    if ascii_name in _RESERVED_NAMES or labels[-1] == "localhost":
        raise _refuse(original, "localhost is not a public hostname")
    if len(labels) < 2:
        raise _refuse(original, "a single label is not a public hostname")
    if _looks_like_ip(ascii_name):
        raise _refuse(original, "IP addresses are not hostnames")
    return ascii_name


def is_normalised_hostname(value: object) -> bool:
    """True when ``value`` is text that :func:`normalise_hostname` leaves unchanged."""
    if not isinstance(value, str):
        return False
    try:
        return normalise_hostname(value) == value
    except InvalidHostname:
        return False


def to_unicode(hostname: str) -> str:
    """Return the U-label (display) form of a normalised hostname."""
    try:
        return idna.decode(hostname)
    except idna.IDNAError:
        return hostname


#: The DNS port a resolver address without one means.
DNS_PORT = 53


def parse_resolver(text: str) -> tuple[str, int]:
    """Parse a DNS resolver address into ``(ip, port)``.

    Accepted forms (surrounding white space is ignored):

    - ``"192.0.2.53:5353"``: IPv4 address and port;
    - ``"[2001:db8::53]:5353"``: IPv6 address in brackets and port;
    - ``"192.0.2.53"``, ``"2001:db8::53"``, ``"[2001:db8::53]"``: an address alone, port 53.

    A bare IPv6 address is always read as an address, never as address + port
    (``"::1:53"`` is the address ``::1:53``): write ``"[::1]:53"`` for a port.
    Resolvers are addresses, not names: a hostname would need a resolver to find it.

    Args:
        text: The resolver as the operator wrote it.

    Returns:
        The address in its canonical form (``ipaddress``'s ``str``) and the port.

    Raises:
        ValueError: with a message saying what is expected and what was given.
    """
    problem = f'expected "IP:port", "[IPv6]:port" or an IP address, got "{text}"'
    if not isinstance(text, str):
        raise ValueError(problem)
    value = text.strip()
    port_text = str(DNS_PORT)
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")) or rest == ":":
            raise ValueError(problem)
        port_text = rest[1:] or port_text
        version = 6
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        version = 4
    else:
        host, version = value, None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(problem) from None
    if version is not None and address.version != version:
        raise ValueError(problem)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"{problem}: the port must be 1-65535")
    return str(address), int(port_text)


__all__ = [
    "DNS_PORT",
    "MAX_HOSTNAME_OCTETS",
    "MAX_LABEL_OCTETS",
    "is_normalised_hostname",
    "normalise_hostname",
    "parse_resolver",
    "to_unicode",
]
