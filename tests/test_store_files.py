"""jobhost.store.files on real files: durable writes, exclusive creation, errors and the change log.

Durability is checked by watching the calls that make a write survive a crash
(``fsync`` of the data, ``rename``/``link``, ``fsync`` of the directory), and
failure handling by injecting the disk's errors (ENOSPC, EIO) into ``os``.
"""

from __future__ import annotations

import errno
import os

import pytest

from jobhost.errors import BrokenRecord, StoreError
from jobhost.store import files
from jobhost.store.files import (
    CHANGES_LOCK,
    CHANGES_LOG,
    CHANGES_LOG_OLD,
    PUBLIC_MODE,
    SECRET_MODE,
    append_change,
    create_exclusively,
    encode_record,
    ensure_directory,
    flocked,
    fsync_directory,
    read_changes,
    read_record,
    write_atomically,
)
from jobhost.store.records import ChangeKind

STATE = frozenset((ChangeKind.STATE,))
#: Large enough that the log is never compacted.
NEVER = 1 << 30


def fd_path(fd: int) -> str:
    """The path an open descriptor refers to (what the kernel says, as the file is now named)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def open_descriptors(root: str) -> list[str]:
    """What this process has open under ``root`` (a deleted temp file included), sorted."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = fd_path(int(fd))
        except OSError:
            continue  # the descriptor listdir itself used
        if target == root or target.startswith(root + os.sep):
            found.append(target)
    return sorted(found)


class DurabilityCalls:
    """Records, in order, every ``fsync`` (by path), ``rename``, ``link`` and ``unlink`` under ``root`` (passing them on)."""

    def __init__(self, monkeypatch, root: str) -> None:
        self.events: list[tuple[str, ...]] = []
        real_fsync, real_rename, real_link, real_unlink = os.fsync, os.rename, os.link, os.unlink

        def record(*event):
            if all(p == root or p.startswith(root + os.sep) for p in event[1:]):
                self.events.append(event)

        def fsync(fd):
            record("fsync", fd_path(fd))
            return real_fsync(fd)

        def rename(src, dst):
            real_rename(src, dst)
            record("rename", os.fspath(src), os.fspath(dst))

        def link(src, dst):
            real_link(src, dst)
            record("link", os.fspath(src), os.fspath(dst))

        def unlink(path):
            real_unlink(path)
            record("unlink", os.fspath(path))

        for name, fake in (("fsync", fsync), ("rename", rename), ("link", link), ("unlink", unlink)):
            monkeypatch.setattr(files.os, name, fake)


def fail_temp_file_writes(monkeypatch, code: int = errno.ENOSPC) -> None:
    """Make every ``os.write`` to a temp file fail as a full (or broken) disk would."""
    real_write = os.write

    def write(fd, data):
        if fd_path(fd).endswith(".tmp"):
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", write)


@pytest.fixture
def root(tmp_path) -> str:
    # realpath: the kernel reports descriptors' paths with symlinks resolved
    return os.path.realpath(tmp_path)


# -- atomic replacement -------------------------------------------------------------------------


def test_replacing_a_file_syncs_the_data_before_the_rename_and_the_directory_after(root, monkeypatch):
    """write_atomically fsyncs the new content, renames it over the file, then fsyncs the directory."""
    path = os.path.join(root, "record.json")
    write_atomically(path, b"old", PUBLIC_MODE)
    calls = DurabilityCalls(monkeypatch, root)
    write_atomically(path, b"new", PUBLIC_MODE)
    [temp] = [event[1] for event in calls.events if event[0] == "rename"]
    assert calls.events == [("fsync", temp), ("rename", temp, path), ("fsync", root)]
    with open(path, "rb") as f:
        assert f.read() == b"new"


def test_exclusive_creation_syncs_the_data_before_the_link_and_the_directory_after(root, monkeypatch):
    """create_exclusively fsyncs the content, links it into place, fsyncs the directory and drops its temp file."""
    path = os.path.join(root, "record.json")
    calls = DurabilityCalls(monkeypatch, root)
    assert create_exclusively(path, b"first", PUBLIC_MODE) is True
    [temp] = [event[1] for event in calls.events if event[0] == "link"]
    assert calls.events == [("fsync", temp), ("link", temp, path), ("fsync", root), ("unlink", temp)]
    assert create_exclusively(path, b"second", PUBLIC_MODE) is False
    with open(path, "rb") as f:
        assert f.read() == b"first"
    assert os.listdir(root) == ["record.json"]


