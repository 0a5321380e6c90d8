"""store_from_url and check_store_url: which store a ``[store] url`` builds, and how a bad one is refused."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from unittest import mock

from twisted.internet import reactor
from twisted.internet.testing import MemoryReactor
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jobhost.errors import ConfigError
from jobhost.store.directory import DirectoryStore
from jobhost.store.factory import (
    check_store_url,
    read_password_file,
    redacted_url,
    store_from_url,
    supported_store_urls,
)
from jobhost.store.memory import MemoryStore
from jobhost.store.sql import SqlStore


def temp_dir(case) -> str:
    path = tempfile.mkdtemp(prefix="jobhost-factory-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class RedactedUrlTests(SynchronousTestCase):
    """redacted_url hides a URL's password, and only that."""

    def test_the_password_is_replaced(self):
        """user:password@ becomes user:***@; the rest of the URL is kept."""
        self.assertEqual(
            redacted_url("postgresql://jobhost:s3cret@db.example:5432/jobhost?sslmode=require"),
            "postgresql://jobhost:***@db.example:5432/jobhost?sslmode=require",
        )

    def test_a_password_in_the_query_is_replaced(self):
        """libpq's ?password=... (in any case) is replaced too; other parameters are kept."""
        self.assertEqual(
            redacted_url("postgresql:///jobhost?host=db&Password=s3cret&sslmode=require"),
            "postgresql:///jobhost?host=db&Password=***&sslmode=require",
        )

    def test_a_password_without_slashes_hides_everything_after_the_scheme(self):
        """postgresql:user:password@host (no //) does not parse as a host: only the scheme is shown."""
        self.assertEqual(redacted_url("postgresql:jobhost:s3cret@db/jobhost"), "postgresql:...")

    def test_a_url_without_a_password_is_unchanged(self):
        """URLs with no password (a user only, or a path) come back as they are."""
        for url in ("postgresql://jobhost@db/jobhost", "sqlite:var/jobhost.db", "directory:/srv/store",
                    "postgresql://db/jobhost?sslmode=require&passfile=/etc/jobhost/pgpass"):
            self.assertEqual(redacted_url(url), url)

    def test_a_url_that_does_not_parse_keeps_only_its_scheme(self):
        """A URL urlsplit refuses (a broken IPv6 host) shows only its scheme: the password may be anywhere."""
        self.assertEqual(redacted_url("postgresql://jobhost:s3cret@[::1/jobhost"), "postgresql:...")


class CheckStoreUrlTests(SynchronousTestCase):
    """check_store_url refuses exactly what no store can use, naming the supported forms."""

    def assert_refused(self, url, *fragments):
        with self.assertRaises(ConfigError) as caught:
            check_store_url(url)
        self.assertEqual(caught.exception.path, ("store", "url"))
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))
        return caught.exception

    def test_supported_forms(self):
        """Every scheme a store implements is named, in the order the documentation lists them."""
        self.assertEqual(
            supported_store_urls(),
            ("directory:PATH", "sqlite:PATH", "postgresql://USER@HOST/DATABASE",
             "postgres://USER@HOST/DATABASE", "memory:"),
        )

    def test_a_url_that_is_not_text_or_has_no_scheme_is_refused(self):
        """A number (a TOML typo) or a bare path is refused, listing the supported forms."""
        supported = ", ".join(supported_store_urls())
        for url in (5, None, "var/store"):
            self.assert_refused(url, f"unsupported store URL {url!r}; supported: {supported}")

    def test_an_unknown_scheme_is_refused_naming_it_without_the_password(self):
        """mysql://... is refused, naming the scheme and the supported forms, the password redacted."""
        error = self.assert_refused("mysql://jobhost:s3cret@db/jobhost", "no store implements mysql:", "***")
        self.assertNotIn("s3cret", str(error))

    def test_schemes_are_case_insensitive(self):
        """SQLite:, Directory: and PostgreSQL:// name the same stores as their lower-case forms."""
        for url in ("SQLite:var/jobhost.db", "Directory:var/store", "PostgreSQL://db/jobhost", "MEMORY:"):
            check_store_url(url)

    def test_empty_or_blank_paths_are_refused(self):
        """directory: and sqlite: need a path; blanks are no path; sqlite:// (a URL habit) is refused too."""
        for url in ("directory:", "directory:   "):
            self.assert_refused(url, "names no directory")
        for url in ("sqlite:", "sqlite:  ", "sqlite:///var/jobhost.db"):
            self.assert_refused(url, "names no file", "sqlite:var/jobhost.db")

    def test_memory_takes_nothing_after_the_colon(self):
        """memory: is the whole URL."""
        self.assert_refused("memory:x", "memory: takes nothing after the colon")

    def test_a_postgresql_url_needs_a_host_part_and_a_numeric_port(self):
        """postgresql:db is not a URL with a host; a non-numeric port is refused; neither shows the password."""
        error = self.assert_refused("postgresql:jobhost:s3cret@db/x", "expected postgresql://USER@HOST:PORT/DATABASE")
        self.assertNotIn("s3cret", str(error))
        error = self.assert_refused("postgres://jobhost:s3cret@db:port/x", "is not a PostgreSQL URL")
        self.assertNotIn("s3cret", str(error))
        check_store_url("postgres://jobhost:s3cret@db:5432/x")


