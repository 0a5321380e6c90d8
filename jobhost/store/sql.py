"""
The SQL store: the store contract over ``twisted.enterprise.adbapi``, on SQLite or PostgreSQL.

Every record is one row whose ``doc`` column holds the record's JSON form
(:mod:`jobhost.store.records`, the same form the directory store writes), beside
the few columns queries select or order by (state, next attempt, expiry).  Every
query is parameterised; every call runs in the pool's threads, never on the
reactor thread.

Dialect differences live in one small :class:`Engine` per database: the
placeholder style, how a write transaction starts (SQLite: ``BEGIN IMMEDIATE``,
which takes the database's one write lock before anything is read) and how a
name is locked for a transaction (PostgreSQL: ``pg_advisory_xact_lock``; SQLite
needs nothing more than its write lock).  Atomic updates (``update_domain``,
leases, the order budget) therefore read and write in one transaction that no
other writer, in any process or node, can come between.

The schema carries its version in ``jobhost_schema``; :data:`MIGRATIONS` brings
an older schema forward when the store is first used, and a schema newer than
this code is refused with a message naming both versions.

The change feed is the ``changes`` table: one row per change (hostname and
kinds), the cursor is the last row id.  Rows older than the newest
:data:`CHANGES_KEPT` are pruned; a cursor from before the pruned part gets None
("treat everything as changed").
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

import attrs
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from zope.interface import implementer

from jobhost.errors import BrokenRecord, InvalidCertificate, StoreError
from jobhost.hostnames import is_normalised_hostname
from jobhost.store.interfaces import IStore
from jobhost.store.records import (
    Account,
    CertificateRecord,
    ChangeKind,
    Challenge,
    DomainRecord,
    DomainState,
    DuePage,
    RecordCounts,
    certificate_change_kinds,
    domain_change_kinds,
)

#: The schema version this code writes and understands.
SCHEMA_VERSION = 1

#: How many change-feed rows are kept (older ones are pruned).
CHANGES_KEPT = 100_000

#: The PostgreSQL channel every committed change is announced on.
CHANGES_CHANNEL = "jobhost_changes"

_SCHEMA_V1 = (
    """CREATE TABLE domains (
        hostname {key_text} PRIMARY KEY,
        state TEXT NOT NULL,
        next_attempt DOUBLE PRECISION,
        version BIGINT NOT NULL,
        doc TEXT NOT NULL)""",
    "CREATE INDEX domains_state ON domains (state, hostname)",
    "CREATE INDEX domains_next_attempt ON domains (next_attempt)",
    """CREATE TABLE certificates (
        hostname {key_text} PRIMARY KEY,
        not_after DOUBLE PRECISION,
        fingerprint TEXT,
        doc TEXT NOT NULL)""",
    "CREATE INDEX certificates_not_after ON certificates (not_after)",
    "CREATE TABLE challenges (token TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE accounts (directory_url {key_text} PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE order_slots (budget TEXT NOT NULL, taken_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX order_slots_budget ON order_slots (budget, taken_at)",
)

#: version -> statements that bring the schema from ``version - 1`` to ``version``.
#: ``{key_text}`` is the type of columns the store orders by (:meth:`Engine.ddl`); the change
#: table's key column is dialect-specific too (:meth:`Engine.changes_table`).
MIGRATIONS: dict[int, tuple[str, ...]] = {1: _SCHEMA_V1}

log = Logger()


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@attrs.frozen
class Engine:
    """What differs between SQLite and PostgreSQL, and how to open a pool on each.

    Attributes:
        name: ``sqlite`` or ``postgresql``.
        placeholder: The driver's parameter marker (queries are written with ``?``).
        pool_args: ``(module name, args, kwargs)`` for :class:`adbapi.ConnectionPool`.
        description: What to name in messages (the URL with its password redacted).
    """

    name: str
    placeholder: str
    pool_args: tuple[str, tuple, dict] = attrs.field(repr=False)
    description: str

    def sql(self, query: str) -> str:
        """``query`` with ``?`` markers in this driver's style."""
        return query if self.placeholder == "?" else query.replace("?", self.placeholder)

    def begin_write(self, cursor) -> None:
        """Start a transaction that holds what a read-modify-write needs from its first read."""
        if self.name == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")

    def lock(self, cursor, name: str) -> None:
        """Serialise transactions that lock ``name`` (until commit), across every node."""
        if self.name == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

    def ddl(self, statement: str) -> str:
        """``statement`` with ``{key_text}`` made a byte-ordered text type.

        Hostnames are listed and paged in byte order in every store (the admin API's
        prefix search relies on it); PostgreSQL's default collation would order
        ``a-b`` and ``ab`` by other rules, so its ordered columns use ``COLLATE "C"``.
        """
        return statement.replace("{key_text}", 'TEXT COLLATE "C"' if self.name == "postgresql" else "TEXT")

    def changes_table(self) -> str:
        key = "INTEGER PRIMARY KEY AUTOINCREMENT" if self.name == "sqlite" else "BIGSERIAL PRIMARY KEY"
        return f"CREATE TABLE changes (id {key}, hostname TEXT NOT NULL, kinds TEXT NOT NULL)"

    def insert_returning_id(self, cursor, query: str, params: Sequence[Any]) -> int:
        if self.name == "sqlite":
            cursor.execute(self.sql(query), params)
            return cursor.lastrowid
        cursor.execute(self.sql(query + " RETURNING id"), params)
        return cursor.fetchone()[0]

    @classmethod
    def sqlite(cls, path: str) -> Engine:
        """An SQLite database file: WAL, one connection (one writer), a 30 s busy timeout."""

        return cls(
            name="sqlite",
            placeholder="?",
            pool_args=(
                "sqlite3",
                (path,),
                {
                    "check_same_thread": False,
                    "isolation_level": None,  # transactions are begun explicitly
                    "timeout": 30.0,
                    "cp_min": 1,
                    "cp_max": 1,
                    "cp_openfun": _sqlite_connection_opened,
                },
            ),
            description=f"sqlite:{path}",
        )

    @classmethod
    def postgresql(cls, url: str, description: str, password: str | None = None) -> Engine:
        """A PostgreSQL database by libpq URL (``PGPASSFILE``, services and the environment work).

        ``password``, when given, is passed to libpq beside the URL (never in ``description``).
        """
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'jobhost[postgresql]'"
            ) from None
        return cls(
            name="postgresql",
            placeholder="%s",
            pool_args=(
                "psycopg",
                (url,),
                {"cp_min": 1, "cp_max": 4, "cp_reconnect": True, **({"password": password} if password else {})},
            ),
            description=description,
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _sqlite_connection_opened(connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")


def _parse(kind: str, key: str, doc_text: str, cls_, key_field: str):
    """Parse one row's JSON doc; BrokenRecord naming the row when it does not parse or verify."""
    try:
        record = cls_.from_json(json.loads(doc_text))
        if getattr(record, key_field) != key:
            raise ValueError(f"it holds {key_field} {getattr(record, key_field)!r}")
        return record
    except (ValueError, KeyError, TypeError, InvalidCertificate) as e:
        reason = e.describe() if isinstance(e, InvalidCertificate) else f"{type(e).__name__}: {e}"
        raise BrokenRecord(f"the {kind} row for {key!r} cannot be used: {reason}", key=key, reason=reason) from None


def _doc(record) -> str:
    return json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))


