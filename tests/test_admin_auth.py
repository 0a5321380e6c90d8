"""Tests for jobhost.admin.auth: the admin token file (created once, 0600, read back on every
restart) and the constant-time bearer comparison."""

import base64
import os
import stat

import pytest

from jobhost.admin import auth
from jobhost.admin.auth import load_or_create_token, token_matches
from jobhost.errors import ConfigError


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_creates_a_256_bit_token_0600_in_a_new_0700_directory(tmp_path):
    path = tmp_path / "secrets" / "nested" / "admin.token"
    token = load_or_create_token(path)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_restart_reads_the_same_token_back(tmp_path):
    path = tmp_path / "admin.token"
    first = load_or_create_token(path)
    assert load_or_create_token(path) == first


def test_an_operator_written_token_is_used_without_its_newline_or_spaces(tmp_path):
    path = tmp_path / "admin.token"
    path.write_text("  sixteen-chars-ok  \n")
    assert load_or_create_token(path) == "sixteen-chars-ok"


@pytest.mark.parametrize("content", ["", "\n", "fifteen-chars-x", "  fifteen-chars-x \n"])
def test_a_short_or_empty_token_file_is_refused_with_its_path(tmp_path, content):
    path = tmp_path / "admin.token"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_or_create_token(path, ("webhooks", "secret_file"), "webhook secret")
    assert f"webhook secret in {path} is shorter than 16 characters" in str(caught.value)
    assert caught.value.path == ("webhooks", "secret_file")
    assert path.read_text() == content  # nothing replaced


def test_an_unreadable_token_file_is_refused(tmp_path):
    path = tmp_path / "admin.token"
    path.write_bytes(b"\xff" * 20)
    with pytest.raises(ConfigError, match=f"cannot read admin token file {path}"):
        load_or_create_token(path)


def test_a_token_that_cannot_be_created_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "admin.token"

    def full_disk(name, flags, mode=0o777):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(auth.os, "open", full_disk)  # (the tests run as root: no EACCES)
    with pytest.raises(ConfigError) as caught:
        load_or_create_token(path)
    assert str(caught.value).endswith(
        f"cannot create admin token file {path}: No space left on device"
    )


def test_a_token_created_concurrently_by_another_process_wins(tmp_path, monkeypatch):
    path = tmp_path / "admin.token"
    real_open = os.open

    def racing_open(name, flags, mode=0o777):
        if not path.exists():
            path.write_text("the-other-process-token\n")
        return real_open(name, flags, mode)

    monkeypatch.setattr(auth.os, "open", racing_open)
    assert load_or_create_token(path) == "the-other-process-token"


TOKEN = "s3cret-token-of-some-length"


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer " + TOKEN.encode(),
        b"bearer " + TOKEN.encode(),  # the scheme is case-insensitive (RFC 9110 11.1)
        b"BEARER " + TOKEN.encode(),
        b"Bearer " + TOKEN.encode() + b" ",
    ],
)
def test_a_bearer_header_with_the_token_matches(header):
    assert token_matches(TOKEN, header) is True


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Bearer",
        b"Bearer ",
        b"Bearer " + TOKEN[:-1].encode(),
        b"Bearer " + TOKEN.encode() + b"x",
        b"Basic " + TOKEN.encode(),
        TOKEN.encode(),
    ],
)
def test_anything_else_does_not(header):
    assert token_matches(TOKEN, header) is False


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_may_read_is_made_0600_and_logged(tmp_path, mode):
    """An existing token file with group or world bits is tightened to 0600, with a warning naming it."""
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    path = tmp_path / "admin.token"
    path.write_text("sixteen-chars-ok\n")
    path.chmod(mode)
    with capturedLogs() as events:
        assert load_or_create_token(path) == "sixteen-chars-ok"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
    text = formatEvent(warning)
    assert str(path) in text and f"mode {mode:04o}" in text and "made it 0600" in text
    assert "sixteen-chars-ok" not in text, "the secret itself is never logged"


def test_a_private_token_file_is_read_silently(tmp_path):
    """A 0600 token file is read with nothing logged."""
    from twisted.logger import capturedLogs

    path = tmp_path / "admin.token"
    load_or_create_token(path)
    with capturedLogs() as events:
        load_or_create_token(path)
    assert events == []


def test_a_readable_token_file_that_cannot_be_tightened_is_refused(tmp_path, monkeypatch):
    """When chmod fails (the file is someone else's), start-up stops with the key, path and mode."""
    from pathlib import Path

    path = tmp_path / "admin.token"
    path.write_text("sixteen-chars-ok\n")
    path.chmod(0o644)

    def refuse(self, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "chmod", refuse)  # an injected fault: root may chmod anything
    with pytest.raises(ConfigError) as caught:
        load_or_create_token(path, ("events", "webhook_secret_file"), "webhook secret")
    assert caught.value.path == ("events", "webhook_secret_file")
    assert f"webhook secret file {path} is readable by others (mode 0644)" in str(caught.value)
    assert "chmod 600" in str(caught.value)