class StoreFromUrlTests(TestCase):
    """store_from_url builds the store a URL names."""

    def test_directory_path_starts_in_the_base_directory_or_home(self):
        """directory:PATH is under the base directory (a FilePath or a string); ~ is the user's home."""
        base = temp_dir(self)
        store = store_from_url("directory:var/store", MemoryReactor(), base)
        self.assertIsInstance(store, DirectoryStore)
        self.assertEqual(store.path, FilePath(os.path.join(base, "var", "store")))
        home = temp_dir(self)
        with mock.patch.dict(os.environ, {"HOME": home}):
            store = store_from_url("directory:~/store", MemoryReactor(), FilePath(base))
        self.assertEqual(store.path, FilePath(os.path.join(home, "store")))

    def test_memory(self):
        """memory: is a fresh, empty MemoryStore each time."""
        first = store_from_url("memory:", MemoryReactor(), ".")
        self.assertIsInstance(first, MemoryStore)
        self.assertIsNot(store_from_url("memory:", MemoryReactor(), "."), first)

    async def test_sqlite_creates_a_private_file_under_the_base_directory(self):
        """sqlite:PATH creates its directories (0700) and the database file (0600: it holds private keys) under
        the base directory, and the store opens there by itself once the reactor runs."""
        base = temp_dir(self)
        store = store_from_url("sqlite:var/db/jobhost.db", reactor, FilePath(base))
        self.addCleanup(store.close)
        self.assertIsInstance(store, SqlStore)
        path = os.path.join(base, "var", "db", "jobhost.db")
        self.assertEqual(store.engine.description, f"sqlite:{path}")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        self.assertIs(await store.check(), True)
        self.assertEqual(await store.list_domains(), [])

    def test_sqlite_path_may_start_in_home(self):
        """sqlite:~/jobhost.db is in the user's home."""
        home = temp_dir(self)
        with mock.patch.dict(os.environ, {"HOME": home}):
            store = store_from_url("sqlite:~/jobhost.db", MemoryReactor(), temp_dir(self))
        self.addCleanup(store.close)
        self.assertEqual(store.engine.description, "sqlite:" + os.path.join(home, "jobhost.db"))
        self.assertTrue(os.path.exists(os.path.join(home, "jobhost.db")))

    def test_sqlite_file_that_cannot_be_created_is_a_config_error(self):
        """A database path that is a directory (the old directory store's) is refused at [store] url, naming the
        path and the reason."""
        base = temp_dir(self)
        os.makedirs(os.path.join(base, "var", "store"))
        with self.assertRaises(ConfigError) as caught:
            store_from_url("sqlite:var/store", MemoryReactor(), base)
        self.assertEqual(caught.exception.path, ("store", "url"))
        self.assertEqual(
            str(caught.exception),
            f"[store] url: cannot create the SQLite store {os.path.join(base, 'var', 'store')}: Is a directory",
        )

    def test_postgresql_and_postgres_urls_build_an_sql_store_with_the_password_redacted(self):
        """postgresql:// and postgres:// build an SQL store (nothing is connected yet) described without the
        password, which is passed to the driver only when given by password_file."""
        for url in ("postgresql://jobhost:s3cret@db.invalid/jobhost", "postgres://jobhost:s3cret@db.invalid/jobhost"):
            store = store_from_url(url, MemoryReactor(), ".")
            self.addCleanup(store.close)
            self.assertIsInstance(store, SqlStore)
            self.assertEqual(store.engine.name, "postgresql")
            self.assertEqual(store.engine.description, url.replace("s3cret", "***"))
            self.assertNotIn("password", store.engine.pool_args[2])

    def test_without_psycopg_a_postgresql_url_says_how_to_install_it(self):
        """When psycopg is not installed, a postgresql:// URL is a ConfigError at [store] url naming the extra."""
        with mock.patch.dict(sys.modules, {"psycopg": None}):
            with self.assertRaises(ConfigError) as caught:
                store_from_url("postgresql://db.invalid/jobhost", MemoryReactor(), ".")
        self.assertEqual(caught.exception.path, ("store", "url"))
        self.assertIn("pip install 'jobhost[postgresql]'", str(caught.exception))


class PasswordFileModeTests(SynchronousTestCase):
    """read_password_file refuses a file that anyone but its owner may read, write or run."""

    def _file(self, mode: int) -> str:
        path = os.path.join(temp_dir(self), "db.password")
        with open(path, "w") as f:
            f.write("s3cret\r\n")
        os.chmod(path, mode)
        return path

    def test_any_permission_for_group_or_others_is_refused(self):
        """Each group or other permission bit alone makes the file refused, naming its mode."""
        for mode in (0o640, 0o620, 0o610, 0o604, 0o602, 0o601):
            with self.assertRaises(ConfigError) as caught:
                read_password_file(self._file(mode))
            self.assertIn(f"(mode {mode:o}); chmod 600 it", str(caught.exception))

    def test_owner_only_files_are_read_without_the_line_ending_and_closed(self):
        """0600, 0400 and 0700 files are read; a Windows line ending is not part of the password; the file is
        not left open."""
        paths = [self._file(mode) for mode in (0o600, 0o400, 0o700)]
        open_before = len(os.listdir("/proc/self/fd"))
        for path in paths:
            self.assertEqual(read_password_file(path), "s3cret")
        self.assertEqual(len(os.listdir("/proc/self/fd")), open_before)
