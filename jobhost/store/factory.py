"""
Build the store named by the config's ``[store] url``.

One place maps a URL scheme to a store: ``directory:PATH`` (a
:class:`~jobhost.store.directory.DirectoryStore`, ``PATH`` relative to the
base directory) and ``memory:`` (a :class:`~jobhost.store.memory.MemoryStore`,
for experiments).  The SQL stores plug in here later: add their scheme to
:data:`_BUILDERS` (see the comment there).
"""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from twisted.python.filepath import FilePath

from jobhost.errors import ConfigError
from jobhost.store.interfaces import IStore

_PATH = ("store", "url")
_SUPPORTED = "directory:PATH, memory:"


def redacted_url(url: str) -> str:
    """``url`` with any password replaced, fit for an error message or a log line."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url.split(":", 1)[0] + ":..."


def _base_path(base_dir: FilePath | str) -> str:
    if isinstance(base_dir, FilePath):
        return os.fsdecode(base_dir.path)
    return os.fspath(base_dir)


def _directory(url: str, rest: str, reactor, base_dir: FilePath | str) -> IStore:
    from jobhost.store.directory import DirectoryStore

    if not rest.strip():
        raise ConfigError(f"store URL {url!r} names no directory; expected directory:PATH", path=_PATH)
    path = os.path.join(_base_path(base_dir), os.path.expanduser(rest))
    return DirectoryStore.create(reactor, FilePath(os.path.abspath(path)))


def _memory(url: str, rest: str, reactor, base_dir: FilePath | str) -> IStore:
    from jobhost.store.memory import MemoryStore

    if rest:
        raise ConfigError(f"store URL {url!r}: memory: takes nothing after the colon", path=_PATH)
    return MemoryStore()


#: scheme -> builder(url, text after "scheme:", reactor, base_dir).
#: The SQL stores plug in here, e.g. ``"sqlite": _sqlite`` and
#: ``"postgresql": _postgresql`` (also ``postgres``), each importing its module
#: lazily so a missing driver only matters when that scheme is configured.
_BUILDERS: dict[str, Callable[[str, str, object, FilePath | str], IStore]] = {
    "directory": _directory,
    "memory": _memory,
}


def store_from_url(url: str, reactor, base_dir: FilePath | str) -> IStore:
    """Build the store a ``[store] url`` names.

    Args:
        url: ``directory:PATH`` or ``memory:``.
        reactor: The reactor the store's thread pool reports back to (and is
            started and stopped with).
        base_dir: Where relative paths start (twistd's run directory).

    Returns:
        A new :class:`IStore`.

    Raises:
        ConfigError: at key path ``("store", "url")`` for an unsupported or
            malformed URL.
    """
    if not isinstance(url, str) or ":" not in url:
        raise ConfigError(f"unsupported store URL {url!r}; supported: {_SUPPORTED}", path=_PATH)
    scheme, rest = url.split(":", 1)
    builder = _BUILDERS.get(scheme.lower())
    if builder is None:
        raise ConfigError(
            f"unsupported store URL {redacted_url(url)!r}; supported: {_SUPPORTED}", path=_PATH
        )
    return builder(url, rest, reactor, base_dir)


__all__ = ["redacted_url", "store_from_url"]
