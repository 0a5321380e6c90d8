"""Tests for jobhost-admin: the real CLI against a real AdminResource listening on loopback."""

from __future__ import annotations

import io
import json
import os
import shlex
import tempfile
from datetime import timedelta

import attrs
import pytest
from admin_helpers import T0, TOKEN, FakeCertificateCache, FakeIssuer, FakePreflight, RecordingStore, make_domain
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from jobhost.domains import DomainService
from jobhost.admin.api import AdminResource, admin_site, domain_json
from jobhost.admin.cli import (
    EXIT_CHECK_FAILED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    AdminClient,
    ApiFailure,
    UsageError,
    build_parser,
    endpoint_to_url,
    format_diagnostics,
    format_domain,
    format_domain_list,
    format_failure,
    main,
)
from jobhost.certs import AriWindow
from jobhost.store.records import StateChange, certificate_record
from jobhost.testing import TestCA
from jobhost.timeutil import to_iso

HOST = "jobs.acme-corp.example"
PAGE = {"company": "Acme Corp", "jobs": [{"id": "eng-1", "title": "Engineer"}]}


@pytest.mark.parametrize(
    "endpoint,url",
    [
        ("tcp:8081:interface=127.0.0.1", "http://127.0.0.1:8081"),
        ("tcp:port=9000", "http://127.0.0.1:9000"),
        ("8081", "http://127.0.0.1:8081"),
        ("tcp:8081:interface=0.0.0.0", "http://127.0.0.1:8081"),
        ("tcp6:8081:interface=\\:\\:1", "http://[::1]:8081"),
        ("tcp6:8081:interface=\\:\\:", "http://[::1]:8081"),
        ("ssl:8443:privateKey=k.pem:interface=10.0.0.5", "https://10.0.0.5:8443"),
        ("tcp:8081", "http://127.0.0.1:8081"),
        ("ssl:8443", "https://127.0.0.1:8443"),
        ("TCP6:8081:interface=\\:\\:1", "http://[::1]:8081"),
        ("ssl:8443:privateKey=/etc/jobhost/key=v2.pem", "https://127.0.0.1:8443"),
        ("\\tcp:8081", "http://127.0.0.1:8081"),  # an escape even on the first character, as Twisted reads it
    ],
)
def test_endpoint_to_url(endpoint, url):
    """The [listen] admin endpoint string becomes the URL that reaches it."""
    assert endpoint_to_url(endpoint) == url


@pytest.mark.parametrize(
    "endpoint, message",
    [
        ("unix:/run/jobhost.sock", "cannot reach a unix: admin listener with HTTP; pass --url"),
        ("systemd:domain=INET:index=0", "cannot reach a systemd: admin listener with HTTP; pass --url"),
        ("tcp:interface=::1", "no port in the admin endpoint 'tcp:interface=::1'; pass --url"),
    ],
)
def test_endpoint_to_url_refuses_what_http_cannot_reach(endpoint, message):
    """UNIX sockets, systemd sockets and endpoints without a port need --url, and the message says why."""
    with pytest.raises(UsageError) as info:
        endpoint_to_url(endpoint)
    assert str(info.value) == message


def test_client_repr_hides_the_token_and_answers_are_awaited_60_seconds():
    """The token never shows in a repr (logs, tracebacks); the default wait is the documented 60 s."""
    client = AdminClient("http://127.0.0.1:8081", "s3cret-token")
    assert "s3cret-token" not in repr(client)
    assert client.timeout == 60.0
    assert build_parser().parse_args(["domains", "list"]).timeout == 60.0
    assert "(default 60)" in build_parser().format_help()


def test_usage_errors_exit_2_and_print_usage():
    """Missing or unknown arguments exit 2 with usage on standard error, nothing on standard output."""
    out, err = io.StringIO(), io.StringIO()
    assert main(["domains"], out, err) == EXIT_USAGE
    assert "usage: jobhost-admin domains" in err.getvalue()
    assert out.getvalue() == ""
    assert main(["domains", "list", "--state", "sleepy"], out, err) == EXIT_USAGE
    assert main(["--help"], out, err) == EXIT_OK
    assert "Exit status" in out.getvalue()
    for argv, usage in (([], "usage: jobhost-admin "), (["page"], "usage: jobhost-admin page")):
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, out, err) == 2, argv
        assert usage in err.getvalue() and "required" in err.getvalue()
        assert out.getvalue() == ""


