"""The daemon's TLS configuration against Mozilla's profiles, as sslyze checks it.

sslyze pins an older ``cryptography`` than jobhost needs, so it lives in its own venv
(made once per machine under ``~/.cache/jobhost-tests/``, from PyPI) and runs as a
subprocess against the real daemon on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon import Daemon, free_port, store_tool
from test_daemon import config_text

from jobhost.testing import TestCA

SSLYZE = "sslyze==6.3.1"
HOSTNAME = "jobs.sslyze.test"


@pytest.fixture(scope="module")
def sslyze() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jobhost-tests" / "sslyze-venv"
    python = cache / "bin" / "python"
    if not (cache / "ok").exists():
        made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache)], capture_output=True, text=True)
        if made.returncode == 0:
            made = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", SSLYZE], capture_output=True, text=True, timeout=600
            )
        if made.returncode != 0:
            pytest.skip(f"cannot install {SSLYZE} into {cache}: {made.stderr.strip()[-300:]}")
        (cache / "ok").write_text(SSLYZE)
    return python


def scan(sslyze: Path, tmp_path: Path, profile: str, tls_extra: str = "") -> str:
    http, https, admin = free_port(), free_port(), free_port()
    text = config_text(http, https, admin)
    text = text.replace("cache_size = 10000\n", f"cache_size = 10000\n{tls_extra}")
    daemon = Daemon(tmp_path, text)
    daemon.start()
    try:
        daemon.wait_listening(https)
        ca = TestCA.create("sslyze CA")
        key, chain = ca.issue(HOSTNAME)
        (tmp_path / "key.pem").write_bytes(key)
        (tmp_path / "chain.pem").write_bytes(chain)
        (tmp_path / "ca.pem").write_bytes(ca.root_pem)
        put = store_tool(tmp_path, "put-certificate", HOSTNAME, "--key", "key.pem", "--chain", "chain.pem",
                         store="sqlite:var/jobhost.db")
        assert put.returncode == 0, put.stderr
        time.sleep(2.5)  # the change poller's 2 s
        result = subprocess.run(
            [str(sslyze), "-m", "sslyze", f"--mozilla_config={profile}", "--certinfo_ca_file",
             str(tmp_path / "ca.pem"), f"{HOSTNAME}:{https}{{127.0.0.1}}"],
            capture_output=True, text=True, timeout=300,
        )
        return result.stdout
    finally:
        daemon.stop()


def test_the_default_configuration_is_mozilla_intermediate(sslyze, tmp_path):
    report = scan(sslyze, tmp_path, "intermediate")
    assert f"{HOSTNAME}:" in report and "OK - Compliant." in report, report[-4000:]
    # what the issue measured before: no CBC or CCM suite, no X448 or secp521r1
    assert "CBC" not in report and "CCM" not in report
    assert "Supported curves:                  X25519, secp256r1, secp384r1" in report, report[-3000:]


def test_the_modern_profile_is_mozilla_modern(sslyze, tmp_path):
    report = scan(sslyze, tmp_path, "modern", 'profile = "modern"\n')
    assert "OK - Compliant." in report, report[-4000:]
    assert "The server accepted the following" in report
    assert "TLS 1.2 Cipher Suites:\n     Attempted to connect using 156 cipher suites; the server rejected all" in report
