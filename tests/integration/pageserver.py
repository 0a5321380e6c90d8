"""
Serve careers pages over real TLS on loopback for browser tests: ``python pageserver.py DIR``.

``DIR`` holds ``pages.json`` (``{hostname: page document}``), ``key.pem`` and
``chain.pem``.  Every hostname is registered in a memory store and served by the
real :class:`~jobhost.web.site.HttpsRootResource` through :func:`~jobhost.web.site.make_site`
on ``127.0.0.1``, port chosen by the system; the port is printed as one line on
stdout once listening.  Runs until killed.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from twisted.internet import reactor, ssl

from jobhost.pagedoc import validate_page
from jobhost.store.memory import MemoryStore
from jobhost.store.records import DomainRecord, DomainState
from jobhost.web.site import HttpsRootResource, PageCache, make_site


def main(directory: str) -> None:
    """Start serving the pages in ``directory``; print the port."""
    where = Path(directory)
    store = MemoryStore()
    now = datetime.now(timezone.utc)
    for hostname, page in json.loads((where / "pages.json").read_text()).items():
        store.domains[hostname] = DomainRecord(
            hostname=hostname, state=DomainState.ACTIVE, created_at=now, updated_at=now, page=validate_page(page)
        )
    certificate = ssl.PrivateCertificate.loadPEM((where / "key.pem").read_text() + (where / "chain.pem").read_text())
    site = make_site(HttpsRootResource(store=store, page_cache=PageCache(), clock=reactor), clock=reactor)
    port = reactor.listenSSL(0, site, certificate.options(), interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
