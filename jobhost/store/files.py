"""
The directory store's file I/O: atomic writes, exclusive creation, locks, the change log.

Everything here is synchronous and blocks on the disk: call it from a worker
thread (:class:`jobhost.store.directory.DirectoryStore` runs it through its
``run_in_thread``), never on the reactor thread.  It knows nothing of the
store's layout beyond the change log's three files in the root directory.

Writes go to a sibling temp file (``.<name>.<random>.tmp``, created with its
final mode), which is flushed and fsynced, renamed over the target (or
hard-linked, for exclusive creation), and then the directory is fsynced.
Every failure is a :class:`StoreError` naming the file.

The change log: :func:`append_change` appends ``"<hostname> <kind>,<kind>\\n"`` to
``changes.log`` with one ``O_APPEND`` write while holding an exclusive
``flock`` on ``changes.lock``.  A cursor is a *virtual* byte offset: each log
starts with a header line ``# jobhost changes base=N`` and byte ``i`` of the
file is at offset ``N + i``.  When the log outgrows ``max_log_bytes`` it is
compacted: hard-linked to ``changes.log.1`` and replaced (by rename, so there
is never a moment without a log) by a fresh log whose base is the old log's
end.  Offsets therefore only grow, a cursor never points into the wrong file,
a reader one compaction behind still gets exact names from ``changes.log.1``
(:func:`read_changes`), and a reader further behind (or holding a cursor past
the end, e.g. after the log was deleted) gets None: "treat everything as
changed".  A line without kinds (written before kinds existed) or with a
kind this version does not know counts as every kind.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from jobhost.errors import BrokenRecord, StoreError
from jobhost.hostnames import is_normalised_hostname
from jobhost.store.records import ChangeKind

CHANGES_LOG = "changes.log"
CHANGES_LOG_OLD = "changes.log.1"
CHANGES_LOCK = "changes.lock"

#: Mode of files holding private keys (certificates, accounts).
SECRET_MODE = 0o600
#: Mode of every other record file (the store's directories are 0700 anyway).
PUBLIC_MODE = 0o644
DIRECTORY_MODE = 0o700

_HEADER_PREFIX = b"# jobhost changes base="


def fsync_directory(path: str) -> None:
    """Make a rename or unlink in ``path`` durable; StoreError naming it on failure."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StoreError(f"cannot sync directory {path}: {e.strerror}") from None


