"""
The self-signed fallback certificate: made once, kept on disk, reused on every start.

The HTTPS listener serves it to clients that send no SNI or a name jobhost
does not serve (unless the listener rejects those).  It is stored as one PEM
file holding the private key and the certificate, mode 0600.

This module does blocking file I/O on purpose: :func:`load_or_create_fallback`
runs once while the service tree is built, before the reactor serves anything.
"""

from __future__ import annotations

import os
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from jobhost.certs import load_private_key, self_signed_certificate, split_pem_chain
from jobhost.errors import InvalidCertificate

#: The name in the fallback certificate (``.invalid`` is reserved: RFC 6761 section 6.4).
FALLBACK_COMMON_NAME = "fallback.jobhost.invalid"

_log = Logger()


def _spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: FilePath, now: datetime) -> tuple[bytes, bytes] | None:
    """Parse an existing fallback file; None when its certificate has expired."""
    content = path.getContent()
    try:
        key = load_private_key(content)
        certificate = split_pem_chain(content)[0]
    except InvalidCertificate as e:
        raise InvalidCertificate(f"{path.path}: {e.message}") from None
    if _spki(key.public_key()) != _spki(certificate.public_key()):
        raise InvalidCertificate(f"{path.path}: the key does not match the certificate")
    if certificate.not_valid_after_utc <= now:
        return None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def _write_private(path: FilePath, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically, never readable by anyone but the owner.

    ``FilePath.setContent`` creates its temporary file with the umask's mode,
    which would expose the key for a moment; so the temporary file is created
    0600 here, synced, then renamed over the target.
    """
    parent = path.parent()
    parent.makedirs(ignoreExistingDirectory=True)
    temporary = path.siblingExtension(f".{os.getpid()}.new")
    fd = os.open(temporary.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary.path, path.path)
    directory = os.open(parent.path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_or_create_fallback(
    path: FilePath, now: datetime, common_name: str = FALLBACK_COMMON_NAME
) -> tuple[bytes, bytes]:
    """Return the fallback ``(key_pem, cert_pem)``, making and saving it on first use.

    Blocking file I/O: call it once at startup, not from the reactor's hot path.
    A file whose certificate has expired is replaced; a file with loose
    permissions is tightened to 0600.

    Args:
        path: The PEM file (key then certificate); its directory is created if missing.
        now: The current time (aware), used to date a new certificate and check expiry.
        common_name: The name a new certificate carries.

    Raises:
        InvalidCertificate: when the file exists but is not a matching key and certificate
            (it is never overwritten: an operator may have put their own default there).
    """
    if path.exists():
        existing = _read(path, now)
        if existing is not None:
            if path.getPermissions().shorthand() != "rw-------":
                os.chmod(path.path, 0o600)
            return existing
        _log.info("The fallback certificate in {path} has expired; making a new one", path=path.path)
    key_pem, cert_pem = self_signed_certificate(common_name, now)
    _write_private(path, key_pem + cert_pem)
    _log.info("Made a self-signed fallback certificate in {path}", path=path.path)
    return key_pem, cert_pem


__all__ = ["FALLBACK_COMMON_NAME", "load_or_create_fallback"]
