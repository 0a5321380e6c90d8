"""
Build the store named by the config's ``[store] url``.

One place maps a URL scheme to a store: ``directory:PATH`` (a
:class:`~jobhost.store.directory.DirectoryStore`, ``PATH`` relative to the
base directory) and ``memory:`` (a :class:`~jobhost.store.memory.MemoryStore`,
for experiments).  The SQL stores plug in here later: add their scheme to
:data:`_SCHEMES` (see the comment there).  The config checks ``[store] url``
with :func:`check_store_url`, so it refuses exactly the URLs no store here
implements, and names the ones that exist.
"""

from __future__ import annotations

import os
import re
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import attrs
from twisted.python.filepath import FilePath

from jobhost.errors import ConfigError
from jobhost.store.interfaces import IStore

_PATH = ("store", "url")
#: libpq's password parameter in a URL's query string.
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """``url`` with any password replaced, fit for an error message or a log line.

    A password is ``user:PASSWORD@host`` or libpq's ``?password=PASSWORD``; a URL that
    does not parse, or has ``@`` but no ``//`` (no telling where a password would end),
    keeps only its scheme.
    """
    try:
        parts = urlsplit(url)
        if not parts.netloc and "@" in url:
            raise ValueError("user information without //")
    except ValueError:
        return url.partition(":")[0] + ":..."
    if parts.password is not None:
        url = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return _QUERY_PASSWORD.sub(r"\1***", url)


def _base_path(base_dir: FilePath | str) -> str:
    if isinstance(base_dir, FilePath):
        return os.fsdecode(base_dir.path)
    return os.fspath(base_dir)


def _check_directory(url: str, rest: str) -> None:
    if not rest.strip():
        raise ConfigError(f"store URL {url!r} names no directory; expected directory:PATH", path=_PATH)


def _directory(url: str, rest: str, reactor, base_dir: FilePath | str) -> IStore:
    from jobhost.store.directory import DirectoryStore

    path = os.path.join(_base_path(base_dir), os.path.expanduser(rest))
    return DirectoryStore.create(reactor, FilePath(os.path.abspath(path)))


def _check_memory(url: str, rest: str) -> None:
    if rest:
        raise ConfigError(f"store URL {url!r}: memory: takes nothing after the colon", path=_PATH)


def _memory(url: str, rest: str, reactor, base_dir: FilePath | str) -> IStore:
    from jobhost.store.memory import MemoryStore

    return MemoryStore()


@attrs.frozen
class _Scheme:
    """One kind of store URL.

    Attributes:
        form: How the URL looks, for messages (``directory:PATH``).
        check: ``(url, text after "scheme:")``; raises ConfigError for a malformed URL.
            Must not touch the file system or the network: the config calls it.
        build: ``(url, text after "scheme:", reactor, base_dir) -> IStore``.
    """

    form: str
    check: Callable[[str, str], None]
    build: Callable[[str, str, object, FilePath | str], IStore]


def _check_sqlite(url: str, rest: str) -> None:
    if not rest.strip() or rest.startswith("//"):
        raise ConfigError(f"store URL {url!r} names no file; expected sqlite:PATH (e.g. sqlite:var/jobhost.db)",
                          path=_PATH)


def _sqlite(url: str, rest: str, reactor, base_dir: FilePath | str) -> IStore:
    from jobhost.store.sql import Engine, SqlStore

    path = os.path.abspath(os.path.join(_base_path(base_dir), os.path.expanduser(rest)))
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # The database holds private keys: create it 0600 (SQLite gives its -wal and -shm
        # files the database file's mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise ConfigError(f"cannot create the SQLite store {path}: {e.strerror}", path=_PATH) from None
    return SqlStore.create(Engine.sqlite(path), reactor)