def test_a_full_disk_leaves_the_old_file_and_no_temp_file(root, monkeypatch):
    """A write failing with ENOSPC raises StoreError naming the file and the cause; the old content stays, nothing is left behind."""
    path = os.path.join(root, "record.json")
    write_atomically(path, b"old", SECRET_MODE)
    before = open_descriptors(root)
    fail_temp_file_writes(monkeypatch)
    with pytest.raises(StoreError) as caught:
        write_atomically(path, b"new", SECRET_MODE)
    assert caught.value.message == f"cannot write {path}: No space left on device"
    with open(path, "rb") as f:
        assert f.read() == b"old"
    assert os.listdir(root) == ["record.json"]
    assert open_descriptors(root) == before


def test_a_full_disk_creates_nothing(root, monkeypatch):
    """Exclusive creation failing with ENOSPC raises StoreError naming the file and the cause, and creates no file."""
    path = os.path.join(root, "record.json")
    before = open_descriptors(root)
    fail_temp_file_writes(monkeypatch)
    with pytest.raises(StoreError) as caught:
        create_exclusively(path, b"new", PUBLIC_MODE)
    assert caught.value.message == f"cannot write {path}: No space left on device"
    assert os.listdir(root) == []
    assert open_descriptors(root) == before


def test_a_failed_rename_removes_the_temp_file_and_names_only_the_target(root):
    """When the rename fails (a directory is in the way) the error names the target, not the temp file, which is gone."""
    path = os.path.join(root, "record.json")
    os.makedirs(os.path.join(path, "in-the-way"))
    with pytest.raises(StoreError) as caught:
        write_atomically(path, b"new", PUBLIC_MODE)
    assert caught.value.message == f"cannot write {path}: Is a directory"
    assert os.listdir(root) == ["record.json"]


def test_a_planted_temp_file_is_never_written_through(root, monkeypatch):
    """If the temp name already exists (e.g. a symlink planted there), the write fails instead of following it."""
    path = os.path.join(root, "record.json")
    write_atomically(path, b"old", SECRET_MODE)
    monkeypatch.setattr(files.secrets, "token_hex", lambda nbytes: "guessed")
    outside = os.path.join(root, "outside")
    os.symlink(outside, os.path.join(root, ".record.json.guessed.tmp"))
    with pytest.raises(StoreError) as caught:
        write_atomically(path, b"secret", SECRET_MODE)
    assert "File exists" in caught.value.message
    assert not os.path.exists(outside)
    with open(path, "rb") as f:
        assert f.read() == b"old"


def test_no_descriptor_is_left_open(root):
    """Writes, creations, locks, syncs, reads and the change log (compaction included) close every descriptor."""
    path = os.path.join(root, "record.json")
    before = open_descriptors(root)
    write_atomically(path, b"{}", PUBLIC_MODE)
    write_atomically(path, b"{}", SECRET_MODE)
    create_exclusively(os.path.join(root, "new.json"), b"{}", PUBLIC_MODE)
    create_exclusively(os.path.join(root, "new.json"), b"{}", PUBLIC_MODE)
    fsync_directory(root)
    with flocked(os.path.join(root, "x.lock")):
        pass
    read_record(path, dict, "record")
    for i in range(20):
        assert append_change(root, f"h{i}.example.com", STATE, 100) is None
    assert os.path.exists(os.path.join(root, CHANGES_LOG_OLD))
    read_changes(root, 0)
    assert open_descriptors(root) == before


# -- the errors of the other steps ----------------------------------------------------------------


def test_syncing_a_missing_directory_names_it(root):
    """fsync_directory of a path that does not exist raises StoreError naming it and the cause."""
    missing = os.path.join(root, "missing")
    with pytest.raises(StoreError) as caught:
        fsync_directory(missing)
    assert caught.value.message == f"cannot sync directory {missing}: No such file or directory"


def test_syncing_a_file_as_a_directory_fails(root):
    """fsync_directory refuses a regular file: syncing it would not make a rename in it durable."""
    path = os.path.join(root, "record.json")
    write_atomically(path, b"{}", PUBLIC_MODE)
    with pytest.raises(StoreError) as caught:
        fsync_directory(path)
    assert caught.value.message == f"cannot sync directory {path}: Not a directory"


def test_a_failed_directory_sync_fails_the_write(root, monkeypatch):
    """When the directory cannot be synced the write is not durable, so it fails naming the directory."""
    path = os.path.join(root, "record.json")
    real_fsync = os.fsync

    def fsync(fd):
        if os.path.isdir(fd_path(fd)):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(StoreError) as caught:
        write_atomically(path, b"{}", PUBLIC_MODE)
    assert caught.value.message == f"cannot sync directory {root}: Input/output error"


def test_a_file_where_a_directory_should_be_is_named(root):
    """ensure_directory where a file is in the way raises StoreError naming the path."""
    path = os.path.join(root, "domains")
    with open(path, "w"):
        pass
    with pytest.raises(StoreError) as caught:
        ensure_directory(path)
    assert caught.value.message == f"cannot create directory {path}: File exists"


