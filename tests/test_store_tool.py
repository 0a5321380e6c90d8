"""jobhost-store against an SQLite store: every command's output and exit status, certbot imports, copies."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

import attrs
from store_contract import make_certificate, make_domain, shared_ca
from test_store_sql import create_database
from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from jobhost.errors import ConfigError
from jobhost.store.certbot import import_certbot, read_lineages
from jobhost.store.directory import DirectoryStore
from jobhost.store.memory import MemoryStore
from jobhost.store.records import DomainState
from jobhost.store.sql import SCHEMA_VERSION, Engine, SqlStore
from jobhost.store.tool import EXIT_ERROR, _main, build_parser, run
from jobhost.timeutil import to_iso

#: The tool's clock in these tests: now, in whole seconds (certificates are issued for now).
NOW = datetime.fromtimestamp(int(time.time()), tz=timezone.utc)


def temp_dir(case) -> str:
    path = tempfile.mkdtemp(prefix="jobhost-tool-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def work_in(case, directory: str) -> None:
    """Make ``directory`` the current directory for the test (relative store URLs start there)."""
    before = os.getcwd()
    os.chdir(directory)
    case.addCleanup(os.chdir, before)


class ToolReactor:
    """The global reactor as the tool sees it in its own process: running from the start (a test's first
    lines run before trial spins the reactor), and shut down at the end (of the test: the test process
    outlives the stores the tool builds, whose thread pools would keep it from exiting)."""

    def __init__(self, case):
        self._triggers: list = []
        case.addCleanup(self._shutdown)

    def callWhenRunning(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def addSystemEventTrigger(self, phase, event, f, *args, **kwargs):
        self._triggers.append((f, args, kwargs))
        return len(self._triggers) - 1

    def removeSystemEventTrigger(self, trigger_id):
        self._triggers[trigger_id] = None

    def _shutdown(self):
        for trigger in reversed(self._triggers):
            if trigger is not None:
                f, args, kwargs = trigger
                f(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(reactor, name)


class _ToolCase(TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.path = os.path.join(self.dir, "jobhost.db")
        self.store = SqlStore.create(Engine.sqlite(self.path))
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.clock.advance(NOW.timestamp())

    async def run_tool(self, *argv, store=None, clock=None):
        """Run one command (at ``clock``'s time, by default NOW); return (exit status, stdout, stderr)."""
        args = build_parser().parse_args(["--store", "sqlite:" + self.path, *argv])
        out, err = io.StringIO(), io.StringIO()
        code = await run(clock or self.clock, args, self.store if store is None else store, out, err)
        return code, out.getvalue(), err.getvalue()

    def issue(self, hostname: str, **kwargs) -> tuple[str, str]:
        key_pem, chain_pem = shared_ca().issue(hostname, **kwargs)
        name = hostname.replace("*", "star")
        return (write(os.path.join(self.dir, name, "key.pem"), key_pem),
                write(os.path.join(self.dir, name, "fullchain.pem"), chain_pem))


class CertificateCommandTests(_ToolCase):
    """put-certificate, delete-certificate."""

    async def test_put_certificate_prints_what_it_stored(self):
        """put-certificate stores the certificate and prints its hostname, expiry and fingerprint in one line."""
        key, chain = self.issue("jobs.acme-corp.com", not_before=NOW - timedelta(days=1))
        code, out, err = await self.run_tool("put-certificate", "Jobs.Acme-Corp.COM", "--key", key, "--chain", chain)
        record = await self.store.get_certificate("jobs.acme-corp.com")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out,
            f"stored certificate for jobs.acme-corp.com: expires {to_iso(record.not_after)}, sha256 {record.fingerprint}\n",
        )

    async def test_a_wildcard_certificate_serves_one_label_below_it(self):
        """A *.example.com certificate is stored for jobs.example.com, but not for example.com or a.b.example.com."""
        key, chain = self.issue("*.example.com")
        code, _, err = await self.run_tool("put-certificate", "jobs.example.com", "--key", key, "--chain", chain)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual((await self.store.get_certificate("jobs.example.com")).names, ("*.example.com",))
        for hostname in ("example.com", "a.jobs.example.com"):
            code, _, err = await self.run_tool("put-certificate", hostname, "--key", key, "--chain", chain)
            self.assertEqual(code, EXIT_ERROR)
            self.assertEqual(err, f"jobhost-store: error: the certificate in {chain} is for *.example.com, not {hostname}\n")

    async def test_only_an_expired_certificate_is_warned_about(self):
        """A certificate valid for one more second is stored silently; one expired a second ago with a warning."""
        key, chain = self.issue("a.example.com", not_before=NOW - timedelta(days=90) + timedelta(seconds=1))
        self.assertEqual((await self.run_tool("put-certificate", "a.example.com", "--key", key, "--chain", chain))[2], "")
        key, chain = self.issue("b.example.com", not_before=NOW - timedelta(days=90) - timedelta(seconds=1))
        code, _, err = await self.run_tool("put-certificate", "b.example.com", "--key", key, "--chain", chain)
        self.assertEqual(code, 0)
        expired = to_iso(NOW - timedelta(seconds=1))
        self.assertEqual(err, f"jobhost-store: warning: the certificate for b.example.com expired at {expired}\n")
        await self.store.get_certificate("b.example.com")

    async def test_an_unreadable_key_file_is_named_with_the_reason(self):
        """A key path that does not exist exits 2 with one line naming it and why."""
        _, chain = self.issue("a.example.com")
        missing = os.path.join(self.dir, "missing.pem")
        code, _, err = await self.run_tool("put-certificate", "a.example.com", "--key", missing, "--chain", chain)
        self.assertEqual((code, err), (EXIT_ERROR, f"jobhost-store: error: cannot read {missing}: No such file or directory\n"))

    async def test_delete_certificate(self):
        """delete-certificate deletes and says so; a second time there is nothing and it exits 2."""
        await self.store.put_certificate(make_certificate("a.example.com"))
        self.assertEqual(await self.run_tool("delete-certificate", "A.example.com"),
                         (0, "deleted certificate for a.example.com\n", ""))
        await self.assertFailure(self.store.get_certificate("a.example.com"), KeyError)
        self.assertEqual(await self.run_tool("delete-certificate", "a.example.com"),
                         (EXIT_ERROR, "", "jobhost-store: error: no certificate is stored for a.example.com\n"))


