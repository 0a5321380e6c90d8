"""
``jobhost-store``: look at and change a store from the command line.

Subcommands::

    jobhost-store --store directory:var/store put-certificate HOSTNAME --key KEY.pem --chain FULLCHAIN.pem
    jobhost-store --store directory:var/store add-domain HOSTNAME [--page PAGE.json]
    jobhost-store --store directory:var/store list
    jobhost-store --store directory:var/store show HOSTNAME
    jobhost-store --store directory:var/store delete-certificate HOSTNAME
    jobhost-store copy --from directory:var/store --to sqlite:var/jobhost.db
    jobhost-store --store postgresql://jobhost@db/jobhost migrate
    jobhost-store --store sqlite:var/jobhost.db import-certbot /etc/letsencrypt

It goes through the same :class:`IStore` API as the daemon, so a running
daemon sharing the store sees each change on its change feed.  Relative store
paths start in the current directory.  Key material is never printed.  Errors
the operator can fix (a bad hostname, a key that does not match its
certificate, an unreadable file, a bad store URL, a ``directory:`` or
``sqlite:`` store that does not exist for a command that only reads it) print
one line to stderr and exit with status 2.  Commands that write create the
store when it does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Sequence, TextIO

import attrs
from twisted.internet.defer import Deferred, ensureDeferred

from jobhost.errors import JobhostError
from jobhost.hostnames import normalise_hostname
from jobhost.store.copy import PAGE_SIZE, read_all
from jobhost.store.factory import redacted_url, store_from_url
from jobhost.store.interfaces import IStore
from jobhost.store.records import DomainRecord, DomainState, StateChange, certificate_record
from jobhost.timeutil import now, to_iso

PROG = "jobhost-store"
#: Exit status for errors the operator can fix.
EXIT_ERROR = 2


class ToolError(Exception):
    """An operator error: its message is printed as one line and the tool exits 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jobhost-store``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Inspect and change a jobhost store.")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the store, e.g. directory:var/store or sqlite:var/jobhost.db (relative to the current directory)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    put = commands.add_parser("put-certificate", help="store a key and certificate chain for a hostname")
    put.add_argument("hostname")
    put.add_argument("--key", required=True, metavar="KEY.pem", help="the private key (PEM)")
    put.add_argument(
        "--chain", required=True, metavar="FULLCHAIN.pem", help="leaf certificate then intermediates (PEM)"
    )

    add = commands.add_parser("add-domain", help="register a hostname (idempotent)")
    add.add_argument("hostname")
    add.add_argument("--page", metavar="PAGE.json", help="the careers page document (JSON)")

    commands.add_parser("list", help="list hostnames with their state and certificate expiry")

    show = commands.add_parser("show", help="show a hostname's domain record and certificate facts")
    show.add_argument("hostname")

    delete = commands.add_parser("delete-certificate", help="delete a hostname's certificate")
    delete.add_argument("hostname")

    certbot = commands.add_parser(
        "import-certbot",
        help="store certbot's certificates (live/*/fullchain.pem + privkey.pem) and register their hostnames",
    )
    certbot.add_argument("config_dir", metavar="DIR", help="certbot's config directory, e.g. /etc/letsencrypt")

    commands.add_parser("migrate", help="create or migrate an SQL store's schema (the daemon also does at start)")

    copy = commands.add_parser(
        "copy",
        help="copy every domain, certificate and account to another store (rerun to finish an interrupted copy)",
    )
    copy.add_argument("--from", dest="source", metavar="URL", help="the store to read (default: --store)")
    copy.add_argument("--to", dest="target", required=True, metavar="URL", help="the store to write")
    return parser


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror or e}") from None


def _covers(names: Sequence[str], hostname: str) -> bool:
    """True when a certificate for ``names`` is valid for ``hostname`` (one-label wildcards)."""
    if hostname in names:
        return True
    parent = hostname.split(".", 1)[1] if "." in hostname else None
    return parent is not None and f"*.{parent}" in names


async def _get_or_none(d: Deferred) -> Any:
    try:
        return await d
    except KeyError:
        return None


