"""
Well-known ACME directory URLs and the paths the ACME protocol fixes.

The config's ``[acme] directory`` may name a CA (``"letsencrypt"``,
``"letsencrypt-staging"``) or give any directory URL (Pebble in tests);
:func:`resolve_directory_url` turns either into the URL to fetch.  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from jobhost.errors import ConfigError

#: Let's Encrypt production (RFC 8555 directory).
LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"

#: Let's Encrypt staging: untrusted certificates, generous rate limits.
LETSENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"

#: Directory names the config may use instead of a URL.
DIRECTORIES = {
    "letsencrypt": LETSENCRYPT_DIRECTORY,
    "letsencrypt-staging": LETSENCRYPT_STAGING_DIRECTORY,
}

#: Where a CA fetches an HTTP-01 key authorization (RFC 8555 section 8.3): prefix + token.
HTTP01_PATH_PREFIX = "/.well-known/acme-challenge/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_directory_url(name_or_url: str) -> str:
    """Return the directory URL for a well-known CA name, or check and return a URL.

    Args:
        name_or_url: A key of :data:`DIRECTORIES` or an ``https://`` URL.  Plain
            ``http://`` is accepted only for loopback hosts (test servers).

    Returns:
        The directory URL.

    Raises:
        ConfigError: naming ``[acme] directory`` when the value is neither a
            known name nor a usable URL.
    """
    value = name_or_url.strip()
    if value in DIRECTORIES:
        return DIRECTORIES[value]
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return value
    known = ", ".join(sorted(DIRECTORIES))
    raise ConfigError(
        f"expected one of {known} or an https:// directory URL, got {name_or_url!r}",
        path=("acme", "directory"),
    )


def http01_path(token: str) -> str:
    """The request path at which the CA fetches the key authorization for ``token``."""
    return HTTP01_PATH_PREFIX + token


__all__ = [
    "DIRECTORIES",
    "HTTP01_PATH_PREFIX",
    "LETSENCRYPT_DIRECTORY",
    "LETSENCRYPT_STAGING_DIRECTORY",
    "http01_path",
    "resolve_directory_url",
]