class DomainCommandTests(_ToolCase):
    """add-domain, list, show."""

    async def test_add_domain_says_whether_it_registered_the_hostname(self):
        """add-domain registers once and says so; again it names the state it found."""
        self.assertEqual(await self.run_tool("add-domain", "Jobs.Example.com"),
                         (0, "registered jobs.example.com (pending)\n", ""))
        record = await self.store.get_domain("jobs.example.com")
        self.assertEqual((record.state, record.created_at, record.updated_at, record.page), (DomainState.PENDING, NOW, NOW, None))
        self.assertEqual(await self.run_tool("add-domain", "jobs.example.com"),
                         (0, "jobs.example.com was already registered (pending)\n", ""))

    async def test_add_domain_with_a_page_replaces_only_the_page(self):
        """--page on a registered hostname replaces its page and keeps the state a daemon wrote meanwhile."""
        await self.store.add_domain(make_domain("jobs.example.com", DomainState.ACTIVE))
        page = write(os.path.join(self.dir, "page.json"), json.dumps({"company": "Acme", "jobs": []}).encode())
        self.clock.advance(60)
        code, out, _ = await self.run_tool("add-domain", "jobs.example.com", "--page", page)
        self.assertEqual((code, out), (0, "jobs.example.com was already registered (active); page replaced\n"))
        record = await self.store.get_domain("jobs.example.com")
        self.assertEqual(record, attrs.evolve(
            make_domain("jobs.example.com", DomainState.ACTIVE),
            page={"version": 2, "company": "Acme", "jobs": []}, updated_at=NOW + timedelta(seconds=60), version=1,
        ))

    async def test_add_domain_with_a_page_registers_it_with_the_page(self):
        """--page on a new hostname registers it with that page."""
        page = write(os.path.join(self.dir, "page.json"), json.dumps({"company": "Acme", "jobs": []}).encode())
        code, out, _ = await self.run_tool("add-domain", "jobs.example.com", "--page", page)
        self.assertEqual((code, out), (0, "registered jobs.example.com (pending)\n"))
        self.assertEqual(
            (await self.store.get_domain("jobs.example.com")).page, {"version": 2, "company": "Acme", "jobs": []}
        )

    async def test_list_is_a_table_of_every_hostname(self):
        """list prints a header and one aligned row per hostname with a domain record or a certificate."""
        certificate = make_certificate("a.example.com")
        await self.store.put_certificate(certificate)
        await self.store.put_domain(make_domain("a.example.com", DomainState.ACTIVE))
        await self.store.put_domain(make_domain("long-name.example.com", DomainState.FAILING))
        await self.store.put_certificate(make_certificate("z.example.com"))
        code, out, _ = await self.run_tool("list")
        self.assertEqual(code, 0)
        expires = to_iso(certificate.not_after)
        z_expires = to_iso((await self.store.get_certificate("z.example.com")).not_after)
        self.assertEqual(out.splitlines(), [
            "HOSTNAME               STATE       CERTIFICATE EXPIRES",
            f"a.example.com          active      {expires}",
            "long-name.example.com  failing     -",
            f"z.example.com          -           {z_expires}",
        ])

    async def test_list_of_an_empty_store_is_its_header(self):
        """An empty store lists only the header, as wide as the word HOSTNAME."""
        self.assertEqual(await self.run_tool("list"), (0, "HOSTNAME  STATE       CERTIFICATE EXPIRES\n", ""))

    async def test_show_prints_the_domain_record_and_certificate_facts_readably(self):
        """show prints the domain record and the certificate's public facts as JSON, non-ASCII text as is."""
        domain = make_domain("jobs.example.com", page={"company": "Café Zürich", "jobs": []})
        certificate = make_certificate("jobs.example.com")
        await self.store.put_domain(domain)
        await self.store.put_certificate(certificate)
        code, out, _ = await self.run_tool("show", "Jobs.Example.com")
        self.assertEqual(code, 0)
        self.assertIn("Café Zürich", out)
        self.assertTrue(out.startswith('{\n  "hostname": "jobs.example.com",\n  "domain": {\n    "'), out[:80])
        self.assertEqual(json.loads(out), {
            "hostname": "jobs.example.com", "domain": domain.to_json(), "certificate": certificate.public_json(),
        })
        await self.store.delete_certificate("jobs.example.com")
        _, out, _ = await self.run_tool("show", "jobs.example.com")
        self.assertIsNone(json.loads(out)["certificate"])