async def _put_certificate(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    hostname = normalise_hostname(args.hostname)
    key_pem = _read(args.key)
    chain_pem = _read(args.chain)
    record = certificate_record(hostname, key_pem, chain_pem)
    if not _covers(record.names, hostname):
        names = ", ".join(record.names) or "no DNS names"
        raise ToolError(f"the certificate in {args.chain} is for {names}, not {hostname}")
    if record.not_after <= now(reactor):
        err.write(f"{PROG}: warning: the certificate for {hostname} expired at {to_iso(record.not_after)}\n")
    await store.put_certificate(record)
    out.write(
        f"stored certificate for {hostname}: expires {to_iso(record.not_after)}, sha256 {record.fingerprint}\n"
    )
    return 0


def _load_page(path: str) -> dict[str, Any]:
    """Read, check and normalise a careers page document.

    Raises:
        ToolError: the file is unreadable, not JSON, or breaks the page schema
            (every problem named).
    """
    # Imported here: only --page needs the page schema.
    from jobhost.pagedoc import validate_page

    try:
        page = json.loads(_read(path))
    except ValueError as e:
        raise ToolError(f"cannot parse {path}: {e}") from None
    try:
        return validate_page(page)
    except JobhostError as e:  # PageInvalid, naming every problem
        raise ToolError(f"{path}: {e}") from None


async def _add_domain(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    hostname = normalise_hostname(args.hostname)
    page = _load_page(args.page) if args.page else None
    at = now(reactor)
    # As jobhost.domains.new_record makes it (the store may not import the domain owner):
    # the history starts with the registration, so the way to active keeps it.
    record = DomainRecord(
        hostname=hostname, state=DomainState.PENDING, created_at=at, updated_at=at, page=page,
        history=(StateChange(at=at, state=DomainState.PENDING, reason="registered with jobhost-store"),),
    )
    stored, created = await store.add_domain(record)
    if created:
        out.write(f"registered {hostname} ({stored.state})\n")
    elif page is not None:
        # Only the page changes, atomically: a state written by a running daemon meanwhile is kept.
        stored = await store.update_domain(hostname, lambda r: attrs.evolve(r, page=page, updated_at=at))
        out.write(f"{hostname} was already registered ({stored.state}); page replaced\n")
    else:
        out.write(f"{hostname} was already registered ({stored.state})\n")
    return 0


async def _list(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    domains = {
        r.hostname: r for r in await read_all(lambda after: store.list_domains(after=after, limit=PAGE_SIZE))
    }
    certificates = {
        r.hostname: r
        for r in await read_all(lambda after: store.list_certificates(after=after, limit=PAGE_SIZE))
    }
    hostnames = sorted(set(domains) | set(certificates))
    width = max([len("HOSTNAME")] + [len(h) for h in hostnames])
    out.write(f"{'HOSTNAME':<{width}}  {'STATE':<10}  CERTIFICATE EXPIRES\n")
    for hostname in hostnames:
        state = domains[hostname].state if hostname in domains else "-"
        expires = to_iso(certificates[hostname].not_after) if hostname in certificates else "-"
        out.write(f"{hostname:<{width}}  {state:<10}  {expires}\n")
    return 0


async def _show(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    hostname = normalise_hostname(args.hostname)
    domain = await _get_or_none(store.get_domain(hostname))
    certificate = await _get_or_none(store.get_certificate(hostname))
    if domain is None and certificate is None:
        raise ToolError(f"nothing is stored for {hostname}")
    doc = {
        "hostname": hostname,
        "domain": domain.to_json() if domain is not None else None,
        # public_json never includes the key.
        "certificate": certificate.public_json() if certificate is not None else None,
    }
    out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 0


async def _delete_certificate(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    hostname = normalise_hostname(args.hostname)
    try:
        await store.get_certificate(hostname)
    except KeyError:
        raise ToolError(f"no certificate is stored for {hostname}") from None
    except JobhostError:
        pass  # unreadable: deleting it is exactly what the operator may want
    await store.delete_certificate(hostname)
    out.write(f"deleted certificate for {hostname}\n")
    return 0


async def _import_certbot(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    from jobhost.store.certbot import import_certbot
    from jobhost.store.copy import Progress

    report = await import_certbot(args.config_dir, store, now(reactor), Progress(err, "imported"))
    for lineage, reason in report.skipped:
        err.write(f"{PROG}: skipped {lineage}: {reason}\n")
    out.write(
        f"stored {len(report.stored)} certificates, registered {len(report.registered)} new hostnames"
        + (f"; skipped {len(report.skipped)} lineages" if report.skipped else "") + "\n"
    )
    return EXIT_ERROR if report.skipped else 0


async def _migrate(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    from jobhost.store.sql import SCHEMA_VERSION, SqlStore

    if not isinstance(store, SqlStore):
        out.write("this store has no schema to migrate\n")
        return 0
    await store.open()
    out.write(f"{store.engine.description}: schema at version {SCHEMA_VERSION}\n")
    return 0


async def _copy(reactor, store: IStore, args, out: TextIO, err: TextIO) -> int:
    from jobhost.store.copy import Progress, copy_store

    target = store_from_url(args.target, reactor, os.getcwd())
    report = await copy_store(store, target, Progress(err, "copied"))
    for what, reason in report.skipped:
        err.write(f"{PROG}: skipped {what}: {reason}\n")
    out.write(
        f"copied {report.domains} domains, {report.certificates} certificates and {report.accounts} accounts "
        f"to {redacted_url(args.target)}" + (f"; skipped {len(report.skipped)} unreadable" if report.skipped else "")
        + "\n"
    )
    return EXIT_ERROR if report.skipped else 0


_COMMANDS = {
    "put-certificate": _put_certificate,
    "add-domain": _add_domain,
    "list": _list,
    "show": _show,
    "delete-certificate": _delete_certificate,
    "copy": _copy,
    "migrate": _migrate,
    "import-certbot": _import_certbot,
}


async def run(
    reactor, args: argparse.Namespace, store: IStore, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Carry out one parsed command against ``store``; return the exit status.

    Operator errors are written to ``err`` as one line (no traceback) and
    give :data:`EXIT_ERROR`.

    Args:
        reactor: The clock for timestamps (``seconds()``).
        args: From :func:`build_parser`.
        store: The store to use.
        out, err: Where to write results and errors (default: stdout, stderr).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        return await _COMMANDS[args.command](reactor, store, args, out, err)
    except (ToolError, JobhostError) as e:
        err.write(f"{PROG}: error: {e}\n")
        return EXIT_ERROR


#: Commands that only read the store: one that does not exist is an error for them (building
#: it would create an empty one, and they would report an empty store and succeed).
_READING = frozenset(("list", "show", "delete-certificate", "copy"))


def missing_store(url: str, base_dir: str) -> str | None:
    """The path a ``directory:`` or ``sqlite:`` store URL names, when nothing is there; else None.

    Other stores (PostgreSQL, memory) say for themselves whether they can be reached.
    """
    scheme, _, rest = url.partition(":")
    if scheme.lower() not in ("directory", "sqlite") or not rest.strip():
        return None
    path = os.path.abspath(os.path.join(base_dir, os.path.expanduser(rest)))
    return None if os.path.exists(path) else path


async def _main(reactor, args: argparse.Namespace) -> None:
    source = getattr(args, "source", None)
    url = source or args.store
    if not url:
        sys.stderr.write(f"{PROG}: error: name the store with --store URL" +
                         (" or --from URL" if args.command == "copy" else "") + "\n")
        raise SystemExit(EXIT_ERROR)
    missing = missing_store(url, os.getcwd()) if args.command in _READING else None
    if missing is not None:
        option = "--from" if source else "--store"
        sys.stderr.write(f"{PROG}: error: no store at {missing} ({option} {redacted_url(url)}): check the path "
                         "(relative to the current directory); the daemon creates its store when it first starts\n")
        raise SystemExit(EXIT_ERROR)
    try:
        store = store_from_url(url, reactor, os.getcwd())
    except JobhostError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        raise SystemExit(EXIT_ERROR) from None
    try:
        code = await run(reactor, args, store)
    except Exception:
        sys.stderr.write(f"{PROG}: unexpected error:\n{traceback.format_exc()}")
        code = 1
    if code:
        raise SystemExit(code)


def _log_warnings_to_stderr() -> None:
    """Show the store's warnings and errors (e.g. a skipped corrupt file) on stderr."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``jobhost-store`` console script; exits with the status."""
    from twisted.internet.task import react

    args = build_parser().parse_args(argv)
    _log_warnings_to_stderr()
    react(lambda reactor: ensureDeferred(_main(reactor, args)))


if __name__ == "__main__":
    main()


__all__ = ["EXIT_ERROR", "ToolError", "build_parser", "main", "missing_store", "run"]