def test_an_unopenable_lock_file_is_named(root):
    """flocked on a path that cannot be opened (a directory) raises StoreError naming it."""
    with pytest.raises(StoreError) as caught:
        with flocked(root):
            pass
    assert caught.value.message == f"cannot open lock file {root}: Is a directory"


# -- reading records ----------------------------------------------------------------------------


def test_an_unreadable_record_file_is_a_store_error_not_a_broken_record(root):
    """A record path that cannot be read (a directory) is a plain StoreError naming it: nothing says the record is bad."""
    path = os.path.join(root, "record.json")
    os.mkdir(path)
    with pytest.raises(StoreError) as caught:
        read_record(path, dict, "record")
    assert not isinstance(caught.value, BrokenRecord)
    assert caught.value.message == f"cannot read {path}: Is a directory"


def test_a_missing_record_file_is_a_key_error(root):
    """read_record of a file that does not exist raises KeyError with the record's key."""
    with pytest.raises(KeyError) as caught:
        read_record(os.path.join(root, "absent.json"), dict, "absent.example.com")
    assert caught.value.args == ("absent.example.com",)


def _refuse(exc):
    def parse(doc):
        raise exc

    return parse


@pytest.mark.parametrize(
    "content, parse, reason",
    [
        (b"[1, 2]", dict, "not a JSON object"),
        (b'{"a": ', dict, "not valid JSON (Expecting value at line 1 column 7)"),
        (b"{}", lambda doc: doc["hostname"], "missing field 'hostname'"),
        (b"{}", _refuse(ValueError("its created_at is not a time")), "its created_at is not a time"),
        (b"{}", _refuse(RuntimeError()), "RuntimeError"),
    ],
)
def test_a_broken_record_says_why(root, content, parse, reason):
    """A record that does not parse raises BrokenRecord with its key and a reason a person can act on."""
    path = os.path.join(root, "record.json")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(BrokenRecord) as caught:
        read_record(path, parse, "a.example.com")
    assert (caught.value.key, caught.value.reason) == ("a.example.com", reason)
    assert caught.value.message == f"cannot parse {path}: {reason}"


def test_record_files_are_indented_json_with_sorted_keys_and_text_as_utf8():
    """What an operator reads: two-space indented JSON, keys sorted, non-ASCII text as itself, one final newline."""
    assert encode_record({"title": "Entwickler in Zürich", "attempts": 2, "page": {"jobs": []}}) == (
        '{\n  "attempts": 2,\n  "page": {\n    "jobs": []\n  },\n  "title": "Entwickler in Zürich"\n}\n'
    ).encode("utf-8")


# -- the change log -----------------------------------------------------------------------------


def append_raw(root: str, data: bytes) -> None:
    """Append bytes to the change log as another (older, or crashing) writer would."""
    with open(os.path.join(root, CHANGES_LOG), "ab") as f:
        f.write(data)


def test_cursors_into_the_first_log_are_its_byte_offsets(root):
    """Until the first compaction a cursor is the byte offset in changes.log (the feed's documented form)."""
    assert read_changes(root, None) == (0, {})
    append_change(root, "a.example.com", STATE, NEVER)
    append_change(root, "b.example.com", STATE, NEVER)
    cursor, _ = read_changes(root, None)
    assert cursor == os.path.getsize(os.path.join(root, CHANGES_LOG))


def test_lines_without_known_kinds_count_as_every_kind(root):
    """A line without kinds (written before kinds existed) or naming an unknown kind means every kind changed."""
    append_change(root, "a.example.com", STATE, NEVER)
    cursor, _ = read_changes(root, None)
    append_raw(root, b"old.example.com\nblank.example.com \nnewer.example.com page,teleport\n")
    append_change(root, "known.example.com", frozenset((ChangeKind.PAGE, ChangeKind.STATE)), NEVER)
    _, changed = read_changes(root, cursor)
    assert changed == {
        "old.example.com": ChangeKind.ALL,
        "blank.example.com": ChangeKind.ALL,
        "newer.example.com": ChangeKind.ALL,
        "known.example.com": frozenset((ChangeKind.PAGE, ChangeKind.STATE)),
    }


def test_after_an_unreadable_line_the_feed_recovers(root):
    """A line that is not a hostname (even among good ones) reports None once; the cursor it gives then works again."""
    append_change(root, "a.example.com", STATE, NEVER)
    cursor, _ = read_changes(root, None)
    append_change(root, "before.example.com", STATE, NEVER)
    append_raw(root, b"../not a hostname\n")
    append_change(root, "after.example.com", STATE, NEVER)
    cursor, changed = read_changes(root, cursor)
    assert changed is None
    append_change(root, "next.example.com", STATE, NEVER)
    assert read_changes(root, cursor)[1] == {"next.example.com": STATE}