class SchemaAndCopyCommandTests(_ToolCase):
    """migrate, copy, and the default output streams."""

    async def test_migrate_creates_the_schema_and_says_which_version(self):
        """migrate on an SQL store creates its schema and prints the version; other stores have none."""
        self.assertEqual(await self.run_tool("migrate"), (0, f"sqlite:{self.path}: schema at version {SCHEMA_VERSION}\n", ""))
        with sqlite3.connect(self.path) as connection:
            self.assertEqual(connection.execute("SELECT version FROM jobhost_schema").fetchall(), [(SCHEMA_VERSION,)])
        self.assertEqual(await self.run_tool("migrate", store=MemoryStore()),
                         (0, "this store has no schema to migrate\n", ""))

    async def test_copy_reports_counts_and_unreadable_records(self):
        """copy --to a relative SQLite URL copies every record, prints the counts, names each record it could
        not read on stderr and then exits 2."""
        work_in(self, self.dir)
        await self.store.put_domain(make_domain("a.example.com"))
        await self.store.put_domain(make_domain("b.example.com"))
        await self.store.put_certificate(make_certificate("a.example.com"))
        code, out, err = await self.run_tool("copy", "--to", "sqlite:copy.db", clock=ToolReactor(self))
        self.assertEqual((code, out), (0, "copied 2 domains, 1 certificates and 0 accounts to sqlite:copy.db\n"))
        self.assertIn("copied: 3/3 records", err)
        copy = SqlStore.create(Engine.sqlite(os.path.join(self.dir, "copy.db")))
        self.addCleanup(copy.close)
        self.assertEqual(await copy.list_domains(), await self.store.list_domains())
        await self.store._run(lambda c: c.execute("UPDATE domains SET doc = '{' WHERE hostname = 'b.example.com'"))
        code, out, err = await self.run_tool("copy", "--to", "sqlite:copy.db", clock=ToolReactor(self))
        self.assertEqual(code, EXIT_ERROR)
        self.assertEqual(out, "copied 1 domains, 1 certificates and 0 accounts to sqlite:copy.db; skipped 1 unreadable\n")
        self.assertIn("jobhost-store: skipped domain b.example.com: JSONDecodeError: ", err)

    async def test_copy_never_prints_the_targets_password(self):
        """copy to a PostgreSQL URL with a password names the target with the password replaced."""
        url = create_database(self).replace("postgres@", "postgres:s3cret@", 1)
        target = url.replace("s3cret", "***")
        await self.store.put_domain(make_domain("a.example.com"))
        code, out, err = await self.run_tool("copy", "--to", url, clock=ToolReactor(self))
        self.assertEqual((code, out), (0, f"copied 1 domains, 0 certificates and 0 accounts to {target}\n"))
        self.assertNotIn("s3cret", err)

    async def test_results_go_to_stdout_and_errors_to_stderr_by_default(self):
        """Without streams given, run() writes results to sys.stdout and errors to sys.stderr."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        args = build_parser().parse_args(["add-domain", "jobs.example.com"])
        self.assertEqual(await run(self.clock, args, self.store), 0)
        args = build_parser().parse_args(["show", "absent.example.com"])
        self.assertEqual(await run(self.clock, args, self.store), EXIT_ERROR)
        self.assertEqual(out.getvalue(), "registered jobs.example.com (pending)\n")
        self.assertEqual(err.getvalue(), "jobhost-store: error: nothing is stored for absent.example.com\n")


class ParserTests(TestCase):
    """What the command line requires."""

    def test_a_command_and_its_required_options_are_required(self):
        """No command, put-certificate without --key or --chain, copy without --to: usage errors (status 2)."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        for argv in ([], ["--store", "memory:"], ["put-certificate", "a.example.com", "--chain", "c.pem"],
                     ["put-certificate", "a.example.com", "--key", "k.pem"], ["copy", "--from", "memory:"]):
            with self.assertRaises(SystemExit) as caught:
                build_parser().parse_args(argv)
            self.assertEqual(caught.exception.code, 2)
        self.assertEqual(err.getvalue().count("error: "), 5)


