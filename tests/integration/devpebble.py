"""
Pebble and pebble-challtestsrv on fixed loopback ports, for trying jobhost by hand.

Run it from the repository root and leave it running; Ctrl-C stops both::

    python tests/integration/devpebble.py

It prints the ACME directory URL, the CA bundle jobhost must trust to talk to Pebble
(``[acme] ca_bundle``), the Pebble root that certificates jobhost obtains chain to (for
``curl --cacert``), and the DNS server (``[preflight] resolvers``).  challtestsrv answers
every A query with 127.0.0.1, so any hostname "points at" this machine; change that with
its management API, e.g.::

    curl -s -d '{"host": "old.acme-corp.test.", "addresses": ["198.51.100.7"]}' \\
        http://127.0.0.1:8055/add-a

Pebble connects for HTTP-01 to ``--http-port`` (jobhost's ``[listen] http``).  Files go
to ``--dir`` (``var/pebble`` by default, which git ignores).  The certificate of Pebble's
HTTPS listener is kept across restarts, but Pebble makes a new issuing root on every
start (a new ``pebble-root.pem``) and forgets its accounts.  docs/pebble.md is the whole
walk-through.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509

from acme_servers import CHALLTESTSRV, PEBBLE, HarnessTLS


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``args`` in its own session (Ctrl-C reaches only this script), appending output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL after 5 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(5)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _wait(url: str, process: subprocess.Popen, log: Path, context: ssl.SSLContext | None = None) -> bytes:
    """Wait until ``url`` answers 2xx (or the process dies); return the body."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{Path(process.args[0]).name} exited; the end of {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return b""
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within 15 s; see {log}")


def _listener_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """The certificate of Pebble's HTTPS listener and the CA that signed it: kept across restarts
    (a running jobhost trusts the CA it read at start-up), made anew when missing or expiring.

    Returns:
        ``(acme-ca.pem, cert.pem, key.pem)`` in ``workdir``.
    """
    acme_ca, cert_path, key_path = workdir / "acme-ca.pem", workdir / "cert.pem", workdir / "key.pem"
    try:
        leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
        fresh = leaf.not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=1)
        if fresh and acme_ca.exists() and key_path.exists():
            return acme_ca, cert_path, key_path
    except (OSError, ValueError):
        pass
    tls = HarnessTLS.create(str(workdir))  # writes ca.pem, cert.pem, key.pem (0600)
    os.replace(tls.ca_bundle_path, acme_ca)
    return acme_ca, cert_path, key_path


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (as a config would name it)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """Start challtestsrv and Pebble, print where they are, wait for Ctrl-C; return the exit status."""
    parser = argparse.ArgumentParser(description="Run Pebble and challtestsrv on loopback until Ctrl-C.")
    parser.add_argument("--dir", default="var/pebble", help="where the CA files and logs go (default var/pebble)")
    parser.add_argument("--http-port", type=int, default=5002, help="jobhost's HTTP port, for HTTP-01 (5002)")
    parser.add_argument("--acme-port", type=int, default=14000, help="Pebble's ACME port (14000)")
    parser.add_argument("--management-port", type=int, default=15000, help="Pebble's management port (15000)")
    parser.add_argument("--dns-port", type=int, default=8053, help="challtestsrv's DNS port, UDP and TCP (8053)")
    parser.add_argument("--dns-management-port", type=int, default=8055, help="challtestsrv's API port (8055)")
    parser.add_argument("--nonce-reject", type=int, default=0, help="percent of nonces Pebble refuses (0)")
    options = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly when killed, too
    workdir = Path(options.dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    acme_ca, cert_path, key_path = _listener_tls(workdir)
    config = workdir / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{options.acme_port}",
        "managementListenAddress": f"127.0.0.1:{options.management_port}",
        "certificate": str(cert_path),
        "privateKey": str(key_path),
        "httpPort": options.http_port,
        "tlsPort": 5001,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}, indent=2))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT=str(options.nonce_reject))
    dns_log, pebble_log = workdir / "challtestsrv.log", workdir / "pebble.log"
    dns = _spawn(
        [CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "",
         "-tlsalpn01", "", "-dns01", f"127.0.0.1:{options.dns_port}",
         "-management", f"127.0.0.1:{options.dns_management_port}"],
        dns_log, env,
    )
    pebble = None
    try:
        _wait(f"http://127.0.0.1:{options.dns_management_port}/", dns, dns_log)
        pebble = _spawn(
            [PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{options.dns_port}", "-strict=false"],
            pebble_log, env,
        )
        context = ssl.create_default_context(cafile=str(acme_ca))
        directory = f"https://127.0.0.1:{options.acme_port}/dir"
        _wait(directory, pebble, pebble_log, context)
        root = _wait(f"https://127.0.0.1:{options.management_port}/roots/0", pebble, pebble_log, context)
        root_path = workdir / "pebble-root.pem"
        root_path.write_bytes(root)
        acme_ca, root_path, pebble_log, dns_log = (_shown(p) for p in (acme_ca, root_path, pebble_log, dns_log))
        print(
            f"Pebble is up (logs in {pebble_log} and {dns_log}).\n"
            f"  ACME directory    {directory}\n"
            f"  CA bundle         {acme_ca}   ([acme] ca_bundle: Pebble's HTTPS listener)\n"
            f"  Pebble root       {root_path}   (curl --cacert: certificates jobhost obtains)\n"
            f"  DNS               127.0.0.1:{options.dns_port}   ([preflight] resolvers; every A is 127.0.0.1)\n"
            f"  DNS API           http://127.0.0.1:{options.dns_management_port}   (/add-a, /set-cname, /add-caa...)\n"
            f"  HTTP-01 port      {options.http_port}   ([listen] http and [preflight] self_check_port)\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while dns.poll() is None and pebble.poll() is None:
            time.sleep(0.5)
        print("Pebble or challtestsrv exited; see the logs above.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping.")
        return 0
    finally:
        if pebble is not None:
            _stop(pebble)
        _stop(dns)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
