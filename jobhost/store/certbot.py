"""
Bring certificates certbot already obtained into a jobhost store (``jobhost-store import-certbot``).

certbot keeps each lineage under ``<config dir>/live/<name>/`` as ``fullchain.pem``
and ``privkey.pem`` (symbolic links into ``archive/``).  Each lineage's
certificate is stored under every DNS name it covers (wildcards are skipped:
jobhost serves named hostnames), and each such hostname is registered, so the
daemon serves the certificate at once and renews it itself when it is due.
Importing again replaces what the last import stored and registers nothing
twice; a lineage that cannot be read is named and skipped.  Pure parsing plus
the store's own calls: no certbot code is used.
"""

from __future__ import annotations

import os
from datetime import datetime

import attrs

from jobhost.certs import parse_certificate
from jobhost.errors import ConfigError, InvalidCertificate, InvalidHostname
from jobhost.hostnames import normalise_hostname
from jobhost.store.interfaces import IStore
from jobhost.store.records import CertificateRecord, DomainRecord, DomainState, StateChange, certificate_record


@attrs.define
class ImportReport:
    """What an import did: hostnames stored and registered, lineages skipped with why."""

    stored: list[str] = attrs.field(factory=list)
    registered: list[str] = attrs.field(factory=list)
    skipped: list[tuple[str, str]] = attrs.field(factory=list)


def read_lineages(config_dir: str) -> tuple[list[tuple[str, CertificateRecord]], list[tuple[str, str]]]:
    """Read every ``live/<name>/`` lineage: ``([(hostname, record)], [(lineage, why skipped)])``.

    Blocking file reads: call it off the reactor thread (the tool runs before its reactor work).
    """
    live = os.path.join(config_dir, "live")
    try:
        names = sorted(n for n in os.listdir(live) if os.path.isdir(os.path.join(live, n)))
    except OSError as e:
        raise ConfigError(f"cannot read {live}: {e.strerror} (is {config_dir} certbot's config directory?)") from None
    found: list[tuple[str, CertificateRecord]] = []
    skipped: list[tuple[str, str]] = []
    for name in names:
        directory = os.path.join(live, name)
        try:
            with open(os.path.join(directory, "privkey.pem"), "rb") as f:
                key_pem = f.read()
            with open(os.path.join(directory, "fullchain.pem"), "rb") as f:
                chain_pem = f.read()
        except OSError as e:
            skipped.append((directory, f"cannot read {e.filename}: {e.strerror}"))
            continue
        try:
            parsed = parse_certificate(key_pem, chain_pem)
        except InvalidCertificate as e:
            skipped.append((directory, str(e)))
            continue
        hostnames = []
        for dns_name in parsed.names:
            if dns_name.startswith("*."):
                continue
            try:
                hostnames.append(normalise_hostname(dns_name))
            except InvalidHostname:
                continue
        if not hostnames:
            skipped.append((directory, "the certificate names no hostname jobhost can serve (only wildcards?)"))
            continue
        for hostname in hostnames:
            found.append((hostname, certificate_record(hostname, key_pem, chain_pem)))
    return found, skipped


async def import_certbot(
    config_dir: str, store: IStore, now: datetime, progress=None
) -> ImportReport:
    """Store every lineage's certificate under its hostnames and register them (see the module docstring)."""
    found, skipped = read_lineages(config_dir)
    report = ImportReport(skipped=list(skipped))
    if progress is not None:
        progress.start(len(found))
    for hostname, record in found:
        await store.put_certificate(record)
        report.stored.append(hostname)
        domain = DomainRecord(
            hostname=hostname, state=DomainState.PENDING, created_at=now, updated_at=now,
            history=(StateChange(at=now, state=DomainState.PENDING, reason="imported from certbot"),),
        )
        _, created = await store.add_domain(domain)
        if created:
            report.registered.append(hostname)
        if progress is not None:
            progress.advance()
    if progress is not None:
        progress.finish()
    return report


__all__ = ["ImportReport", "import_certbot", "read_lineages"]
