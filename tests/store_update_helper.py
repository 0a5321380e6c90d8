"""
A writer process for the directory store's cross-process update test.

Usage: ``python store_update_helper.py STORE_DIR HOSTNAME WRITER COUNT``.  Waits for
a line on stdin (so several writers start together), then applies ``COUNT``
increments of ``page[WRITER]`` through ``DirectoryStore.update_domain`` and
prints ``done``.  Each increment reads, changes and writes the shared record, so a
lost update shows as a final count below ``COUNT``.
"""

from __future__ import annotations

import sys

import attrs
from twisted.internet.defer import maybeDeferred

from jobhost.store.directory import DirectoryStore


def main(root: str, hostname: str, writer: str, count: int) -> None:
    store = DirectoryStore(root, lambda f, *args: maybeDeferred(f, *args))

    def bump(record):
        page = dict(record.page or {})
        page[writer] = page.get(writer, 0) + 1
        return attrs.evolve(record, page=page)

    sys.stdin.readline()
    for _ in range(count):
        d = store.update_domain(hostname, bump)
        failures = []
        d.addErrback(failures.append)
        if failures:
            failures[0].raiseException()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