@pytest.mark.parametrize("tail", [1, 4095, 4096, 4097, 9000])
def test_a_new_cursor_stops_at_the_last_complete_line(root, tail):
    """changes(None) with an unfinished tail (a write in flight, or zeros after a crash) agrees with a polling reader."""
    for i in range(3):
        append_change(root, f"h{i}.example.com", STATE, NEVER)
    complete, _ = read_changes(root, None)
    append_raw(root, b"\0" * tail)
    assert read_changes(root, None) == (complete, {})
    assert read_changes(root, complete) == (complete, {})


def test_a_change_appended_while_a_cursor_is_taken_is_reported_next(root, monkeypatch):
    """A change another process appends while changes(None) runs comes with the next poll: it is never skipped."""
    append_change(root, "a.example.com", STATE, NEVER)
    log = os.path.join(root, CHANGES_LOG)
    real_fstat = os.fstat
    appended = []

    def fstat(fd):
        result = real_fstat(fd)
        if not appended and fd_path(fd) == log:
            appended.append(True)
            append_change(root, "during.example.com", STATE, NEVER)
        return result

    monkeypatch.setattr(files.os, "fstat", fstat)
    cursor, _ = read_changes(root, None)
    assert appended
    assert read_changes(root, cursor)[1] == {"during.example.com": STATE}


def test_the_log_is_compacted_only_once_it_grows_past_its_limit(root):
    """A log of exactly max_log_bytes stays; the next change, taking it past, compacts it."""
    append_change(root, "a.example.com", STATE, NEVER)
    limit = os.path.getsize(os.path.join(root, CHANGES_LOG)) + len(b"b.example.com state\n")
    assert append_change(root, "b.example.com", STATE, limit) is None
    assert os.path.getsize(os.path.join(root, CHANGES_LOG)) == limit
    assert not os.path.exists(os.path.join(root, CHANGES_LOG_OLD))
    assert append_change(root, "c.example.com", STATE, limit) is None
    assert os.path.exists(os.path.join(root, CHANGES_LOG_OLD))


def test_a_reader_from_an_empty_store_one_compaction_behind_gets_names(root):
    """A cursor taken before anything was logged (0) still gets exact names after one compaction."""
    cursor, _ = read_changes(root, None)
    written = set()
    while not os.path.exists(os.path.join(root, CHANGES_LOG_OLD)):
        name = f"h{len(written)}.example.com"
        append_change(root, name, STATE, 200)
        written.add(name)
    _, changed = read_changes(root, cursor)
    assert changed is not None
    assert set(changed) == written


def test_an_interrupted_compaction_does_not_block_later_ones(root):
    """A temp link left by a compaction that crashed is replaced: the log is still compacted and stays small."""
    append_change(root, "a.example.com", STATE, NEVER)
    with open(os.path.join(root, "." + CHANGES_LOG_OLD + ".tmp"), "wb") as f:
        f.write(b"left by a crash\n")
    for i in range(30):
        assert append_change(root, f"h{i}.example.com", STATE, 200) is None
    assert os.path.exists(os.path.join(root, CHANGES_LOG_OLD))
    assert os.path.getsize(os.path.join(root, CHANGES_LOG)) <= 200 + len(b"h29.example.com state\n")


def test_a_removed_log_is_reported_once(root):
    """A cursor past a removed log gets None once; polling on with the cursor it got reports nothing new."""
    append_change(root, "a.example.com", STATE, NEVER)
    cursor, _ = read_changes(root, None)
    os.unlink(os.path.join(root, CHANGES_LOG))
    cursor, changed = read_changes(root, cursor)
    assert changed is None
    assert read_changes(root, cursor) == (cursor, {})


def test_a_log_that_cannot_be_opened_is_a_store_error(root):
    """read_changes raises StoreError naming the log when it exists but cannot be opened."""
    log = os.path.join(root, CHANGES_LOG)
    os.mkdir(log)
    with pytest.raises(StoreError) as caught:
        read_changes(root, 0)
    assert caught.value.message == f"cannot read {log}: Is a directory"


def test_a_failed_append_says_why(root):
    """append_change returns, instead of raising, why the change could not be logged: the log and the cause."""
    log = os.path.join(root, CHANGES_LOG)
    os.mkdir(log)
    assert append_change(root, "a.example.com", STATE, NEVER) == f"{log}: Is a directory"
    os.rmdir(log)
    lock = os.path.join(root, CHANGES_LOCK)
    os.unlink(lock)
    os.mkdir(lock)
    assert append_change(root, "a.example.com", STATE, NEVER) == (
        f"{log}: store error: cannot open lock file {lock}: Is a directory"
    )


def test_nothing_is_logged_without_kinds(root):
    """append_change with no kinds writes nothing (and creates no log)."""
    assert append_change(root, "a.example.com", frozenset(), NEVER) is None
    assert not os.path.exists(os.path.join(root, CHANGES_LOG))
