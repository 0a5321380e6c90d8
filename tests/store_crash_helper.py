"""
Writer processes for tests/integration/test_store_crash.py, killed while they write.

Usage: ``python store_crash_helper.py STORE_DIR RECORDS.json``.  RECORDS.json
maps each hostname to two certificate records (their ``to_json`` form).

The process loads everything once, prints ``loaded``, and then, for each line
read from stdin, forks a writer (forking skips the second of interpreter
start-up that a fresh process per kill would cost).  The writer prints
``ready <pid>`` and puts the two records of every hostname alternately through
a :class:`DirectoryStore`, as fast as it can, until it is killed; the parent
then prints ``exited <wait status>``.  A writer whose put fails exits with
status 3 after printing the traceback on stderr.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet.defer import maybeDeferred

from jobhost.store.directory import DirectoryStore
from jobhost.store.records import CertificateRecord


def _die(failure) -> None:
    os.write(2, failure.getTraceback().encode("utf-8", "replace"))
    os._exit(3)


def write_forever(root: str, records: dict[str, list[CertificateRecord]]) -> None:
    """Put each hostname's two records alternately, forever (in a forked writer)."""
    # A small change log, so kills also land during compaction.
    store = DirectoryStore(root, lambda f, *args: maybeDeferred(f, *args), max_log_bytes=2048)
    os.write(1, b"ready %d\n" % os.getpid())
    turn = 0
    while True:
        for pair in records.values():
            store.put_certificate(pair[turn % 2]).addErrback(_die)
        turn += 1


def main(root: str, records_file: str) -> None:
    """Fork one writer per line on stdin and report how each ended."""
    with open(records_file) as f:
        docs = json.load(f)
    records = {h: [CertificateRecord.from_json(doc) for doc in pair] for h, pair in docs.items()}
    sys.stdout.write("loaded\n")
    sys.stdout.flush()
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                write_forever(root, records)
            finally:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exited {status}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])


__all__ = ["main", "write_forever"]