class MainTests(TestCase):
    """_main: the store URL, the exit status, and unexpected errors."""

    def setUp(self):
        self.dir = temp_dir(self)
        work_in(self, self.dir)
        self.out, self.err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.patch(sys, "stderr", self.err)

    async def main(self, *argv) -> int | None:
        """The status _main exits with, or None when it returns (success)."""
        try:
            await _main(ToolReactor(self), build_parser().parse_args(list(argv)))
        except SystemExit as e:
            return e.code
        return None

    async def test_a_command_on_a_relative_store_exits_0(self):
        """--store directory:PATH is relative to the current directory; success exits without SystemExit."""
        self.assertIsNone(await self.main("--store", "directory:store", "add-domain", "jobs.example.com"))
        self.assertEqual(self.out.getvalue(), "registered jobs.example.com (pending)\n")
        self.assertTrue(os.path.isdir(os.path.join(self.dir, "store")))

    async def test_no_store_is_one_line_and_exit_2(self):
        """Without --store the tool says to name one (copy: or --from) and exits 2."""
        self.assertEqual(await self.main("list"), 2)
        self.assertEqual(await self.main("copy", "--to", "sqlite:x.db"), 2)
        self.assertEqual(self.err.getvalue().splitlines(), [
            "jobhost-store: error: name the store with --store URL",
            "jobhost-store: error: name the store with --store URL or --from URL",
        ])

    async def test_copy_reads_from_the_from_store(self):
        """copy --from names the source even when --store is given too."""
        source = os.path.join(self.dir, "source")
        self.assertIsNone(await self.main("--store", "directory:" + source, "add-domain", "a.example.com"))
        code = await self.main("--store", "memory:", "copy", "--from", "directory:source", "--to", "directory:target")
        self.assertIsNone(code)
        self.assertIn("copied 1 domains", self.out.getvalue())

    async def test_a_bad_store_url_is_one_line_and_exit_2(self):
        """An unsupported store URL exits 2 with one line, no traceback."""
        self.assertEqual(await self.main("--store", "mysql://db/x", "list"), 2)
        self.assertTrue(self.err.getvalue().startswith("jobhost-store: error: [store] url: unsupported store URL"))
        self.assertEqual(self.err.getvalue().count("\n"), 1)

    async def test_a_store_that_does_not_exist_is_one_line_and_exit_2_for_reading_commands(self):
        """list, show, delete-certificate and copy on a directory: or sqlite: store that does not exist exit 2 naming
        the path, and create nothing (an empty table with exit 0 would hide a typo)."""
        for argv in (["--store", "directory:NONEXISTENT", "list"], ["--store", "sqlite:var/nope.db", "show", "a.test"],
                     ["--store", "SQLite:var/nope.db", "delete-certificate", "a.test"],
                     ["--store", "memory:", "copy", "--from", "directory:NONEXISTENT", "--to", "memory:"]):
            self.assertEqual(await self.main(*argv), 2, argv)
        lines = self.err.getvalue().splitlines()
        absent = os.path.join(os.path.realpath(self.dir), "NONEXISTENT")
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[0], f"jobhost-store: error: no store at {absent} (--store directory:NONEXISTENT): "
                         "check the path (relative to the current directory); the daemon creates its store when it "
                         "first starts")
        self.assertTrue(lines[1].startswith("jobhost-store: error: no store at "
                                            f"{os.path.join(os.path.realpath(self.dir), 'var', 'nope.db')} "
                                            "(--store sqlite:var/nope.db): "))
        self.assertIn("(--from directory:NONEXISTENT)", lines[3])
        self.assertEqual(os.listdir(self.dir), [], "nothing was created")
        self.assertEqual(self.out.getvalue(), "")

    async def test_a_store_url_naming_no_path_gets_the_factorys_message(self):
        """directory: with only blanks after the colon is a malformed URL (the factory's message), not a missing store."""
        self.assertEqual(await self.main("--store", "directory:  ", "list"), 2)
        self.assertIn("names no directory; expected directory:PATH", self.err.getvalue())

    async def test_a_writing_command_creates_the_store(self):
        """add-domain on an sqlite: store that does not exist yet creates it (seeding a store before the daemon)."""
        self.assertIsNone(await self.main("--store", "sqlite:var/new.db", "add-domain", "jobs.example.com"))
        self.assertTrue(os.path.isfile(os.path.join(self.dir, "var", "new.db")))
        self.assertIsNone(await self.main("--store", "sqlite:var/new.db", "list"))
        self.assertIn("jobs.example.com  pending", self.out.getvalue())

    async def test_an_operator_error_exits_2(self):
        """A command that fails for a reason the operator can fix exits 2."""
        self.assertEqual(await self.main("--store", "directory:store", "show", "absent.example.com"), 2)

    async def test_an_unexpected_error_prints_the_traceback_and_exits_1(self):
        """An error that is no operator's (here: the store failing with a RuntimeError) shows its traceback."""
        self.patch(DirectoryStore, "list_domains", lambda *a, **k: fail(RuntimeError("the disk is on fire")))
        os.mkdir(os.path.join(self.dir, "store"))
        self.assertEqual(await self.main("--store", "directory:store", "list"), 1)
        self.assertTrue(self.err.getvalue().startswith("jobhost-store: unexpected error:\nTraceback"))
        self.assertIn("RuntimeError: the disk is on fire", self.err.getvalue())


