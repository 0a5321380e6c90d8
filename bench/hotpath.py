"""
CPU per call of the pieces of jobhost's ``GET /`` path that run for every HTTPS request.

A micro-benchmark backing the "Findings" of docs/benchmarks.md: it times,
with ``time.process_time`` over many calls in this process, what
``HttpsRootResource`` does per request after the TLS handshake:

- ``store``: decode the domain record file (``json.loads`` + ``DomainRecord.from_json``),
  as the directory store does on its thread for every request;
- ``validate``: ``validate_page(record.page)``, which the resource runs on every request;
- ``render``: ``render_list_page(hostname, page)`` flattened to bytes (``twisted.web.template``).

for the example page (``etc/example-page.json``, 2 openings) and a page with
25 openings.  No reactor, no sockets: the Deferreds fire synchronously.

Usage (from the repository root)::

    python bench/hotpath.py [--calls 2000] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, machine  # noqa: E402

from jobhost.store.records import DomainRecord, DomainState  # noqa: E402
from jobhost.pagedoc import validate_page  # noqa: E402
from jobhost.web.pages import render_list_page  # noqa: E402

HOSTNAME = "jobs.bench.test"


def per_call_us(function, calls: int) -> float:
    """CPU microseconds per call of ``function()`` (best of 3 batches of ``calls``)."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            function()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def rendered(hostname: str, page: dict) -> bytes:
    """The list page as bytes (the Deferred fires synchronously: no I/O in flattening)."""
    out: list[bytes] = []
    render_list_page(hostname, page).addCallback(out.append)
    return out[0]


def measure(page_doc: dict, calls: int) -> dict:
    now = datetime.now(timezone.utc)
    record = DomainRecord(hostname=HOSTNAME, state=DomainState.ACTIVE, created_at=now, updated_at=now,
                          page=validate_page(page_doc))
    raw = json.dumps(record.to_json()).encode()
    page = validate_page(record.page)
    return {
        "openings": len(page["jobs"]),
        "record_bytes": len(raw),
        "html_bytes": len(rendered(HOSTNAME, page)),
        "store_decode_us": per_call_us(lambda: DomainRecord.from_json(json.loads(raw)), calls),
        "validate_page_us": per_call_us(lambda: validate_page(record.page), calls),
        "render_list_page_us": per_call_us(lambda: rendered(HOSTNAME, page), calls),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per batch (2000)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    example = json.loads((REPO / "etc" / "example-page.json").read_text())
    big = copy.deepcopy(example)
    big["jobs"] = [dict(example["jobs"][i % 2], id=f"job-{i}") for i in range(25)]
    result = {"benchmark": "hotpath", "machine": machine(), "calls": args.calls,
              "pages": [measure(example, args.calls), measure(big, max(1, args.calls // 5))]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("CPU per call (best of 3 batches), one process, no I/O:")
        for p in result["pages"]:
            print(f"  {p['openings']:2} openings ({p['html_bytes']} B HTML, {p['record_bytes']} B record): "
                  f"decode record {p['store_decode_us']:.0f} us, validate_page {p['validate_page_us']:.0f} us, "
                  f"render_list_page {p['render_list_page_us']:.0f} us")
    return 0


__all__ = ["main", "measure", "per_call_us"]

if __name__ == "__main__":
    sys.exit(main())