def test_missing_token_file_exits_1():
    """An unreadable token file is reported and exits 1 without any request."""
    err = io.StringIO()
    assert main(["--token-file", "/nonexistent/admin.token", "domains", "list"], io.StringIO(), err) == EXIT_ERROR
    assert err.getvalue() == (
        "jobhost-admin: error: cannot read the admin token from /nonexistent/admin.token: No such file or directory\n"
    )


def test_empty_token_file_exits_1(tmp_path):
    """A token file with nothing but whitespace is reported as empty, without any request."""
    token_file = tmp_path / "admin.token"
    token_file.write_text("\n")
    err = io.StringIO()
    assert main(["--token-file", str(token_file), "domains", "list"], io.StringIO(), err) == 1
    assert err.getvalue() == f"jobhost-admin: error: the admin token file {token_file} is empty\n"


def test_unreadable_page_file_exits_2(tmp_path):
    """A page file that cannot be read is a usage error naming it, before any request."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    missing = tmp_path / "missing.json"
    err = io.StringIO()
    assert main(["--token-file", str(token_file), "page", "set", HOST, str(missing)], io.StringIO(), err) == 2
    assert err.getvalue().startswith(f"jobhost-admin: error: cannot read {missing}: ")


# ---------------------------------------------------------------- what is printed


def _certificate(hostname, ari=None):
    key_pem, chain_pem = TestCA.create().issue(hostname, lifetime=timedelta(days=90))
    return certificate_record(hostname, key_pem, chain_pem, ari=ari)


def test_domain_list_table():
    """One row per hostname: expiry or "-", next attempt or "-", the error of failing hostnames cut at 50."""
    certificate = _certificate("a.example.com")
    domains = [
        domain_json(make_domain("a.example.com"), certificate),
        domain_json(
            make_domain(
                "b.example.com", state="failing", next_attempt=T0, last_error={"code": "x", "message": "E" * 50}
            ),
            None,
        ),
        domain_json(make_domain("c.example.com", state="paused", last_error={"code": "x", "message": "F" * 51}), None),
    ]
    lines = format_domain_list(domains).splitlines()
    assert [line.split() for line in lines] == [
        ["HOSTNAME", "STATE", "EXPIRES", "NEXT", "ATTEMPT", "LAST", "ERROR"],
        ["a.example.com", "active", to_iso(certificate.not_after), "-"],
        ["b.example.com", "failing", "-", to_iso(T0), "E" * 50],
        ["c.example.com", "paused", "-", "-", "F" * 49 + "…"],
    ]
    assert all(line == line.rstrip() for line in lines)
    assert format_domain_list([]) == "No domains."


def test_domain_summary_shows_error_pause_certificate_window_and_last_ten_changes():
    """domains show prints the failure, the unpause link, the CA's renewal window and the 10 latest changes."""
    ari = AriWindow(start=T0 + timedelta(days=60), end=T0 + timedelta(days=61))
    history = tuple(
        StateChange(at=T0 + timedelta(minutes=i), state="failing", reason=None if i == 11 else f"try {i}")
        for i in range(12)
    )
    record = attrs.evolve(
        make_domain(
            HOST,
            state="paused",
            last_error={"code": "rateLimited", "message": "too many orders"},
            attempts=4,
            next_attempt=T0 + timedelta(hours=1),
            unpause_url="https://ca.example/unpause",
        ),
        history=history,
    )
    certificate = attrs.evolve(_certificate(HOST, ari=ari), acme_issuer="zerossl", directory_url="https://zerossl.test/dir")
    text = format_domain(domain_json(record, certificate))
    lines = text.splitlines()
    assert "  From:        zerossl (https://zerossl.test/dir)" in lines
    assert not any(line.startswith("  From:") for line in format_domain(domain_json(record, _certificate(HOST))).splitlines())
    assert "Attempts:      4 failed in a row" in lines
    assert f"Next attempt:  {to_iso(T0 + timedelta(hours=1))}" in lines
    assert "Last error:    rateLimited: too many orders" in lines
    assert "Unpause at:    https://ca.example/unpause" in lines
    assert f"  Renew in:    {to_iso(ari.start)} .. {to_iso(ari.end)} (CA's window)" in lines
    assert "Certificate:   none yet" not in lines
    shown = lines[lines.index("History:") + 1:]
    expected = [f"  {to_iso(h.at)}  failing   {h.reason}" for h in history[2:11]]
    assert shown == expected + [f"  {to_iso(history[11].at)}  failing"]


