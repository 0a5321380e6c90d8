"""
The admin API's bearer token: created once (0600), compared in constant time.

A token file others may read (an operator's ``cp`` under a wide umask, a restored
backup) is tightened to 0600 with a warning rather than refused: the fix is certain
and needs no operator at 3 a.m.; the warning says the token may have been read and
how to replace it.  A file jobhost cannot tighten (owned by someone else) is refused.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from twisted.logger import Logger

from jobhost.errors import ConfigError

log = Logger()


def load_or_create_token(
    path: str | Path, key: tuple[str, ...] = ("admin", "token_file"), what: str = "admin token"
) -> str:
    """Return the secret token stored at ``path``, creating it (mode 0600) if missing.

    Runs once at start-up, before the reactor runs, so plain blocking file I/O is fine.
    Used for the admin token and the webhook secret.

    Args:
        path: The file.
        key: The config key naming the file, for errors.
        what: What the token is, for errors (``"admin token"``, ``"webhook secret"``).

    Raises:
        ConfigError: if the file exists but is empty or unreadable, or cannot be created.
    """
    path = Path(path)
    try:
        token = path.read_text("ascii").strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
        except FileExistsError:
            return load_or_create_token(path, key, what)
        except OSError as e:
            raise ConfigError(f"cannot create {what} file {path}: {e.strerror}", key) from None
        return token
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} file {path}: {e}", key) from None
    _keep_private(path, key, what)
    if len(token) < 16:
        raise ConfigError(f"{what} in {path} is shorter than 16 characters", key)
    return token


def _keep_private(path: Path, key: tuple[str, ...], what: str) -> None:
    """Make a secret file others may read (group or world bits set) 0600, or refuse it.

    Raises:
        ConfigError: when the mode cannot be changed (the file is not ours).
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        raise ConfigError(f"cannot read {what} file {path}: {e.strerror}", key) from None
    if not mode & 0o077:
        return
    try:
        path.chmod(0o600)
    except OSError as e:
        raise ConfigError(
            f"{what} file {path} is readable by others (mode {mode:04o}) and cannot be made 0600"
            f" ({e.strerror}): chmod 600 it", key,
        ) from None
    log.warn(
        "The {what} file {path} was readable by others (mode {mode}); made it 0600. Anyone who read"
        " it has the {what}: delete the file and restart to make a new one",
        what=what, path=str(path), mode=f"{mode:04o}",
    )


def single_authorization(headers) -> bytes | None:
    """The request's one ``Authorization`` header, None when absent.

    Args:
        headers: The request's ``twisted.web.http_headers.Headers``.

    Raises:
        ValueError: when the header is sent more than once (naming it): which one a proxy
            or the server would read is not defined, so neither is trusted.
    """
    values = headers.getRawHeaders(b"authorization") or []
    if len(values) > 1:
        raise ValueError(f"the Authorization header was sent {len(values)} times; send it once")
    return values[0] if values else None


def token_matches(expected: str, authorization_header: bytes | None) -> bool:
    """True when an ``Authorization: Bearer <token>`` header carries ``expected`` (constant time)."""
    if not authorization_header:
        return False
    scheme, _, presented = authorization_header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(presented.strip(), expected.encode("ascii"))


__all__ = ["load_or_create_token", "single_authorization", "token_matches"]
