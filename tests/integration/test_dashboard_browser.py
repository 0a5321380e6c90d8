"""
The dashboard in a real headless Chromium, against ``twistd jobhost`` and a real Pebble.

Selenium drives Debian's ``chromium`` through Debian's ``chromium-driver`` (the same
version, so no driver download); ``.ci/run`` installs both and the ``selenium`` package
(the ``test`` extra).  One operator's walk: log in (a wrong token first), register a
hostname and watch it go from pending to active with no reload (the page's polling
script), open it, run diagnostics, renew, try a form without its CSRF token, remove with
confirmation, check an unregistered name.  Screenshots of every page are written to
``var/screenshots/`` in the repository (test artefacts; the README shows one).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from daemon import REPO
from stack import Stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = REPO / "var" / "screenshots"

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - CI installs it (pyproject's test extra)
    webdriver = None

_MISSING = webdriver is None or not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())
if _MISSING and os.environ.get("CI"):
    raise RuntimeError("the browser tests need selenium, chromium and chromium-driver: .ci/run installs them")
pytestmark = pytest.mark.skipif(_MISSING, reason="selenium, chromium or chromium-driver not installed")


@pytest.fixture
def stack(tmp_path):
    s = Stack.start(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def state_of(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "[data-hostname] [data-state]").get_attribute("data-state")


def test_operator_walkthrough(stack, browser):
    """Log in, watch a hostname become active without a reload, diagnose, renew, refuse CSRF, remove."""
    base = f"http://127.0.0.1:{stack.admin_port}"
    hostname = "jobs.acme-corp.test"
    waiter = WebDriverWait(browser, 40, poll_frequency=0.1)

    class wait:  # noqa: N801 - reads like WebDriverWait; says where the browser was on a timeout
        @staticmethod
        def until(condition):
            try:
                return waiter.until(condition)
            except Exception as e:
                raise AssertionError(
                    f"{e!r} at {browser.current_url}\n{browser.page_source[:3000]}\n--- log ---\n"
                    f"{stack.daemon.log()[-3000:]}"
                ) from None

    # Not logged in: the login form.
    browser.get(base + "/domains")
    assert browser.current_url == base + "/login"
    shot(browser, "login")

    # A wrong token is refused and no session cookie is set.
    browser.find_element(By.ID, "token").send_keys("not-the-admin-token-at-all")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait.until(lambda b: "That is not the admin token." in b.page_source)
    assert browser.get_cookie("jobhost_session") is None

    # The right token: the overview, and a session cookie with the flags it must have.
    browser.find_element(By.ID, "token").send_keys(stack.token)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait.until(lambda d: d.current_url == base + "/")
    cookie = browser.get_cookie("jobhost_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP on loopback; Secure is added over TLS
    assert cookie["expiry"] > time.time() + 3600
    assert stack.token not in cookie["value"]
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script sees it

    # Register from the domains page; the domain page then follows it to active by polling.
    browser.get(base + "/domains")
    browser.find_element(By.CSS_SELECTOR, "form.register input[name=hostname]").send_keys(hostname)
    browser.find_element(By.CSS_SELECTOR, "form.register button").click()
    wait.until(lambda d: d.current_url == f"{base}/domains/{hostname}")
    first_state = state_of(browser)
    assert first_state in ("pending", "issuing"), first_state
    browser.execute_script("window.__notReloaded = true;")
    wait.until(lambda d: state_of(d) == "active")
    assert browser.execute_script("return window.__notReloaded === true;"), "the page was reloaded"
    stack.wait_served(hostname)
    browser.refresh()
    assert "Let's Encrypt" not in browser.page_source  # issuer is Pebble's
    assert "Pebble" in browser.find_element(By.CSS_SELECTOR, "dl.certificate").text
    shot(browser, "domain")

    # Live diagnostics: DNS, CAA and the self-check pass for a hostname that points at us.
    browser.find_element(By.ID, "diagnose").click()
    wait.until(lambda d: "Diagnostics" in d.page_source)
    results = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
        for row in browser.find_elements(By.CSS_SELECTOR, "table.diagnostics tr.check")
    }
    assert results.get("self_check") == "pass", results
    assert results.get("certificate") == "pass", results
    shot(browser, "diagnostics")

    # Renew: a new certificate replaces the first.
    serial = stack.domain(hostname)["certificate"]["serial"]
    browser.find_element(By.ID, "renew").click()
    wait.until(lambda d: "Renewal requested." in d.page_source)
    stack.wait_state(hostname, ("active",), check=lambda doc: doc["certificate"]["serial"] != serial)

    # The same form without its CSRF token is refused, and nothing is renewed.
    serial = stack.domain(hostname)["certificate"]["serial"]
    browser.execute_script("document.querySelector('form[action$=\"/renew\"] input[name=csrf]').remove();")
    browser.find_element(By.ID, "renew").click()
    wait.until(lambda d: "CSRF token" in d.page_source)
    time.sleep(1.0)
    doc = stack.domain(hostname)
    assert doc["certificate"]["serial"] == serial and not doc["renew_requested"], doc

    # Remove, with confirmation: a wrong confirmation changes nothing, the hostname removes it.
    browser.get(f"{base}/domains/{hostname}")
    browser.find_element(By.ID, "remove").click()
    wait.until(lambda d: d.current_url == f"{base}/domains/{hostname}/remove")
    shot(browser, "remove")
    browser.find_element(By.ID, "confirm").send_keys("yes")
    browser.find_element(By.ID, "confirm-remove").click()
    wait.until(lambda d: "nothing was removed" in d.page_source)
    assert stack.domain(hostname)["state"] == "active"
    browser.back()
    field = browser.find_element(By.ID, "confirm")
    field.clear()
    field.send_keys(hostname)
    browser.find_element(By.ID, "confirm-remove").click()
    wait.until(lambda d: d.current_url.startswith(f"{base}/domains?"))
    assert stack.domain(hostname)["state"] == "removed"

    # Check a hostname that is not registered.
    browser.get(base + "/check?hostname=careers.beta-inc.test")
    assert "careers.beta-inc.test can be registered" in browser.find_element(By.ID, "verdict").text
    shot(browser, "check")

    # The domains table and the overview, after all that.
    stack.register("jobs.beta-inc.test")
    stack.wait_state("jobs.beta-inc.test", ("active",))
    browser.get(base + "/domains")
    assert "jobs.beta-inc.test" in browser.page_source
    shot(browser, "domains")
    browser.get(base + "/")
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart")
    shot(browser, "overview")