def test_domain_summary_of_a_new_hostname():
    """A hostname with no attempts, certificate or history yet shows zeros, dashes and "none yet"."""
    doc = {"hostname": HOST, "state": "pending", "created_at": to_iso(T0), "updated_at": to_iso(T0)}
    lines = format_domain(doc).splitlines()
    assert "Attempts:      0 failed in a row" in lines
    assert "Next attempt:  -" in lines
    assert "Page:          -" in lines
    assert lines[-1] == "Certificate:   none yet"
    assert not any(line.startswith(("Last error", "Unpause", "History")) for line in lines)
    record = domain_json(make_domain(HOST, state="pending"), None)
    assert not any(line.startswith("Unpause") for line in format_domain(record).splitlines())


def test_diagnostics_report():
    """PASS/FAIL/SKIP per check, hints only under failures, and a verdict line."""
    checks = [
        {"name": "dns", "passed": True, "message": "points here", "hint": "not needed"},
        {"name": "caa", "passed": None, "message": "skipped", "hint": None},
    ]
    passing = {"hostname": HOST, "state": "active", "ok": True, "checks": checks}
    assert format_diagnostics(passing) == (
        f"Diagnostics for {HOST} (state active):\n"
        "  PASS  dns          points here\n"
        "  SKIP  caa          skipped\n"
        "All checks passed."
    )
    failing = {
        "hostname": HOST,
        "state": "failing",
        "ok": False,
        "checks": [{"name": "certificate", "passed": False, "message": "none", "hint": "renew it"}],
    }
    assert format_diagnostics(failing) == (
        f"Diagnostics for {HOST} (state failing):\n"
        "  FAIL  certificate  none\n"
        "                     hint: renew it\n"
        "Some checks failed."
    )


@pytest.mark.parametrize(
    "failure, text",
    [
        (
            ApiFailure("not pointed here", 422, "preflight_failed", {"reasons": [{"fix": "add an A record"}, {}], "retryable": True}),
            "jobhost-admin: error: not pointed here\n  fix: add an A record\n"
            "  (this may be temporary: try again in a few minutes)",
        ),
        (
            ApiFailure("not pointed here", 422, "preflight_failed", {"reasons": [], "retryable": False}),
            "jobhost-admin: error: not pointed here",
        ),
        (
            ApiFailure("invalid page", 400, "invalid_page", {"errors": {"": "must be an object", "company": "required"}}),
            "jobhost-admin: error: invalid page\n  (page): must be an object\n  company: required",
        ),
        (
            ApiFailure("a valid admin token is required", 401, "unauthorized"),
            "jobhost-admin: error: a valid admin token is required\n"
            "  check --token-file (or [admin] token_file in --config)",
        ),
        (ApiFailure("x is not registered", 404, "not_found", {"errors": {"a": "b"}}), "jobhost-admin: error: x is not registered"),
    ],
)
def test_failure_messages(failure, text):
    """API errors print the message, then what the operator can do about that kind of error."""
    assert format_failure(failure) == text


