"""
A branded careers page in a real browser: headless Chromium screenshot and an axe-core accessibility check.

The page (30 openings in four departments, accent colour, logo-free so nothing is fetched from
outside) is served over real TLS on loopback by ``pageserver.py`` (the real
``HttpsRootResource``, CSP and all).  Chromium resolves the customer's hostname to 127.0.0.1
(``--host-resolver-rules``) and accepts the test CA's certificate
(``--ignore-certificate-errors``: the certificate is not what is tested here).

* The screenshot is taken with Chromium's own ``--headless --screenshot`` and saved as
  ``var/careers-page.png`` (``docs/careers-page.png`` is a copy of one, shown in the README).
* axe-core (``vendor/axe-core/axe.min.js``, version in ``vendor/axe-core/VERSION``, checked
  in: nothing is downloaded at test time) runs in the page through Selenium and Debian's
  ``chromedriver``, with the WCAG 2.0/2.1/2.2 A and AA rules; no violation of impact serious
  or critical may remain.  The same check runs on a job page and on a filtered view.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); outside CI the
test skips without them, in CI (``CI`` set) it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobhost.testing import TestCA

HOST = "jobs.acme-corp.test"
HERE = Path(__file__).parent
REPO = HERE.parent.parent
AXE = HERE / "vendor" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
DEPARTMENTS = ("Engineering", "Operations", "Sales", "Support")
PLACES = (
    {"locations": [{"locality": "Berlin", "country": "DE"}]},
    {"locations": [{"locality": "Austin", "region": "TX", "country": "US"}], "remote": {"countries": ["US"]}},
    {"remote": {"countries": ["DE", "FR", "GB"]}},
)

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromium-driver are missing: .ci/run must install them")
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)


def _page() -> dict:
    """A branded version 2 page with 30 openings in four departments and three kinds of place."""
    jobs = []
    for i in range(30):
        jobs.append({
            "id": f"job-{i + 1}",
            "title": f"{DEPARTMENTS[i % 4]} specialist {i + 1}",
            "department": DEPARTMENTS[i % 4],
            **PLACES[i % 3],
            "employment_type": ("FULL_TIME", "PART_TIME", "CONTRACTOR")[i % 3],
            "description": "Build and test anvils with a small team.\nYou will own what you ship.",
            "apply_url": f"https://apply.acme-corp.example/{i + 1}",
            "posted": "2026-11-01",
            "valid_through": "2099-12-31",
            "salary": {"currency": "EUR", "min": 50000 + 1000 * i, "max": 70000 + 1000 * i, "unit": "YEAR"},
        })
    return {
        "version": 2,
        "company": "ACME Corp",
        "intro": "We build rockets, anvils and the occasional giant magnet.\nCome build them with us.",
        "website": "https://acme-corp.example",
        "accent_color": "#8a1c7c",
        "jobs": jobs,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The page server's base URL (https://HOST:PORT), stopped after the module."""
    where = tmp_path_factory.mktemp("pages")
    key_pem, chain_pem = TestCA.create().issue(HOST)
    (where / "key.pem").write_bytes(key_pem)
    (where / "chain.pem").write_bytes(chain_pem)
    (where / "pages.json").write_text(json.dumps({HOST: _page()}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, str(HERE / "pageserver.py"), str(where)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        port = int(process.stdout.readline())
        yield f"https://{HOST}:{port}"
    finally:
        process.kill()
        process.wait()


def _browser_flags(port: str) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",  # runs as root in CI
        "--disable-gpu",
        "--hide-scrollbars",
        "--ignore-certificate-errors",
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
        "--no-first-run",
        "--disable-extensions",
    ]


@pytest.fixture(scope="module")
def driver(server):
    """Selenium driving Debian's chromium through Debian's chromedriver (no driver download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in _browser_flags(server.rsplit(":", 1)[1]):
        options.add_argument(flag.replace("--headless", "--headless=new"))
    options.add_argument("--window-size=1280,1600")
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_script_timeout(60)
    yield browser
    browser.quit()


def _axe(driver, url: str) -> list[dict]:
    """The axe-core violations of ``url`` (WCAG 2.x A and AA rules)."""
    driver.get(url)
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})"
        ".then(r => done({violations: r.violations, passes: r.passes.length}), e => done({error: String(e)}));"
    )
    assert "error" not in result, result
    assert result["passes"] > 10, "axe ran its rules"
    return result["violations"]


def test_screenshot_of_a_branded_grouped_filtered_page(server):
    """Chromium's own headless screenshot of the branded page filtered to Berlin is saved under var/."""
    out = REPO / "var" / "careers-page.png"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    url = f"{server}/?location=Berlin%2C+DE"
    subprocess.run(
        [CHROMIUM, *_browser_flags(""), "--window-size=1280,1500", f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=120,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000, "a blank page would be far smaller"


@pytest.mark.parametrize("path", ["/", "/?location=Berlin%2C+DE", "/?department=Sales&location=Remote", "/jobs/job-2"])
def test_axe_finds_no_serious_violation(driver, server, path):
    """axe-core's WCAG A/AA rules find nothing serious or critical on the list, filtered views and a job page."""
    violations = _axe(driver, server + path)
    serious = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []


def test_page_is_styled_under_its_csp(driver, server):
    """The browser applied the page's own stylesheet under the CSP (hash-allowed): links carry the accent colour."""
    driver.get(server + "/")
    colour = driver.execute_script(
        "return getComputedStyle(document.querySelector('ul.jobs a')).color"
    )
    assert colour == "rgb(138, 28, 124)"