@implementer(IStore)
@attrs.define(eq=False)
class SqlStore:
    """An :class:`IStore` in an SQL database (see the module docstring).

    Attributes:
        engine: The database and its dialect.
        pool: The adbapi pool every call runs through.
    """

    engine: Engine
    pool: adbapi.ConnectionPool = attrs.field(repr=False)
    reactor: Any = attrs.field(default=None, repr=False)
    _open_lock: DeferredLock = attrs.field(factory=DeferredLock, init=False, repr=False)
    _store_id: str | None = attrs.field(default=None, init=False, repr=False)

    _log = Logger()

    @classmethod
    def create(cls, engine: Engine, reactor=None) -> SqlStore:
        """Open a pool on ``engine``; the schema is created or migrated when the reactor runs.

        Args:
            engine: The database.
            reactor: The reactor the pool's threads report to (default: the global one).
        """
        module, args, kwargs = engine.pool_args
        if reactor is not None:
            kwargs = {**kwargs, "cp_reactor": reactor}
        store = cls(engine, adbapi.ConnectionPool(module, *args, **kwargs), reactor)
        if reactor is not None:
            reactor.callWhenRunning(store._open_at_start)
        return store

    def _open_at_start(self) -> None:
        self.open().addErrback(
            lambda f: self._log.error("Cannot open the store {store}: {error}",
                                      store=self.engine.description, error=f.getErrorMessage())
        )

    def close(self) -> None:
        """Close the pool's connections."""
        self.pool.close()

    # -- plumbing -----------------------------------------------------------------------

    def open(self) -> Deferred:
        """Create or migrate the schema (once per store object); fire with the store id.

        Every other method opens the store first if nobody has.  Fails with
        StoreError when the database cannot be reached (a later call tries again)
        or its schema is newer than this code.
        """

        async def run() -> str:
            async with self._open_lock:
                if self._store_id is None:
                    self._store_id = await self._run_raw(self._migrate)
            return self._store_id

        return Deferred.fromCoroutine(run())

    def migrate_now(self) -> str:
        """Create or migrate the schema now, blocking, on a connection of its own; return the store id.

        For start-up, before the reactor runs and before any listener serves (the
        daemon calls it while building its services, so a database it cannot use,
        or a schema newer than this code, stops it with one line).

        Raises:
            StoreError: naming the database (password redacted) and the cause.
        """
        module_name, args, kwargs = self.engine.pool_args
        module = __import__(module_name)
        options = {k: v for k, v in kwargs.items() if not k.startswith("cp_")}
        try:
            connection = module.connect(*args, **options)
        except Exception as e:
            raise StoreError(f"cannot connect to {self.engine.description}: {_one_line(e)}") from None
        try:
            opened = kwargs.get("cp_openfun")
            try:
                if opened is not None:
                    opened(connection)  # SQLite's first statements: "file is not a database" shows here
                cursor = connection.cursor()
                store_id = self._migrate(cursor)
                connection.commit()
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(f"{self.engine.description}: {_one_line(e)}") from None
        finally:
            connection.close()  # without a commit, this discards the transaction
        self._store_id = store_id
        return store_id

    def _run_raw(self, interaction: Callable, *args: Any, retries: int | None = None) -> Deferred:
        """Run ``interaction(cursor, *args)`` in one transaction; driver errors become StoreError.

        A connection the server dropped (a restart, a failover) fails its next use
        once; adbapi then discards it (``cp_reconnect``).  Each pool thread holds a
        connection of its own, so a call that failed for that reason is tried again,
        up to once per pooled connection, until one is fresh.
        """
        if retries is None:
            retries = self.pool.max

        def again(failure):
            if retries > 0 and self._connection_lost(failure.value):
                return self._run_raw(interaction, *args, retries=retries - 1)
            return failure

        def translate(failure):
            if failure.check(StoreError, KeyError, BrokenRecord):
                return failure
            exc = failure.value
            driver = isinstance(exc, Exception) and type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg")
            if driver or isinstance(exc, adbapi.ConnectionLost):  # the latter: every retry met a lost connection
                raise StoreError(f"{self.engine.description}: {type(exc).__name__}: {exc}".strip())
            return failure

        return self.pool.runInteraction(interaction, *args).addErrback(again).addErrback(translate)

    def _connection_lost(self, exc: BaseException) -> bool:
        if self.engine.name != "postgresql":
            return False
        import psycopg

        from twisted.enterprise.adbapi import ConnectionLost

        return isinstance(exc, (ConnectionLost, psycopg.OperationalError, psycopg.InterfaceError))

    def _run(self, interaction: Callable, *args: Any) -> Deferred:
        async def run():
            if self._store_id is None:
                await self.open()
            return await self._run_raw(interaction, *args)

        return Deferred.fromCoroutine(run())

    def _migrate(self, cursor) -> str:
        e = self.engine
        e.begin_write(cursor)
        e.lock(cursor, "jobhost-schema")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS jobhost_schema ("
            "id INTEGER PRIMARY KEY, version INTEGER NOT NULL, store_id TEXT NOT NULL, changes_floor BIGINT NOT NULL)"
        )
        cursor.execute(e.sql("SELECT version, store_id FROM jobhost_schema WHERE id = 1"))
        row = cursor.fetchone()
        version, store_id = (0, secrets.token_hex(16)) if row is None else (row[0], row[1])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{e.description}: the schema is version {version}, newer than this jobhost "
                f"understands ({SCHEMA_VERSION}); upgrade jobhost"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                cursor.execute(e.ddl(statement))
            if target == 1:
                cursor.execute(e.changes_table())
            log.info("Store schema migrated to version {version} in {store}", version=target, store=e.description)
        if row is None:
            cursor.execute(
                e.sql("INSERT INTO jobhost_schema (id, version, store_id, changes_floor) VALUES (1, ?, ?, 0)"),
                (SCHEMA_VERSION, store_id),
            )
        elif version != SCHEMA_VERSION:
            cursor.execute(e.sql("UPDATE jobhost_schema SET version = ? WHERE id = 1"), (SCHEMA_VERSION,))
        return store_id

    def _record_change(self, cursor, hostname: str, kinds: frozenset[str]) -> None:
        if not kinds:
            return
        e = self.engine
        new_id = e.insert_returning_id(
            cursor, "INSERT INTO changes (hostname, kinds) VALUES (?, ?)", (hostname, ",".join(sorted(kinds)))
        )
        if e.name == "postgresql":
            # Delivered at commit, to every node LISTENing (see watch_changes); equal
            # notifications within one transaction are folded into one.
            cursor.execute("SELECT pg_notify(%s, '')", (CHANGES_CHANNEL,))
        if new_id % 1000 == 0 and new_id > CHANGES_KEPT:
            floor = new_id - CHANGES_KEPT
            cursor.execute(e.sql("DELETE FROM changes WHERE id <= ?"), (floor,))
            cursor.execute(e.sql("UPDATE jobhost_schema SET changes_floor = ? WHERE id = 1"), (floor,))

    def watch_changes(self, callback: Callable[[], None]) -> Callable[[], None]:
        """On PostgreSQL, call ``callback`` (reactor thread) when any node commits a change.

        A thread of its own holds a connection that ``LISTEN`` s on
        :data:`CHANGES_CHANNEL`.  When the connection is lost it reconnects (once a
        second) and calls ``callback`` once, since notifications sent meanwhile
        are lost.  SQLite pushes nothing (one machine: the poll is cheap).
        Returns the function that stops the thread.
        """
        if self.engine.name != "postgresql":
            return lambda: None
        import threading

        from twisted.internet import reactor as global_reactor

        reactor = self.reactor if self.reactor is not None else global_reactor
        stopping = threading.Event()
        url = self.engine.pool_args[1][0]
        extra = {k: v for k, v in self.engine.pool_args[2].items() if k == "password"}

        def listen() -> None:
            import psycopg

            connected_before = False
            while not stopping.is_set():
                try:
                    with psycopg.connect(url, autocommit=True, connect_timeout=5, **extra) as connection:
                        connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                        if connected_before:
                            reactor.callFromThread(callback)  # what was sent while we were away
                        connected_before = True
                        while not stopping.is_set():
                            for _ in connection.notifies(timeout=0.5, stop_after=1):
                                reactor.callFromThread(callback)
                except Exception as e:
                    if stopping.is_set():
                        return
                    reactor.callFromThread(
                        self._log.warn, "Change notifications from {store} interrupted: {error}; reconnecting",
                        store=self.engine.description, error=_one_line(e),
                    )
                    stopping.wait(1.0)

        thread = threading.Thread(target=listen, name="jobhost-store-listen", daemon=True)
        thread.start()

        def stop() -> None:
            stopping.set()

        return stop

    def check(self) -> Deferred:
        """Fire True when the schema row this store opened is still there; else StoreError."""

        def probe(cursor):
            cursor.execute(self.engine.sql("SELECT store_id FROM jobhost_schema WHERE id = 1"))
            row = cursor.fetchone()
            if row is None or row[0] != self._store_id:
                raise StoreError(f"{self.engine.description}: the store's schema row is missing or was replaced")
            return True

        return self._run(probe)

    # -- domain records -------------------------------------------------------------------

    def _select_domain(self, cursor, hostname: str, for_update: bool = False) -> DomainRecord | None:
        suffix = " FOR UPDATE" if for_update and self.engine.name == "postgresql" else ""
        cursor.execute(self.engine.sql("SELECT doc FROM domains WHERE hostname = ?" + suffix), (hostname,))
        row = cursor.fetchone()
        return None if row is None else _parse("domain", hostname, row[0], DomainRecord, "hostname")

    def _write_domain(self, cursor, record: DomainRecord) -> None:
        cursor.execute(
            self.engine.sql(
                "INSERT INTO domains (hostname, state, next_attempt, version, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (hostname) DO UPDATE SET state = excluded.state, "
                "next_attempt = excluded.next_attempt, version = excluded.version, doc = excluded.doc"
            ),
            (record.hostname, record.state, _ts(record.next_attempt), record.version, _doc(record)),
        )

    @staticmethod
    def _checked(hostname: object) -> None:
        if not is_normalised_hostname(hostname):
            raise StoreError(f"refusing to store a record under {hostname!r}: not a normalised hostname")

    def get_domain(self, hostname: str) -> Deferred:
        """Fire with the DomainRecord; KeyError when absent, BrokenRecord when unusable."""

        def get(cursor):
            record = self._select_domain(cursor, hostname)
            if record is None:
                raise KeyError(hostname)
            return record

        return self._run(get)

    def add_domain(self, record: DomainRecord) -> Deferred:
        """Store ``record`` unless its hostname has one; fire with ``(stored, created)``."""

        def add(cursor):
            self.engine.begin_write(cursor)
            self._checked(record.hostname)
            existing = self._select_domain(cursor, record.hostname, for_update=True)
            if existing is not None:
                return existing, False
            cursor.execute(
                self.engine.sql(
                    "INSERT INTO domains (hostname, state, next_attempt, version, doc) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (hostname) DO NOTHING"
                ),
                (record.hostname, record.state, _ts(record.next_attempt), record.version, _doc(record)),
            )
            if cursor.rowcount == 0:  # another node inserted it between our read and write
                return self._select_domain(cursor, record.hostname), False
            self._record_change(cursor, record.hostname, domain_change_kinds(None, record))
            return record, True

        return self._run(add)

    def put_domain(self, record: DomainRecord) -> Deferred:
        """Create or replace the record as it is (for tools copying stores); fire with None."""

        def put(cursor):
            self.engine.begin_write(cursor)
            self._checked(record.hostname)
            try:
                old = self._select_domain(cursor, record.hostname, for_update=True)
            except BrokenRecord:
                old = None
            self._write_domain(cursor, record)
            self._record_change(
                cursor, record.hostname, domain_change_kinds(old, record) or frozenset((ChangeKind.STATE,))
            )

        return self._run(put)

    def update_domain(self, hostname: str, change: Callable[[DomainRecord], DomainRecord]) -> Deferred:
        """Apply the pure ``change`` in one transaction holding the row (``FOR UPDATE`` / SQLite's write lock)."""

        def update(cursor):
            self.engine.begin_write(cursor)
            old = self._select_domain(cursor, hostname, for_update=True)
            if old is None:
                raise KeyError(hostname)
            new = change(old)
            if new is old or new == old:
                return old
            if new.hostname != hostname:
                raise StoreError(f"a change to {hostname} returned a record for {new.hostname!r}")
            new = attrs.evolve(new, version=old.version + 1)
            self._write_domain(cursor, new)
            self._record_change(cursor, hostname, domain_change_kinds(old, new))
            return new

        return self._run(update)

    def delete_domain(self, hostname: str) -> Deferred:
        """Delete the record; fire with None, or fail with KeyError if none."""

        def delete(cursor):
            self.engine.begin_write(cursor)
            try:
                old = self._select_domain(cursor, hostname, for_update=True)
            except BrokenRecord:
                old = None
            cursor.execute(self.engine.sql("DELETE FROM domains WHERE hostname = ?"), (hostname,))
            if cursor.rowcount == 0:
                raise KeyError(hostname)
            self._record_change(cursor, hostname, domain_change_kinds(old, None))

        return self._run(delete)

    def _list(self, table: str, cls_, kind: str, where: str, params: tuple, after, limit, include_broken):
        def run(cursor):
            clauses, args = ([where], list(params)) if where else ([], [])
            if after is not None:
                clauses.append("hostname > ?")
                args.append(after)
            query = f"SELECT hostname, doc FROM {table}"
            if clauses:
                query += " WHERE " + " AND ".join(clauses)
            query += " ORDER BY hostname"
            if limit is not None:
                query += f" LIMIT {max(int(limit), 0)}"  # a negative LIMIT is no limit to SQLite
            cursor.execute(self.engine.sql(query), args)
            return self._rows(kind, cursor.fetchall(), cls_, "hostname", include_broken)

        return self._run(run)

    def _rows(self, kind: str, rows, cls_, key_field: str, include_broken: bool = False) -> list:
        """Parse ``(key, doc)`` rows; a row that cannot be used is kept as its BrokenRecord
        (``include_broken``) or logged and skipped."""
        out = []
        for key, doc in rows:
            try:
                out.append(_parse(kind, key, doc, cls_, key_field))
            except BrokenRecord as e:
                if include_broken:
                    out.append(e)
                else:
                    self._log.error("Skipping a store row: {reason}", reason=e.message)
        return out

    def list_domains(self, state=None, after=None, limit=None, include_broken=False, prefix=None) -> Deferred:
        """Fire with DomainRecords ordered by hostname (see ``IStore.list_domains``).

        A ``prefix`` is a range of the primary key (``prefix <= hostname < prefix + "~"``:
        ``~`` sorts after every character a hostname may hold, in byte order and in
        PostgreSQL's ``COLLATE "C"``), so it seeks instead of scanning.
        """
        clauses, args = [], []
        if state is not None:
            clauses.append("state = ?")
            args.append(state)
        if prefix:
            clauses.append("hostname >= ? AND hostname < ?")
            args.extend((prefix, prefix + "~"))
        where, params = " AND ".join(clauses), tuple(args)
        return self._list("domains", DomainRecord, "domain", where, params, after, limit,
                          include_broken and state is None)

    def due_domains(self, now: datetime, cursor: Any = None, limit: int = 500) -> Deferred:
        """Fire with a :class:`DuePage` (see ``IStore.due_domains``), read through the ``next_attempt`` index.

        Records with no ``next_attempt`` come first (by hostname), then those due
        by ``(next_attempt, hostname)``; the cursor is the last row's place in that
        order, so a page costs its own rows, however many hostnames are stored.
        """
        at = now.timestamp()
        limit = max(int(limit), 1)
        removed = DomainState.REMOVED

        def run(db):
            rows: list = []
            if cursor is None or cursor[0] == "null":
                query = "SELECT hostname, next_attempt, doc FROM domains WHERE next_attempt IS NULL AND state <> ?"
                args: list = [removed]
                if cursor is not None:
                    query += " AND hostname > ?"
                    args.append(cursor[1])
                db.execute(self.engine.sql(query + f" ORDER BY next_attempt, hostname LIMIT {limit}"), args)
                rows = db.fetchall()
            if len(rows) < limit:
                query = "SELECT hostname, next_attempt, doc FROM domains WHERE next_attempt <= ? AND state <> ?"
                args = [at, removed]
                if cursor is not None and cursor[0] == "at":
                    # The ">=" lets the index range start at the cursor; the OR picks up after it.
                    query += " AND next_attempt >= ? AND (next_attempt > ? OR hostname > ?)"
                    args += [cursor[1], cursor[1], cursor[2]]
                db.execute(self.engine.sql(query + f" ORDER BY next_attempt, hostname LIMIT {limit - len(rows)}"), args)
                rows += db.fetchall()
            db.execute(
                self.engine.sql(
                    "SELECT next_attempt FROM domains WHERE next_attempt > ? AND state <> ? "
                    "ORDER BY next_attempt LIMIT 1"
                ),
                (at, removed),
            )
            later = db.fetchone()
            records: list = []
            for hostname, _, doc in rows:
                try:
                    records.append(_parse("domain", hostname, doc, DomainRecord, "hostname"))
                except BrokenRecord as e:
                    records.append(e)
            next_cursor = None
            if len(rows) >= limit:
                hostname, next_attempt = rows[-1][0], rows[-1][1]
                next_cursor = ("null", hostname) if next_attempt is None else ("at", next_attempt, hostname)
            soonest = None if later is None else datetime.fromtimestamp(later[0], timezone.utc)
            return DuePage(tuple(records), next_cursor, soonest)

        return self._run(run)

    def record_counts(self, now: datetime, windows) -> Deferred:
        """Fire with :class:`RecordCounts` from ``COUNT`` queries over the state and ``not_after`` indexes.

        Unusable rows are not counted (``broken`` is None): that needs every row parsed.
        """

        def run(db):
            db.execute("SELECT state, COUNT(*) FROM domains GROUP BY state")
            domains = {state: int(n) for state, n in db.fetchall()}
            db.execute("SELECT COUNT(*) FROM certificates")
            certificates = int(db.fetchone()[0])
            expiring = {}
            for name, width in windows.items():
                db.execute(self.engine.sql("SELECT COUNT(*) FROM certificates WHERE not_after <= ?"),
                           ((now + width).timestamp(),))
                expiring[name] = int(db.fetchone()[0])
            return RecordCounts(domains=domains, certificates=certificates, expiring=expiring)

        return self._run(run)

    # -- certificate records -------------------------------------------------------------

    def _select_certificate(self, cursor, hostname: str) -> CertificateRecord | None:
        # No FOR UPDATE: every writer of a certificate row first takes the "certificate:" lock.
        cursor.execute(self.engine.sql("SELECT doc FROM certificates WHERE hostname = ?"), (hostname,))
        row = cursor.fetchone()
        return None if row is None else _parse("certificate", hostname, row[0], CertificateRecord, "hostname")

    def _write_certificate(self, cursor, record: CertificateRecord) -> None:
        cursor.execute(
            self.engine.sql(
                "INSERT INTO certificates (hostname, not_after, fingerprint, doc) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (hostname) DO UPDATE SET not_after = excluded.not_after, "
                "fingerprint = excluded.fingerprint, doc = excluded.doc"
            ),
            (record.hostname, _ts(record.not_after), record.fingerprint, _doc(record)),
        )

    def get_certificate(self, hostname: str) -> Deferred:
        """Fire with the CertificateRecord; KeyError when absent, BrokenRecord when unusable."""

        def get(cursor):
            record = self._select_certificate(cursor, hostname)
            if record is None:
                raise KeyError(hostname)
            return record

        return self._run(get)

    def put_certificate(self, record: CertificateRecord) -> Deferred:
        """Create or replace the certificate in one transaction; fire with None."""

        def put(cursor):
            self.engine.begin_write(cursor)
            self._checked(record.hostname)
            self.engine.lock(cursor, "certificate:" + record.hostname)
            try:
                old = self._select_certificate(cursor, record.hostname)
            except BrokenRecord:
                old = None
            self._write_certificate(cursor, record)
            self._record_change(cursor, record.hostname, certificate_change_kinds(old, record))

        return self._run(put)

    def set_renewal_info(self, hostname: str, fingerprint: str, ari) -> Deferred:
        """Store ``ari`` on the certificate if it is still the one with ``fingerprint``; fire True/False."""

        def set_info(cursor):
            self.engine.begin_write(cursor)
            self.engine.lock(cursor, "certificate:" + hostname)
            current = self._select_certificate(cursor, hostname)
            if current is None or current.fingerprint != fingerprint:
                return False
            self._write_certificate(cursor, attrs.evolve(current, ari=ari))
            self._record_change(cursor, hostname, frozenset((ChangeKind.RENEWAL_INFO,)))
            return True

        return self._run(set_info)

    def delete_certificate(self, hostname: str) -> Deferred:
        """Delete the certificate and record the change; fire with None (also when absent)."""

        def delete(cursor):
            self.engine.begin_write(cursor)
            self.engine.lock(cursor, "certificate:" + hostname)
            cursor.execute(self.engine.sql("DELETE FROM certificates WHERE hostname = ?"), (hostname,))
            if cursor.rowcount:
                self._record_change(cursor, hostname, frozenset((ChangeKind.CERTIFICATE,)))

        return self._run(delete)

    def list_certificates(self, after=None, limit=None, include_broken=False) -> Deferred:
        """Fire with CertificateRecords ordered by hostname."""
        return self._list("certificates", CertificateRecord, "certificate", "", (), after, limit, include_broken)

    def list_certificates_by_expiry(self, after=None, limit=None) -> Deferred:
        """Fire with CertificateRecords ordered by ``(not_after, hostname)``, seeking on ``not_after``."""

        def run(cursor):
            query, args = "SELECT hostname, doc FROM certificates", []
            if after is not None:
                query += " WHERE not_after > ? OR (not_after = ? AND hostname > ?)"
                args = [_ts(after[0]), _ts(after[0]), after[1]]
            query += " ORDER BY not_after, hostname"
            if limit is not None:
                query += f" LIMIT {max(int(limit), 0)}"
            cursor.execute(self.engine.sql(query), args)
            return self._rows("certificate", cursor.fetchall(), CertificateRecord, "hostname")

        return self._run(run)

    # -- change feed ---------------------------------------------------------------------

    def changes(self, cursor_value: int | None) -> Deferred:
        """Fire with ``(new_cursor, {hostname: kinds})`` since ``cursor_value`` (see ``IStore.changes``)."""

        def read(cursor):
            e = self.engine
            cursor.execute("SELECT COALESCE(MAX(id), 0) FROM changes")
            end = cursor.fetchone()[0]
            if cursor_value is None:
                return end, {}
            cursor.execute(e.sql("SELECT changes_floor FROM jobhost_schema WHERE id = 1"))
            floor = cursor.fetchone()[0]
            if cursor_value > end or cursor_value < floor:
                return end, None
            cursor.execute(
                e.sql("SELECT id, hostname, kinds FROM changes WHERE id > ? AND id <= ? ORDER BY id"),
                (cursor_value, end),
            )
            changed: dict[str, frozenset[str]] = {}
            for _, hostname, kinds in cursor.fetchall():
                found = frozenset(kinds.split(","))
                if not found <= ChangeKind.ALL:
                    found = ChangeKind.ALL
                changed[hostname] = changed.get(hostname, frozenset()) | found
            return end, changed

        return self._run(read)

    # -- challenges and accounts ------------------------------------------------------------

    def put_challenge(self, challenge: Challenge) -> Deferred:
        """Store an HTTP-01 challenge under its token; fire with None."""

        def put(cursor):
            cursor.execute(
                self.engine.sql(
                    "INSERT INTO challenges (token, doc) VALUES (?, ?) "
                    "ON CONFLICT (token) DO UPDATE SET doc = excluded.doc"
                ),
                (challenge.token, _doc(challenge)),
            )

        return self._run(put)

    def get_challenge(self, token: str) -> Deferred:
        """Fire with the Challenge for ``token``; KeyError if none."""

        def get(cursor):
            cursor.execute(self.engine.sql("SELECT doc FROM challenges WHERE token = ?"), (token,))
            row = cursor.fetchone()
            if row is None:
                raise KeyError(token)
            return _parse("challenge", token, row[0], Challenge, "token")

        return self._run(get)

    def delete_challenge(self, token: str) -> Deferred:
        """Forget a challenge; fire with None (also when absent)."""

        def delete(cursor):
            cursor.execute(self.engine.sql("DELETE FROM challenges WHERE token = ?"), (token,))

        return self._run(delete)

    def get_account(self, directory_url: str) -> Deferred:
        """Fire with the Account for that CA directory; KeyError if none."""

        def get(cursor):
            cursor.execute(self.engine.sql("SELECT doc FROM accounts WHERE directory_url = ?"), (directory_url,))
            row = cursor.fetchone()
            if row is None:
                raise KeyError(directory_url)
            return _parse("account", directory_url, row[0], Account, "directory_url")

        return self._run(get)

    def list_accounts(self) -> Deferred:
        """Fire with every readable Account, ordered by directory URL."""

        def run(cursor):
            cursor.execute("SELECT directory_url, doc FROM accounts ORDER BY directory_url")
            return self._rows("account", cursor.fetchall(), Account, "directory_url")

        return self._run(run)

    def put_account(self, account: Account) -> Deferred:
        """Create or replace the account for its directory URL; fire with None."""

        def put(cursor):
            cursor.execute(
                self.engine.sql(
                    "INSERT INTO accounts (directory_url, doc) VALUES (?, ?) "
                    "ON CONFLICT (directory_url) DO UPDATE SET doc = excluded.doc"
                ),
                (account.directory_url, _doc(account)),
            )

        return self._run(put)

    # -- leases and the order budget ---------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, expires_at: datetime, now: datetime) -> Deferred:
        """Take lease ``name`` for ``holder`` until ``expires_at`` if free, expired or ours; fire True/False."""

        def acquire(cursor):
            e = self.engine
            e.begin_write(cursor)
            e.lock(cursor, "lease:" + name)
            cursor.execute(e.sql("SELECT holder, expires_at FROM leases WHERE name = ?"), (name,))
            row = cursor.fetchone()
            if row is not None and row[0] != holder and row[1] > now.timestamp():
                return False
            cursor.execute(
                e.sql(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                ),
                (name, holder, expires_at.timestamp()),
            )
            return True

        return self._run(acquire)

    def release_lease(self, name: str, holder: str) -> Deferred:
        """Give up ``name`` if ``holder`` holds it; fire with None."""

        def release(cursor):
            cursor.execute(self.engine.sql("DELETE FROM leases WHERE name = ? AND holder = ?"), (name, holder))

        return self._run(release)

    def reserve_order(self, budget: str, now: datetime, window: timedelta, limit: int, take: bool = True) -> Deferred:
        """Take a slot of the shared order budget (see ``IStore.reserve_order``)."""

        def reserve(cursor):
            e = self.engine
            e.begin_write(cursor)
            e.lock(cursor, "budget:" + budget)
            since = (now - window).timestamp()
            cursor.execute(e.sql("DELETE FROM order_slots WHERE budget = ? AND taken_at <= ?"), (budget, since))
            cursor.execute(
                e.sql("SELECT taken_at FROM order_slots WHERE budget = ? ORDER BY taken_at"), (budget,)
            )
            taken = [row[0] for row in cursor.fetchall()]
            if len(taken) >= limit:
                return datetime.fromtimestamp(taken[0], tz=now.tzinfo) + window
            if take:
                cursor.execute(e.sql("INSERT INTO order_slots (budget, taken_at) VALUES (?, ?)"),
                               (budget, now.timestamp()))
            return None

        return self._run(reserve)


__all__ = ["CHANGES_CHANNEL", "CHANGES_KEPT", "Engine", "MIGRATIONS", "SCHEMA_VERSION", "SqlStore"]
