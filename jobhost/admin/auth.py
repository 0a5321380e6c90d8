"""
The admin API's bearer token: created once (0600), compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from jobhost.errors import ConfigError


def load_or_create_token(path: str | Path) -> str:
    """Return the admin token stored at ``path``, creating it (mode 0600) if missing.

    Runs once at start-up, before the reactor runs, so plain blocking file I/O is fine.

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
            return load_or_create_token(path)
        except OSError as e:
            raise ConfigError(f"cannot create admin token file {path}: {e.strerror}", ("admin", "token_file")) from None
        return token
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read admin token file {path}: {e}", ("admin", "token_file")) from None
    if len(token) < 16:
        raise ConfigError(f"admin token in {path} is shorter than 16 characters", ("admin", "token_file"))
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
