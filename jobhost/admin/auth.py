"""
The admin API's bearer token: created once (0600), compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from jobhost.errors import ConfigError


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
    if len(token) < 16:
        raise ConfigError(f"{what} in {path} is shorter than 16 characters", key)
    return token


def token_matches(expected: str, authorization_header: bytes | None) -> bool:
    """True when an ``Authorization: Bearer <token>`` header carries ``expected`` (constant time)."""
    if not authorization_header:
        return False
    scheme, _, presented = authorization_header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(presented.strip(), expected.encode("ascii"))


__all__ = ["load_or_create_token", "token_matches"]
