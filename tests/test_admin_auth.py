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