def ensure_directory(path: str) -> None:
    """Create ``path`` (mode :data:`DIRECTORY_MODE`) unless it exists; StoreError naming it on failure."""
    try:
        # The mode applies to the last component only; DirectoryStore._ensure makes the root first.
        os.makedirs(path, mode=DIRECTORY_MODE, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create directory {path}: {e.strerror}") from None


def _temp_sibling(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{secrets.token_hex(8)}.tmp")


def _write_temp(path: str, data: bytes, mode: int) -> str:
    """Write ``data`` to a new fsynced temp file beside ``path``; return its name."""
    temp = _temp_sibling(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        if mode == SECRET_MODE:
            # The umask can only have removed bits; make the mode exact.
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(temp)
        raise
    os.close(fd)
    return temp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomically(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content only.

    Raises:
        StoreError: naming the file, when any step fails (the old file is then untouched).
    """
    temp = None
    try:
        temp = _write_temp(path, data, mode)
        os.rename(temp, path)
        temp = None
        fsync_directory(os.path.dirname(path))
    except OSError as e:
        if temp is not None:
            _unlink_quietly(temp)
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None


def create_exclusively(path: str, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` unless it exists; True when this call created it.

    The complete file is written to a temp file first and then hard-linked to
    ``path``; ``link`` fails if ``path`` exists, which makes creation atomic
    across processes without any reader seeing a partial file.
    """
    temp = None
    try:
        temp = _write_temp(path, data, mode)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        fsync_directory(os.path.dirname(path))
        return True
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if temp is not None:
            _unlink_quietly(temp)


def encode_record(doc: dict[str, Any]) -> bytes:
    """A record's JSON document as the bytes of its file (indented, sorted keys, UTF-8)."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    return str(exc) or exc.__class__.__name__


def read_record(path: str, parse: Callable[[dict[str, Any]], Any], key: str) -> Any:
    """Read and parse one record file.

    Raises:
        KeyError: ``key``, when the file does not exist.
        BrokenRecord: naming the file and ``key``, when it was read but does not
            parse or does not verify (a certificate whose key does not match its leaf):
            reading it again gives the same answer until it is rewritten.
        StoreError: naming the file, when it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise KeyError(key) from None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return parse(doc)
    except Exception as e:
        reason = _describe(e)
        raise BrokenRecord(f"cannot parse {path}: {reason}", key=key, reason=reason) from None


@contextmanager
def flocked(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing).

    ``flock`` locks belong to the open file description, so this excludes
    other threads of this process as well as other processes.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SECRET_MODE)
    except OSError as e:
        raise StoreError(f"cannot open lock file {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- the change log ---------------------------------------------------------------------


def _log_header(base: int) -> bytes:
    return _HEADER_PREFIX + b"%d\n" % base


def _read_log_start(f) -> tuple[int, int]:
    """Return ``(base, content_start)`` of a change log just opened (read from its start)."""
    first = f.read(64)
    if first.startswith(_HEADER_PREFIX):
        end = first.find(b"\n")
        if end > 0:
            try:
                return int(first[len(_HEADER_PREFIX) : end]), end + 1
            except ValueError:
                pass
    # No (valid) header: an operator truncated or replaced the file; offsets start at 0.
    return 0, 0


def _parse_kinds(text: str) -> frozenset[str]:
    kinds = frozenset(text.split(",")) if text else frozenset()
    if not kinds or not kinds <= ChangeKind.ALL:
        return ChangeKind.ALL
    return kinds


def _read_names(f, start: int, stop: int) -> tuple[list[tuple[str, frozenset[str]]] | None, int]:
    """Read the complete lines in ``[start, stop)``; return ``(changes, bytes used)``.

    ``changes`` lists ``(hostname, kinds)``.  A partial last line (a write in
    flight) is left for the next call.  A line that does not start with a
    normalised hostname makes the changes None: the log cannot be trusted, so
    the caller must treat everything as changed.
    """
    if stop <= start:
        return [], 0
    f.seek(start)
    data = f.read(stop - start)
    used = data.rfind(b"\n") + 1
    names: list[tuple[str, frozenset[str]]] | None = []
    for line in data[:used].split(b"\n")[:-1]:
        name, _, kinds = line.decode("ascii", "replace").partition(" ")
        if not is_normalised_hostname(name):
            names = None
            break
        names.append((name, _parse_kinds(kinds)))
    return names, used


def _merge(changes: list[tuple[str, frozenset[str]]]) -> dict[str, frozenset[str]]:
    merged: dict[str, frozenset[str]] = {}
    for hostname, kinds in changes:
        merged[hostname] = merged.get(hostname, frozenset()) | kinds
    return merged


def _last_line_end(f, start: int, size: int) -> int:
    """File position just after the last complete line (at least ``start``)."""
    position = size
    while position > start:
        chunk_start = max(start, position - 4096)
        f.seek(chunk_start)
        chunk = f.read(position - chunk_start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return chunk_start + newline + 1
        position = chunk_start
    return start


def _new_log(root: str, base: int) -> None:
    """Install a fresh, empty change log starting at ``base``.  Hold the log lock."""
    write_atomically(os.path.join(root, CHANGES_LOG), _log_header(base), PUBLIC_MODE)


def _compact_log(root: str, log_path: str, size: int) -> None:
    """Move the full log to ``changes.log.1`` and start a new one.  Hold the log lock.

    The old log is hard-linked into place before the new one is renamed
    over ``changes.log``, so a reader always finds a log.
    """
    with open(log_path, "rb") as f:
        base, _ = _read_log_start(f)
    linked = os.path.join(root, "." + CHANGES_LOG_OLD + ".tmp")
    _unlink_quietly(linked)
    os.link(log_path, linked)
    os.rename(linked, os.path.join(root, CHANGES_LOG_OLD))
    _new_log(root, base + size)


def append_change(root: str, hostname: str, kinds: frozenset[str], max_log_bytes: int) -> str | None:
    """Append ``hostname`` and the :class:`ChangeKind` s it saw to the change log.

    Returns None, or why it failed.

    Called after the record itself is safely on disk, so a reader who sees
    the line also sees the new record.  A failure here does not undo the
    write: it is reported (logged) and other processes find the change at
    their next full reload.

    Args:
        root: The store's root directory.
        hostname: A normalised hostname.
        kinds: What changed (nothing is appended when empty).
        max_log_bytes: Compact the log once it grows past this size.
    """
    if not kinds:
        return None
    log_path = os.path.join(root, CHANGES_LOG)
    line = (hostname + " " + ",".join(sorted(kinds))).encode("ascii") + b"\n"
    try:
        with flocked(os.path.join(root, CHANGES_LOCK)):
            try:
                fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except FileNotFoundError:
                _new_log(root, 0)
                fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                # One small write: atomic with respect to other appenders and readers.
                os.write(fd, line)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > max_log_bytes:
                _compact_log(root, log_path, size)
    except (OSError, StoreError) as e:
        return f"{log_path}: {getattr(e, 'strerror', None) or e}"
    return None


def read_changes(root: str, cursor: int | None) -> tuple[int, dict[str, frozenset[str]] | None]:
    """Hostnames appended to the change log under ``root`` since ``cursor``, with their kinds.

    Returns:
        ``(new_cursor, changed)``: ``changed`` maps hostname -> kinds (empty when
        ``cursor`` is None: the new cursor is then the log's end), or None when
        the log cannot tell (cursor from before the last two logs, past the
        end, or an unreadable line).

    Raises:
        StoreError: naming the log, when it exists but cannot be opened.
    """
    log_path = os.path.join(root, CHANGES_LOG)
    try:
        f = open(log_path, "rb")
    except FileNotFoundError:
        # Nothing ever changed (or the log was removed): the feed is empty at 0.
        if cursor is None or cursor == 0:
            return 0, {}
        return 0, None
    except OSError as e:
        raise StoreError(f"cannot read {log_path}: {e.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        base, start = _read_log_start(f)
        end = base + _last_line_end(f, start, size)
        if cursor is None:
            return end, {}
        if cursor > base + size:
            return end, None  # the log was truncated or replaced
        if cursor < base:
            earlier = _old_log_names(root, cursor, base)
            if earlier is None:
                return end, None  # more than one compaction behind
            position = start
        else:
            earlier = []
            position = max(cursor - base, start)
        names, used = _read_names(f, position, size)
        if names is None:
            return base + position + used, None
        return base + position + used, _merge(earlier + names)


def _old_log_names(root: str, cursor: int, base: int) -> list[tuple[str, frozenset[str]]] | None:
    """Names after ``cursor`` in ``changes.log.1``, if it is the log just before ``base``."""
    try:
        with open(os.path.join(root, CHANGES_LOG_OLD), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            old_base, start = _read_log_start(f)
            if old_base + size != base or cursor < old_base:
                return None
            names, _ = _read_names(f, max(cursor - old_base, start), size)
            return names
    except OSError:
        return None


__all__ = [
    "CHANGES_LOCK",
    "CHANGES_LOG",
    "CHANGES_LOG_OLD",
    "DIRECTORY_MODE",
    "PUBLIC_MODE",
    "SECRET_MODE",
    "append_change",
    "create_exclusively",
    "encode_record",
    "ensure_directory",
    "flocked",
    "fsync_directory",
    "read_changes",
    "read_record",
    "write_atomically",
]
