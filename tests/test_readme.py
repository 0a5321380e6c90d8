"""README checks: what it tells a new user matches the code and the embedded defaults.

(tests/integration/test_walkthroughs.py runs the walk-throughs' commands themselves.)
"""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
from readme_blocks import ROOT, commands, section, shell_block

from jobhost.store.factory import supported_store_urls

FIRST = "Walk-through: serve a certificate you made yourself"
PEBBLE = "Walk-through: certificates from a local ACME CA (Pebble)"


def _listen_defaults() -> dict[str, str]:
    return tomllib.loads((ROOT / "etc" / "jobhost.toml").read_text())["listen"]


def _file_arguments(command: str) -> list[str]:
    """The paths a command reads or writes, by option (openssl, jobhost-store, curl)."""
    words = shlex.split(command.replace("<(", "( "))
    options = {"-keyout", "-out", "-in", "-CA", "-CAkey", "--key", "--chain", "--cacert", "--page"}
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word in options]


def test_the_first_walk_through_keeps_its_files_under_var_demo():
    """Every file the first walk-through makes or names is under var/demo/ (or is the repository's example
    page); openssl's -CAcreateserial puts its .srl beside the CA, so that goes there too."""
    block = commands(shell_block(FIRST))
    assert block[0] == "mkdir -p var/demo"
    paths = [path for command in block for path in _file_arguments(command)]
    assert len(paths) >= 12, paths
    assert [p for p in paths if not p.startswith("var/demo/") and p != "etc/example-page.json"] == []
    signing = next(c for c in block if "-CAcreateserial" in c)
    assert "-CA var/demo/" in signing


def test_the_pebble_walk_through_runs_twistd_with_its_own_pid_file():
    """The Pebble walk-through's twistd (README and docs/pebble.md) has a --pidfile under var/pebble/, so it
    starts while the quick-start daemon holds twistd.pid in the same directory."""
    for text in (section(PEBBLE), (ROOT / "docs" / "pebble.md").read_text()):
        runs = [line for line in text.splitlines() if line.startswith("twistd -")]
        assert runs, "no twistd command"
        for line in runs:
            words = shlex.split(line)
            options = words[: words.index("jobhost")]
            assert "--pidfile" in options, line
            assert options[options.index("--pidfile") + 1].startswith("var/pebble/"), line


def test_quick_start_says_where_each_default_listener_binds():
    """The quick start names each embedded default listener's port, and says "every interface" for those
    without an interface= (never 127.0.0.1), and the address for those with one."""
    quick = section("Quick start")
    for key, endpoint in _listen_defaults().items():
        parts = endpoint.split(":")
        port = parts[1]
        interface = next((p.split("=", 1)[1] for p in parts if p.startswith("interface=")), None)
        assert f"port {port}" in quick or f":{port}" in quick, (key, endpoint)
        if interface is None:
            assert f"127.0.0.1:{port}" not in quick, f"{key} ({endpoint}) binds every interface"
            sentence = next(s for s in re.split(r"(?<=\.)\s", quick.replace("\n", " ")) if f"port {port}" in s)
            assert "every interface" in sentence, sentence
        else:
            assert f"http://{interface}:{port}" in quick, (key, endpoint)


def test_the_readme_lists_exactly_the_store_urls_the_factory_supports():
    """The [store] row of the configuration table names every store URL form jobhost.store.factory accepts (the
    forms its error message lists), no other scheme, and the embedded default."""
    row = next(line for line in section("Configuration").splitlines() if line.startswith("| `[store]`"))
    forms = supported_store_urls()
    assert [f for f in forms if f"`{f}`" not in row] == []
    named = set(re.findall(r"`([a-z]+):", row))
    assert named == {f.split(":", 1)[0] for f in forms}
    default = tomllib.loads((ROOT / "etc" / "jobhost.toml").read_text())["store"]["url"]
    assert f"the default, `{default}`" in row


@pytest.mark.parametrize("title", [FIRST, PEBBLE])
def test_walk_through_commands_use_only_installed_tools(title):
    """The walk-throughs call only programs a new user has after the quick start (no hidden helpers)."""
    known = {"mkdir", "openssl", "jobhost-store", "jobhost-admin", "curl", "python3", "cat", "twistd"}
    used = {command.split()[0] for command in commands(shell_block(title))}
    assert used <= known, used - known
