"""Tests of jobhost.acme.urls: the config's [acme] directory and the HTTP-01 path (pure)."""

from __future__ import annotations

import pytest

from jobhost.acme.urls import LETSENCRYPT_DIRECTORY, LETSENCRYPT_STAGING_DIRECTORY, http01_path, resolve_directory_url
from jobhost.errors import ConfigError


def test_names_and_urls_with_surrounding_space():
    """Space around a name or URL (a hand-edited config) is ignored."""
    assert resolve_directory_url(" letsencrypt\n") == LETSENCRYPT_DIRECTORY
    assert resolve_directory_url("\tletsencrypt-staging ") == LETSENCRYPT_STAGING_DIRECTORY
    assert resolve_directory_url(" https://ca.example/dir ") == "https://ca.example/dir"


@pytest.mark.parametrize(
    "url", ["http://localhost:14000/dir", "http://127.0.0.1:14000/dir", "http://127.8.9.10/dir", "http://[::1]:14000/dir"]
)
def test_plain_http_to_loopback_is_allowed(url):
    """A test CA on loopback (by name, IPv4 or IPv6) may be plain HTTP."""
    assert resolve_directory_url(url) == url


@pytest.mark.parametrize(
    "value", ["http://ca.example/dir", "http://10.0.0.1/dir", "http://localhost.example/dir", "https:///dir", "letsencrypt-prod", ""]
)
def test_unusable_values_name_the_setting(value):
    """Plain HTTP beyond loopback, a URL without host, or an unknown name is a ConfigError naming [acme] directory."""
    with pytest.raises(ConfigError) as info:
        resolve_directory_url(value)
    assert info.value.path == ("acme", "directory")
    assert "letsencrypt, letsencrypt-staging" in str(info.value)


def test_http01_path():
    """The CA fetches a token's key authorization at /.well-known/acme-challenge/<token> (RFC 8555 section 8.3)."""
    assert http01_path("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA") == (
        "/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    )