def _check_postgresql(url: str, rest: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as e:
        raise ConfigError(f"store URL {redacted_url(url)!r} is not a PostgreSQL URL: {e}", path=_PATH) from None
    if not rest.startswith("//"):
        raise ConfigError(
            f"store URL {redacted_url(url)!r}: expected postgresql://USER@HOST:PORT/DATABASE", path=_PATH
        )


def read_password_file(path: str) -> str:
    """The password in ``path`` (its first line), refusing a file others may read.

    Raises:
        ConfigError: at ``[store] password_file``, naming the file and what is wrong.
    """
    where = ("store", "password_file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", path=where) from None
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it", path=where)
        with os.fdopen(os.dup(fd), "r", encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    finally:
        os.close(fd)
    if not password:
        raise ConfigError(f"{path} is empty", path=where)
    return password


def _postgresql(url: str, rest: str, reactor, base_dir: FilePath | str, password_file: str | None = None) -> IStore:
    from jobhost.errors import StoreError
    from jobhost.store.sql import Engine, SqlStore

    password = read_password_file(password_file) if password_file else None
    try:
        engine = Engine.postgresql(url, redacted_url(url), password=password)
    except StoreError as e:
        raise ConfigError(e.message, path=_PATH) from None
    return SqlStore.create(engine, reactor)


#: scheme -> what a URL of that scheme looks like, how to check it and build its store.
#: Each imports its module lazily in ``build``, so a missing driver only matters when that
#: scheme is configured.
_SCHEMES: dict[str, _Scheme] = {
    "directory": _Scheme("directory:PATH", _check_directory, _directory),
    "sqlite": _Scheme("sqlite:PATH", _check_sqlite, _sqlite),
    "postgresql": _Scheme("postgresql://USER@HOST/DATABASE", _check_postgresql, _postgresql),
    "postgres": _Scheme("postgres://USER@HOST/DATABASE", _check_postgresql, _postgresql),
    "memory": _Scheme("memory:", _check_memory, _memory),
}


def supported_store_urls() -> tuple[str, ...]:
    """The forms of ``[store] url`` some store implements, e.g. ``("directory:PATH", "memory:")``."""
    return tuple(scheme.form for scheme in _SCHEMES.values())


def check_store_url(url: str) -> None:
    """Refuse a ``[store] url`` that no store implements, or that its store cannot use.

    No I/O: the config calls this while parsing, and :func:`store_from_url` before building.

    Raises:
        ConfigError: at key path ``("store", "url")``, naming the supported forms
            (with any password in ``url`` redacted).
    """
    _scheme_of(url)


def _scheme_of(url: str) -> tuple[_Scheme, str]:
    supported = ", ".join(supported_store_urls())
    if not isinstance(url, str) or ":" not in url:
        raise ConfigError(f"unsupported store URL {url!r}; supported: {supported}", path=_PATH)
    name, rest = url.split(":", 1)
    scheme = _SCHEMES.get(name.lower())
    if scheme is None:
        raise ConfigError(
            f"unsupported store URL {redacted_url(url)!r}: no store implements {name}:; supported: {supported}",
            path=_PATH,
        )
    scheme.check(url, rest)
    return scheme, rest


def store_from_url(url: str, reactor, base_dir: FilePath | str, password_file: str | None = None) -> IStore:
    """Build the store a ``[store] url`` names.

    Args:
        url: ``directory:PATH``, ``sqlite:PATH``, ``postgresql://...`` or ``memory:``.
        reactor: The reactor the store's thread pool reports back to (and is
            started and stopped with).
        base_dir: Where relative paths start (twistd's run directory).
        password_file: ``[store] password_file`` (PostgreSQL only): read here, never logged.

    Returns:
        A new :class:`IStore`.

    Raises:
        ConfigError: at key path ``("store", "url")`` for an unsupported or
            malformed URL.
    """
    scheme, rest = _scheme_of(url)
    if password_file and scheme.build is _postgresql:
        return _postgresql(url, rest, reactor, base_dir, password_file)
    if password_file:
        raise ConfigError("password_file applies to postgresql:// store URLs only", path=("store", "password_file"))
    return scheme.build(url, rest, reactor, base_dir)


__all__ = ["check_store_url", "read_password_file", "redacted_url", "store_from_url", "supported_store_urls"]