def certbot_lineage(config_dir: str, name: str, key_pem: bytes, chain_pem: bytes, version: int = 1) -> str:
    """Lay out a lineage as certbot does: archive/NAME/*N.pem, linked from live/NAME/."""
    archive = os.path.join(config_dir, "archive", name)
    live = os.path.join(config_dir, "live", name)
    write(os.path.join(archive, f"privkey{version}.pem"), key_pem)
    write(os.path.join(archive, f"fullchain{version}.pem"), chain_pem)
    os.makedirs(live, exist_ok=True)
    for kind in ("privkey", "fullchain"):
        link = os.path.join(live, f"{kind}.pem")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.join("..", "..", "archive", name, f"{kind}{version}.pem"), link)
    return live


class CertbotImportTests(_ToolCase):
    """import-certbot: certbot's lineages into the store, hostnames registered."""

    def setUp(self):
        super().setUp()
        self.certbot = os.path.join(self.dir, "letsencrypt")
        os.makedirs(os.path.join(self.certbot, "live"))
        write(os.path.join(self.certbot, "live", "README"), b"This directory contains your keys and certificates.\n")

    def lineage(self, name, hostname, **kwargs):
        return certbot_lineage(self.certbot, name, *shared_ca().issue(hostname, **kwargs))

    async def test_every_name_of_every_lineage_is_stored_and_registered(self):
        """Each lineage's certificate is stored under each of its names (wildcards and names that are no valid
        hostname left out) and each name is registered as pending, noting where it came from; a second import
        registers nothing again."""
        self.lineage("acme-corp.com", "acme-corp.com", extra_names=("*.acme-corp.com", "jobs.acme-corp.com"))
        self.lineage("b.example.com", "foo_bar.example.com", extra_names=("b.example.com",))
        report = await import_certbot(self.certbot, self.store, NOW)
        self.assertEqual(report.stored, ["acme-corp.com", "jobs.acme-corp.com", "b.example.com"])
        self.assertEqual(report.registered, report.stored)
        self.assertEqual(report.skipped, [])
        self.assertEqual(sorted(r.hostname for r in await self.store.list_certificates()), sorted(report.stored))
        domain = await self.store.get_domain("jobs.acme-corp.com")
        self.assertEqual((domain.state, domain.created_at, domain.updated_at), (DomainState.PENDING, NOW, NOW))
        self.assertEqual([(h.at, h.state, h.reason) for h in domain.history],
                         [(NOW, DomainState.PENDING, "imported from certbot")])
        await self.store.update_domain("b.example.com", lambda r: attrs.evolve(r, state=DomainState.ACTIVE))
        again = await import_certbot(self.certbot, self.store, NOW + timedelta(hours=1))
        self.assertEqual((again.stored, again.registered), (report.stored, []))
        self.assertEqual((await self.store.get_domain("b.example.com")).state, DomainState.ACTIVE)

    async def test_a_renewed_lineage_replaces_the_stored_certificate(self):
        """After certbot renews (live/ now links to the next archive files), importing stores the new one."""
        self.lineage("a.example.com", "a.example.com")
        await import_certbot(self.certbot, self.store, NOW)
        key_pem, chain_pem = shared_ca().issue("a.example.com")
        certbot_lineage(self.certbot, "a.example.com", key_pem, chain_pem, version=2)
        await import_certbot(self.certbot, self.store, NOW)
        self.assertEqual((await self.store.get_certificate("a.example.com")).chain_pem, chain_pem)

    def test_lineages_that_cannot_be_used_are_skipped_with_the_reason(self):
        """A lineage missing its key, one whose key does not match, and one with only wildcard or unusable names
        are each skipped, named, with why; the others are read."""
        self.lineage("good.example.com", "good.example.com")
        os.makedirs(os.path.join(self.certbot, "live", "no-key"))
        write(os.path.join(self.certbot, "live", "no-key", "fullchain.pem"), shared_ca().issue("x.example.com")[1])
        key_pem, _ = shared_ca().issue("m.example.com")
        certbot_lineage(self.certbot, "mismatch", key_pem, shared_ca().issue("m.example.com")[1])
        self.lineage("a-wildcard", "*.example.org", extra_names=("foo_bar.example.org",))
        self.lineage("z.example.com", "z.example.com")  # read after every skipped one
        found, skipped = read_lineages(self.certbot)
        self.assertEqual([hostname for hostname, _ in found], ["good.example.com", "z.example.com"])
        live = os.path.join(self.certbot, "live")
        self.assertEqual([lineage for lineage, _ in skipped],
                         [os.path.join(live, "a-wildcard"), os.path.join(live, "mismatch"), os.path.join(live, "no-key")])
        reasons = [reason for _, reason in skipped]
        self.assertEqual(reasons[0], "the certificate names no hostname jobhost can serve (only wildcards?)")
        self.assertTrue(reasons[1].startswith("invalid certificate material: "), reasons[1])
        self.assertEqual(reasons[2], f"cannot read {os.path.join(live, 'no-key', 'privkey.pem')}: No such file or directory")

    def test_a_directory_without_live_is_a_config_error(self):
        """A directory that is not certbot's (no live/) is a ConfigError saying so."""
        with self.assertRaises(ConfigError) as caught:
            read_lineages(self.dir)
        self.assertIn(f"cannot read {os.path.join(self.dir, 'live')}: No such file or directory", str(caught.exception))
        self.assertIn(f"is {self.dir} certbot's config directory?", str(caught.exception))

    async def test_the_command_reports_counts_and_skips_and_exits_2_for_a_skip(self):
        """import-certbot prints what it stored and registered; each skipped lineage is a line on stderr and
        makes the exit status 2; progress goes to stderr."""
        self.lineage("a.example.com", "a.example.com", extra_names=("www.a.example.com",))
        code, out, err = await self.run_tool("import-certbot", self.certbot)
        self.assertEqual((code, out), (0, "stored 2 certificates, registered 2 new hostnames\n"))
        self.assertIn("imported: 2/2 records", err)
        os.makedirs(os.path.join(self.certbot, "live", "broken"))
        code, out, err = await self.run_tool("import-certbot", self.certbot)
        self.assertEqual(code, EXIT_ERROR)
        self.assertEqual(out, "stored 2 certificates, registered 0 new hostnames; skipped 1 lineages\n")
        broken = os.path.join(self.certbot, "live", "broken")
        self.assertIn(f"jobhost-store: skipped {broken}: cannot read {broken}/privkey.pem: No such file or directory\n", err)
        code, _, err = await self.run_tool("import-certbot", self.dir)
        self.assertEqual(code, EXIT_ERROR)
        self.assertIn("certbot's config directory?", err)