class CliTests(TestCase):
    """jobhost-admin commands against admin_site() on 127.0.0.1:<ephemeral port>."""

    def setUp(self) -> None:
        self.store = RecordingStore()
        self.issuer = FakeIssuer(store=self.store)
        self.preflight = FakePreflight()
        self.resource = AdminResource(
            store=self.store,
            domains=DomainService(store=self.store, clock=reactor),
            issuer=self.issuer,
            clock=reactor,
            token=TOKEN,
            preflight=self.preflight,
            caches=FakeCertificateCache(),
        )
        self.port = reactor.listenTCP(0, admin_site(self.resource, clock=reactor), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.tmp = tempfile.mkdtemp()
        self.token_file = os.path.join(self.tmp, "admin.token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")

    def tearDown(self) -> None:
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)

    def cli(self, *argv: str, token_file: str | None = None, stdin: str = "") -> Deferred:
        """Run main() in a thread (it blocks); fire with (exit status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        args = ["--url", self.url, "--token-file", token_file or self.token_file, *argv]

        def run():
            return main(args, out, err, io.StringIO(stdin)), out.getvalue(), err.getvalue()

        return deferToThread(run)

    def write(self, name: str, content: str) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(content)
        return path

    def run_async(self, coroutine) -> Deferred:
        return Deferred.fromCoroutine(coroutine)

    def test_add_with_page_then_show_as_json(self):
        """domains add --page registers the hostname; --json output of show parses as the record."""
        page_file = self.write("page.json", json.dumps(PAGE))

        async def run():
            status, out, err = await self.cli("domains", "add", "Jobs.Acme-Corp.Example", "--page", page_file)
            self.assertEqual((status, err), (EXIT_OK, ""))
            self.assertIn(f"Registered {HOST}: state pending.", out)
            self.assertEqual(self.store.domains[HOST].page["company"], "Acme Corp")
            self.assertEqual(self.issuer.calls, [("kick", HOST)])
            status, out, err = await self.cli("--json", "domains", "show", HOST)
            self.assertEqual(status, EXIT_OK)
            doc = json.loads(out)
            self.assertEqual((doc["hostname"], doc["state"]), (HOST, "pending"))
            status, out, _ = await self.cli("domains", "show", HOST)
            self.assertIn("State:         pending", out)
            self.assertIn("Page:          Acme Corp (1 jobs)", out)

        return self.run_async(run())

    def test_add_refused_by_preflight_prints_the_reason_and_exits_1(self):
        """A failed preflight prints the API's message and the fix on stderr and exits 1."""
        self.preflight.passes = False

        async def run():
            status, out, err = await self.cli("domains", "add", HOST)
            self.assertEqual(status, EXIT_ERROR)
            self.assertEqual(out, "")
            self.assertIn(f"jobhost-admin: error: {HOST} has A 198.51.100.7", err)
            self.assertIn("fix: In the DNS for", err)
            self.assertEqual(self.store.domains, {})
            status, _, _ = await self.cli("domains", "add", HOST, "--skip-preflight")
            self.assertEqual(status, EXIT_OK)

        return self.run_async(run())

    def test_list_follows_cursors_and_prints_a_table(self):
        """domains list fetches every page; the table has a row per hostname, --json has them all."""
        names = [f"h{i:03}.example.com" for i in range(520)]
        for name in names:
            self.store.domains[name] = make_domain(name)
        self.store.domains["bad.example.com"] = make_domain(
            "bad.example.com", state="failing", last_error={"code": "x", "message": "CA said no"}
        )

        async def run():
            status, out, err = await self.cli("--json", "domains", "list")
            self.assertEqual(status, EXIT_OK, err)
            listed = [d["hostname"] for d in json.loads(out)["domains"]]
            self.assertEqual(listed, sorted(names + ["bad.example.com"]))
            status, out, _ = await self.cli("domains", "list", "--state", "failing")
            lines = out.splitlines()
            self.assertEqual(lines[0].split(), ["HOSTNAME", "STATE", "EXPIRES", "NEXT", "ATTEMPT", "LAST", "ERROR"])
            self.assertEqual(len(lines), 2)
            self.assertIn("CA said no", lines[1])
            status, out, _ = await self.cli("domains", "list", "--prefix", "nothing")
            self.assertEqual(out.strip(), "No domains.")

        return self.run_async(run())

    def test_show_prints_the_certificate(self):
        """domains show prints the certificate's serial and fingerprint, never the key."""
        ca = TestCA.create()
        self.store.domains[HOST] = make_domain(HOST)
        key_pem, chain_pem = ca.issue(HOST, lifetime=timedelta(days=90))
        record = certificate_record(HOST, key_pem, chain_pem)
        self.store.certificates[HOST] = record

        async def run():
            status, out, _ = await self.cli("domains", "show", HOST)
            self.assertEqual(status, EXIT_OK)
            self.assertIn(f"Serial:      {record.serial}", out)
            self.assertIn(record.fingerprint, out)
            self.assertNotIn("PRIVATE KEY", out)
            status, out, _ = await self.cli("--json", "domains", "show", HOST)
            self.assertEqual(json.loads(out)["certificate"]["serial"], record.serial)
            self.assertNotIn("PRIVATE KEY", out)

        return self.run_async(run())

    def test_remove_with_revoke_and_renew(self):
        """domains remove --revoke revokes and removes; renew of a removed hostname exits 1."""
        self.store.domains[HOST] = make_domain(HOST)

        async def run():
            status, out, _ = await self.cli("domains", "renew", HOST)
            self.assertEqual(status, EXIT_OK)
            self.assertIn("Renewal of", out)
            status, out, _ = await self.cli("--json", "domains", "remove", HOST, "--revoke")
            self.assertEqual(status, EXIT_OK)
            self.assertEqual(json.loads(out)["state"], "removed")
            self.assertEqual(self.issuer.calls, [("renew_now", HOST), ("forget", HOST)])
            status, _, err = await self.cli("domains", "renew", HOST)
            self.assertEqual(status, EXIT_ERROR)
            self.assertIn("was removed", err)

        return self.run_async(run())

    def test_list_leaves_out_removed_hostnames_unless_asked(self):
        """domains list shows live hostnames and counts the removed ones it left out; --all and --state removed
        show them (--json likewise)."""
        self.store.domains[HOST] = make_domain(HOST)
        self.store.domains["gone.example.com"] = make_domain("gone.example.com", state="removed")

        async def run():
            status, out, err = await self.cli("domains", "list")
            self.assertEqual((status, err), (EXIT_OK, ""))
            self.assertEqual([line.split()[0] for line in out.splitlines()[1:]], [HOST, "(1"])
            self.assertEqual(out.splitlines()[-1], "(1 removed not shown; --all shows them)")
            _, out, _ = await self.cli("--json", "domains", "list")
            self.assertEqual([d["hostname"] for d in json.loads(out)["domains"]], [HOST])
            _, out, _ = await self.cli("domains", "list", "--all")
            self.assertEqual([line.split()[:2] for line in out.splitlines()[1:]],
                             [["gone.example.com", "removed"], [HOST, "active"]])
            _, out, _ = await self.cli("--json", "domains", "list", "--state", "removed")
            self.assertEqual([d["hostname"] for d in json.loads(out)["domains"]], ["gone.example.com"])
            _, out, _ = await self.cli("domains", "list", "--prefix", "gone")
            self.assertEqual(out, "No domains.\n(1 removed not shown; --all shows them)\n")
            status, _, err = await self.cli("domains", "list", "--all", "--state", "active")
            self.assertEqual(status, EXIT_USAGE)
            self.assertIn("not allowed with argument", err)

        return self.run_async(run())

    def test_a_second_remove_says_it_was_already_removed(self):
        """Removing a removed hostname says it already was, exits 0, and sends no DELETE (nothing changes)."""
        self.store.domains[HOST] = make_domain(HOST)

        async def run():
            status, out, _ = await self.cli("domains", "remove", HOST)
            self.assertEqual((status, out), (EXIT_OK, f"Removed {HOST}: no longer served or renewed.\n"))
            removed = self.store.domains[HOST]
            status, out, err = await self.cli("domains", "remove", HOST, "--revoke")
            self.assertEqual((status, out, err), (EXIT_OK, f"{HOST} was already removed: nothing to do.\n", ""))
            self.assertEqual(self.store.domains[HOST], removed)
            self.assertEqual(self.issuer.calls, [("forget", HOST)])
            status, out, _ = await self.cli("--json", "domains", "remove", HOST)
            self.assertEqual((status, json.loads(out)["state"]), (EXIT_OK, "removed"))

        return self.run_async(run())

    def test_renew_suggests_a_follow_up_with_the_options_it_was_given(self):
        """domains renew suggests domains show with the --config (and --url, --token-file) it was given, and the
        suggestion works as printed."""
        config = self.write(
            "my config.toml",
            f'[listen]\nadmin = "tcp:{self.port.getHost().port}:interface=127.0.0.1"\n'
            f'[admin]\ntoken_file = "{self.token_file}"\n'
            '[preflight]\naddresses = ["127.0.0.1"]\n',
        )
        self.store.domains[HOST] = make_domain(HOST)

        def run(argv):
            out, err = io.StringIO(), io.StringIO()
            return main(argv, out, err), out.getvalue(), err.getvalue()

        async def check():
            status, out, err = await deferToThread(run, ["--config", config, "domains", "renew", HOST])
            self.assertEqual((status, err), (EXIT_OK, ""))
            suggested = out.strip().split("follow it with: ", 1)[1]
            self.assertEqual(suggested, f"jobhost-admin --config '{config}' domains show {HOST}")
            status, out, err = await deferToThread(run, shlex.split(suggested)[1:])
            self.assertEqual((status, err), (EXIT_OK, ""))
            self.assertIn(f"Hostname:      {HOST}", out)
            _, out, _ = await self.cli("domains", "renew", HOST)
            self.assertTrue(out.strip().endswith(
                f"jobhost-admin --url {self.url} --token-file {self.token_file} domains show {HOST}"), out)

        return self.run_async(check())

    def test_page_set_and_show(self):
        """page set stores a page from a file or stdin; page show --json prints it; bad pages list every error."""
        self.store.domains[HOST] = make_domain(HOST)
        page_file = self.write("page.json", json.dumps(PAGE))
        bad_file = self.write("bad.json", json.dumps({"company": "", "jobs": [{"id": "a"}]}))

        async def run():
            status, out, _ = await self.cli("page", "set", HOST, page_file)
            self.assertEqual(status, EXIT_OK)
            self.assertIn("Acme Corp, 1 jobs", out)
            status, out, _ = await self.cli("--json", "page", "show", HOST)
            self.assertEqual(json.loads(out), {**PAGE, "version": 2})
            status, _, _ = await self.cli("page", "set", HOST, "-", stdin=json.dumps({"company": "Stdin Co"}))
            self.assertEqual(status, EXIT_OK)
            self.assertEqual(self.store.domains[HOST].page, {"version": 2, "company": "Stdin Co", "jobs": []})
            status, _, err = await self.cli("page", "set", HOST, bad_file)
            self.assertEqual(status, EXIT_ERROR)
            self.assertIn("company: must not be empty", err)
            self.assertIn("jobs[0].title: required", err)
            status, _, err = await self.cli("page", "set", HOST, self.write("broken.json", "{"))
            self.assertEqual(status, EXIT_USAGE)
            self.assertIn("is not JSON", err)

        return self.run_async(run())

    def test_diagnose_exit_status_follows_the_checks(self):
        """diagnose prints PASS/FAIL lines with hints and exits 3 when a check fails."""
        self.store.domains[HOST] = make_domain(HOST)

        async def run():
            self.preflight.passes = False
            status, out, _ = await self.cli("diagnose", HOST)
            self.assertEqual(status, EXIT_CHECK_FAILED)
            self.assertEqual(status, 3)  # the documented number scripts test for
            self.assertIn("FAIL  dns", out)
            self.assertIn("hint: In the DNS for", out)
            self.assertIn("SKIP  self_check", out)
            status, out, _ = await self.cli("--json", "diagnose", HOST)
            self.assertFalse(json.loads(out)["ok"])

        return self.run_async(run())

    def test_diagnose_a_name_not_registered(self):
        """diagnose of an unregistered name runs DNS, CAA and the self-check, exits 3 if one fails, and stores nothing."""

        async def run():
            self.preflight.passes = False
            status, out, err = await self.cli("diagnose", "new.example.com")
            self.assertEqual((status, err), (EXIT_CHECK_FAILED, ""))
            self.assertIn("Diagnostics for new.example.com (not registered", out)
            self.assertIn("FAIL  dns", out)
            self.assertIn("hint: In the DNS for new.example.com", out)
            self.preflight.passes = True
            status, out, _ = await self.cli("--json", "diagnose", "new.example.com")
            self.assertEqual(status, EXIT_OK)
            doc = json.loads(out)
            self.assertEqual((doc["hostname"], doc["registered"], doc["ok"]), ("new.example.com", False, True))
            self.assertNotIn("new.example.com", self.store.domains)

        return self.run_async(run())

    def test_errors_from_the_api_exit_1(self):
        """Wrong token, unknown and invalid hostnames print the API's message on stderr and exit 1."""
        wrong = self.write("wrong.token", "not-the-token-at-all")

        async def run():
            status, out, err = await self.cli("domains", "list", token_file=wrong)
            self.assertEqual((status, out), (EXIT_ERROR, ""))
            self.assertIn("a valid admin token is required", err)
            status, _, err = await self.cli("domains", "show", "unknown.example.com")
            self.assertEqual(status, EXIT_ERROR)
            self.assertIn("unknown.example.com is not registered", err)
            status, _, err = await self.cli("domains", "show", "../etc")
            self.assertEqual(status, EXIT_ERROR)
            self.assertIn("invalid hostname", err)
            self.assertEqual(self.store.calls.count("get_domain"), 1)

        return self.run_async(run())

    def test_unicode_hostname_round_trips(self):
        """A unicode hostname on the command line is registered in A-label form and shown in both."""

        async def run():
            status, out, _ = await self.cli("domains", "add", "bücher.example")
            self.assertEqual(status, EXIT_OK)
            self.assertIn("bücher.example (xn--bcher-kva.example)", out)
            status, out, _ = await self.cli("--json", "domains", "show", "bücher.example")
            self.assertEqual(json.loads(out)["hostname"], "xn--bcher-kva.example")
            # readable JSON: indented by two, non-ASCII as itself
            self.assertTrue(out.startswith('{\n  "hostname": '), out)
            self.assertIn('"hostname_unicode": "bücher.example"', out)

        return self.run_async(run())

    def test_remove_says_whether_the_certificate_was_revoked(self):
        """remove --revoke revokes the certificate at the CA and says so; plain remove revokes nothing."""
        other = "other.example.com"
        for name in (HOST, other):
            self.store.domains[name] = make_domain(name)
            self.store.certificates[name] = _certificate(name)

        async def run():
            status, out, _ = await self.cli("domains", "remove", HOST, "--revoke")
            self.assertEqual((status, out), (EXIT_OK, f"Removed {HOST} (certificate revoked): no longer served or renewed.\n"))
            status, out, _ = await self.cli("domains", "remove", other)
            self.assertEqual((status, out), (EXIT_OK, f"Removed {other}: no longer served or renewed.\n"))
            self.assertEqual([c for c in self.issuer.calls if c[0] == "revoke"], [("revoke", HOST)])

        return self.run_async(run())

    def test_options_after_the_command(self):
        """--url, --token-file and --json work after the command's name too."""
        self.store.domains[HOST] = make_domain(HOST)

        def run():
            out, err = io.StringIO(), io.StringIO()
            argv = ["domains", "show", HOST, "--url", self.url, "--token-file", self.token_file, "--json"]
            return main(argv, out, err), out.getvalue(), err.getvalue()

        def check(result):
            status, out, err = result
            self.assertEqual(status, EXIT_OK, err)
            self.assertEqual(json.loads(out)["hostname"], HOST)

        return deferToThread(run).addCallback(check)

    def test_page_show_prints_readable_json(self):
        """page show prints the page as indented JSON with non-ASCII text as itself."""
        self.store.domains[HOST] = make_domain(HOST, page={"company": "Müller GmbH", "jobs": []})

        async def run():
            status, out, _ = await self.cli("page", "show", HOST)
            self.assertEqual(status, EXIT_OK)
            self.assertTrue(out.startswith('{\n  "version": 2,\n  "company": "Müller GmbH"'), out)

        return self.run_async(run())

    def serve(self, resource: Resource) -> str:
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def main_at(self, url: str, *argv: str) -> Deferred:
        """main() against another server; fire with (exit status, stderr)."""
        out, err = io.StringIO(), io.StringIO()

        def run():
            return main(["--url", url, "--token-file", self.token_file, *argv], out, err), err.getvalue()

        return deferToThread(run)

    def test_answers_that_are_not_the_admin_api_exit_1(self):
        """An error page from something else (a proxy) and a 200 that is not JSON are named as such."""
        proxy = self.serve(_Answer(502, b"<html>Bad Gateway</html>"))
        not_json = self.serve(_Answer(200, b"hello"))
        other_json = self.serve(_Answer(404, b'{"detail": "no such page"}'))

        async def run():
            status, err = await self.main_at(proxy, "domains", "list")
            self.assertEqual(status, EXIT_ERROR)
            self.assertEqual(
                err, f"jobhost-admin: error: HTTP 502 from {proxy}/api/v1/domains?limit=500, not a jobhost admin API answer\n"
            )
            status, err = await self.main_at(other_json, "domains", "show", HOST)
            self.assertEqual(status, EXIT_ERROR)
            self.assertIn("HTTP 404 from", err)
            self.assertIn("not a jobhost admin API answer", err)
            status, err = await self.main_at(not_json, "domains", "show", HOST)
            self.assertEqual(status, EXIT_ERROR)
            self.assertEqual(err, f"jobhost-admin: error: HTTP 200 from {not_json}/api/v1/domains/{HOST} is not JSON\n")

        return self.run_async(run())

    def test_silent_server_times_out_and_exits_1(self):
        """A server that accepts but never answers is reported as unreachable after --timeout."""
        connections: list[Protocol] = []

        class Silent(Protocol):
            def connectionMade(self):
                connections.append(self)

        port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [c.transport.abortConnection() for c in connections])
        url = f"http://127.0.0.1:{port.getHost().port}"

        async def run():
            status, err = await self.main_at(url, "--timeout", "0.2", "domains", "list")
            self.assertEqual(status, EXIT_ERROR)
            self.assertEqual(err, f"jobhost-admin: error: cannot reach the admin API at {url}: timed out\n")

        return self.run_async(run())

    def test_config_gives_url_and_token_file(self):
        """With --config alone the CLI finds the admin listener and the token file."""
        config = self.write(
            "jobhost.toml",
            f'[listen]\nadmin = "tcp:{self.port.getHost().port}:interface=127.0.0.1"\n'
            f'[admin]\ntoken_file = "{self.token_file}"\n'
            '[preflight]\naddresses = ["127.0.0.1"]\n',
        )
        self.store.domains[HOST] = make_domain(HOST)

        def run():
            out, err = io.StringIO(), io.StringIO()
            return main(["--config", config, "--json", "domains", "list"], out, err), out.getvalue(), err.getvalue()

        def check(result):
            status, out, err = result
            self.assertEqual(status, EXIT_OK, err)
            self.assertEqual([d["hostname"] for d in json.loads(out)["domains"]], [HOST])

        return deferToThread(run).addCallback(check)

    def test_bad_database_url_is_one_line_without_the_password(self):
        """A store URL that cannot work is a usage error in one line naming the key, its password redacted."""
        config = self.write(
            "badstore.toml",
            '[store]\nurl = "postgresql://jobhost:s3cret@db:port/x"\n[preflight]\naddresses = ["127.0.0.1"]\n',
        )

        async def run():
            status, _, err = await self.cli("--config", config, "domains", "list")
            self.assertEqual(status, EXIT_USAGE)
            self.assertIn("[store] url", err)
            self.assertIn("jobhost:***@db", err)
            self.assertNotIn("s3cret", err)
            self.assertEqual(err.strip().count("\n"), 0, err)

        return self.run_async(run())

    def test_bad_config_exits_2_and_unreachable_api_exits_1(self):
        """A broken config is a usage error; a closed port is reported as unreachable."""
        config = self.write("broken.toml", "[listen]\nadmin = 5\n")

        async def run():
            status, _, err = await self.cli("--config", config, "domains", "list")
            self.assertEqual(status, EXIT_USAGE)
            self.assertIn("[listen] admin", err)
            out, err_stream = io.StringIO(), io.StringIO()
            closed = await deferToThread(
                main,
                ["--url", "http://127.0.0.1:1", "--token-file", self.token_file, "domains", "list"],
                out,
                err_stream,
            )
            self.assertEqual(closed, EXIT_ERROR)
            self.assertIn("cannot reach the admin API at http://127.0.0.1:1", err_stream.getvalue())

        return self.run_async(run())


class _Answer(Resource):
    """Answers every request with one status and body, as a proxy or another service would."""

    isLeaf = True

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__()
        self.status, self.body = status, body

    def render(self, request):
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"text/html")
        return self.body
