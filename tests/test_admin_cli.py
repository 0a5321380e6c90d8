"""Tests for jobhost-admin: the real CLI against a real AdminResource listening on loopback."""

from __future__ import annotations

import io
import json
import os
import tempfile
from datetime import timedelta

import pytest
from admin_helpers import TOKEN, FakeCertificateCache, FakeIssuer, FakePreflight, RecordingStore, make_domain
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from jobhost.domains import DomainService
from jobhost.admin.api import AdminResource, admin_site
from jobhost.admin.cli import (
    EXIT_CHECK_FAILED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    endpoint_to_url,
    main,
)
from jobhost.store.records import certificate_record
from jobhost.testing import TestCA

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
    ],
)
def test_endpoint_to_url(endpoint, url):
    """The [listen] admin endpoint string becomes the URL that reaches it."""
    assert endpoint_to_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["unix:/run/jobhost.sock", "systemd:domain=INET:index=0", "tcp:interface=::1"])
def test_endpoint_to_url_refuses_what_http_cannot_reach(endpoint):
    """UNIX sockets, systemd sockets and endpoints without a port need --url."""
    with pytest.raises(UsageError):
        endpoint_to_url(endpoint)


def test_usage_errors_exit_2_and_print_usage():
    """Missing or unknown arguments exit 2 with usage on standard error, nothing on standard output."""
    out, err = io.StringIO(), io.StringIO()
    assert main(["domains"], out, err) == EXIT_USAGE
    assert "usage: jobhost-admin domains" in err.getvalue()
    assert out.getvalue() == ""
    assert main(["domains", "list", "--state", "sleepy"], out, err) == EXIT_USAGE
    assert main(["--help"], out, err) == EXIT_OK
    assert "Exit status" in out.getvalue()


def test_missing_token_file_exits_1():
    """An unreadable token file is reported and exits 1 without any request."""
    err = io.StringIO()
    assert main(["--token-file", "/nonexistent/admin.token", "domains", "list"], io.StringIO(), err) == EXIT_ERROR
    assert "cannot read the admin token from /nonexistent/admin.token" in err.getvalue()


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
            self.assertEqual(json.loads(out), PAGE)
            status, _, _ = await self.cli("page", "set", HOST, "-", stdin=json.dumps({"company": "Stdin Co"}))
            self.assertEqual(status, EXIT_OK)
            self.assertEqual(self.store.domains[HOST].page, {"company": "Stdin Co", "jobs": []})
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
            self.assertIn("FAIL  dns", out)
            self.assertIn("hint: In the DNS for", out)
            self.assertIn("SKIP  self_check", out)
            status, out, _ = await self.cli("--json", "diagnose", HOST)
            self.assertFalse(json.loads(out)["ok"])

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
