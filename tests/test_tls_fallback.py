"""Tests for jobhost.tls.fallback: the self-signed fallback certificate kept on disk."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tls_helpers import ca, fallback_pems, pem_sha256
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from jobhost.certs import load_private_key
from jobhost.errors import InvalidCertificate
from jobhost.timeutil import now
from jobhost.tls.fallback import load_or_create_fallback


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class FallbackTests(SynchronousTestCase):
    def setUp(self) -> None:
        # tempfile, not self.mktemp(): under pytest, mktemp() is relative to the repository.
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = FilePath(directory).child("tls").child("fallback.pem")
        self.now = now(Clock())

    def mode(self, path: FilePath) -> int:
        return stat.S_IMODE(os.stat(path.path).st_mode)

    def with_umask(self, umask: int) -> None:
        previous = os.umask(umask)
        self.addCleanup(os.umask, previous)

    def test_created_private_and_reused(self):
        """The fallback is made once, stored 0600, and the same certificate is returned later."""
        key_pem, cert_pem = load_or_create_fallback(self.path, self.now)
        self.assertEqual(self.mode(self.path), 0o600)
        self.assertEqual(load_or_create_fallback(self.path, self.now), (key_pem, cert_pem))
        leaf = x509.load_pem_x509_certificate(cert_pem)
        self.assertEqual(leaf.subject, leaf.issuer)

    def test_loose_permissions_are_tightened(self):
        """An existing fallback file readable by others is made 0600 again."""
        load_or_create_fallback(self.path, self.now)
        os.chmod(self.path.path, 0o644)
        load_or_create_fallback(self.path, self.now)
        self.assertEqual(self.mode(self.path), 0o600)

    def test_private_whatever_the_umask(self):
        """Under a umask that strips even the owner's write bit, the new file is still exactly 0600."""
        self.path.parent().makedirs()
        self.with_umask(0o277)
        load_or_create_fallback(self.path, self.now)
        self.assertEqual(self.mode(self.path), 0o600)

    def test_expired_fallback_is_replaced(self):
        """A fallback whose certificate has expired is replaced by a new one."""
        _, old = load_or_create_fallback(self.path, self.now)
        _, new = load_or_create_fallback(self.path, self.now + timedelta(days=3651))
        self.assertNotEqual(hashlib.sha256(old).digest(), hashlib.sha256(new).digest())

    def test_replaced_at_the_instant_it_expires(self):
        """The fallback is kept until the second before its notAfter and replaced at notAfter itself."""
        _, old = load_or_create_fallback(self.path, self.now)
        expiry = x509.load_pem_x509_certificate(old).not_valid_after_utc
        self.assertEqual(load_or_create_fallback(self.path, expiry - timedelta(seconds=1))[1], old)
        _, new = load_or_create_fallback(self.path, expiry)
        self.assertNotEqual(new, old)
        self.assertGreater(x509.load_pem_x509_certificate(new).not_valid_after_utc, expiry)

    def test_corrupt_file_is_refused_not_overwritten(self):
        """A fallback file that is not a matching key and certificate raises and is left alone."""
        self.path.parent().makedirs()
        self.path.setContent(b"not pem")
        self.assertRaises(InvalidCertificate, load_or_create_fallback, self.path, self.now)
        self.assertEqual(self.path.getContent(), b"not pem")

    def test_key_of_another_certificate_is_refused_not_overwritten(self):
        """A file whose key belongs to a different certificate raises, naming the file, and is left alone."""
        other_key, _ = ca().issue("other.example.com")
        _, cert_pem = fallback_pems()
        self.path.parent().makedirs()
        self.path.setContent(other_key + cert_pem)
        e = self.assertRaises(InvalidCertificate, load_or_create_fallback, self.path, self.now)
        self.assertIn(self.path.path, e.message)
        self.assertIn("does not match", e.message)
        self.assertEqual(self.path.getContent(), other_key + cert_pem)

    def test_operator_certificate_with_intermediate_is_used(self):
        """An operator's own default (key, leaf, intermediate) is used: the certificate returned is its leaf."""
        key_pem, chain_pem = ca().issue("default.example.com")
        self.path.parent().makedirs()
        self.path.setContent(key_pem + chain_pem)
        os.chmod(self.path.path, 0o600)
        got_key, got_cert = load_or_create_fallback(self.path, self.now)
        self.assertEqual(pem_sha256(got_cert), pem_sha256(chain_pem))
        leaf = x509.load_pem_x509_certificate(got_cert)
        self.assertEqual(_spki(load_private_key(got_key).public_key()), _spki(leaf.public_key()))
        self.assertEqual(self.path.getContent(), key_pem + chain_pem)

    def test_failed_chmod_leaves_nothing_readable_by_others(self):
        """If the mode cannot be set (a filesystem without chmod), the error is raised and no byte was ever group/world accessible."""
        self.path.parent().makedirs()
        self.with_umask(0o022)

        def refuse(fd, mode):
            raise PermissionError(errno.EPERM, "Operation not permitted")

        self.patch(os, "fchmod", refuse)
        self.assertRaises(PermissionError, load_or_create_fallback, self.path, self.now)
        self.assertFalse(self.path.exists())
        for child in self.path.parent().children():
            self.assertEqual(self.mode(child) & 0o077, 0, child.basename())

    def fail_fsync_on(self, directories: bool) -> None:
        real = os.fsync

        def fsync(fd):
            if stat.S_ISDIR(os.fstat(fd).st_mode) == directories:
                raise OSError(errno.EIO, "Input/output error")
            real(fd)

        self.patch(os, "fsync", fsync)

    def test_failed_sync_of_the_file_is_an_error(self):
        """If the new file cannot be synced to disk (EIO), load_or_create_fallback raises instead of using it."""
        self.fail_fsync_on(directories=False)
        e = self.assertRaises(OSError, load_or_create_fallback, self.path, self.now)
        self.assertEqual(e.errno, errno.EIO)
        self.assertFalse(self.path.exists())

    def test_failed_sync_of_the_directory_is_an_error(self):
        """If the directory entry of the new file cannot be synced (EIO), load_or_create_fallback raises."""
        self.fail_fsync_on(directories=True)
        e = self.assertRaises(OSError, load_or_create_fallback, self.path, self.now)
        self.assertEqual(e.errno, errno.EIO)

    def test_no_file_descriptor_left_open(self):
        """Making, reusing and replacing the fallback leave no file descriptor open."""
        if not os.path.isdir("/proc/self/fd"):
            self.skipTest("needs /proc/self/fd")
        before = set(os.listdir("/proc/self/fd"))
        load_or_create_fallback(self.path, self.now)
        load_or_create_fallback(self.path, self.now)
        load_or_create_fallback(self.path, self.now + timedelta(days=3651))
        self.assertEqual(set(os.listdir("/proc/self/fd")) - before, set())

    def test_making_and_replacing_are_logged(self):
        """Making a fallback and replacing an expired one are each logged with the file's path; reusing it is silent."""
        with capturedLogs() as events:
            load_or_create_fallback(self.path, self.now)
            load_or_create_fallback(self.path, self.now)
            load_or_create_fallback(self.path, self.now + timedelta(days=3651))
        self.assertEqual([(e["log_level"], e["path"]) for e in events], [(LogLevel.info, self.path.path)] * 3)
        made, expired, remade = (e["log_format"] for e in events)
        self.assertIn("Made", made)
        self.assertIn("expired", expired)
        self.assertEqual(remade, made)
