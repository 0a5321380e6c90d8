"""
``jobhost-admin``: the admin API from a shell.

::

    jobhost-admin [--url URL | --config etc/jobhost.toml] [--token-file FILE] [--json] COMMAND

    domains add HOSTNAME [--page FILE] [--skip-preflight]
    domains list [--state STATE | --all] [--prefix TEXT] [--expires-before TIME]
    domains show HOSTNAME
    domains remove HOSTNAME [--revoke]
    domains renew HOSTNAME
    page set HOSTNAME FILE          (FILE "-" reads standard input)
    page show HOSTNAME
    diagnose HOSTNAME

Where to connect: ``--url``, else the ``[listen] admin`` endpoint of
``--config`` (``tcp:8081:interface=127.0.0.1`` -> ``http://127.0.0.1:8081``),
else ``http://127.0.0.1:8081``.  The token: ``--token-file``, else the
config's ``[admin] token_file``, else ``var/admin.token``.

Output is a readable table or summary; ``--json`` prints the API's JSON
instead.  ``domains list`` leaves out removed hostnames unless ``--all`` or
``--state removed`` asks for them; ``domains remove`` of a hostname already
removed says so and changes nothing.  Exit status: 0 done; 1 the API refused (its message on standard
error) or could not be reached; 2 a usage error (bad arguments, unreadable
page file or config); 3 ``diagnose`` found a failing check.

This is a command-line program, not reactor code: it blocks on
``urllib.request``, which is fine here.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import ProxyHandler, Request, build_opener

import attrs

DEFAULT_URL = "http://127.0.0.1:8081"
DEFAULT_TOKEN_FILE = "var/admin.token"
STATES = ("pending", "issuing", "active", "renewing", "failing", "paused", "removed")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3


class UsageError(Exception):
    """The command line, a file it names, or the config is wrong (exit 2)."""


@attrs.define(eq=False)
class ApiFailure(Exception):
    """The API answered with an error document, or could not be reached (exit 1).

    Attributes:
        message: What to print.
        status: The HTTP status, or None when there was no answer.
        code: The API's error code, when it sent one.
        details: The API's error details.
    """

    message: str
    status: int | None = None
    code: str | None = None
    details: dict[str, Any] = attrs.field(factory=dict)


def endpoint_to_url(endpoint: str) -> str:
    """Turn a Twisted server endpoint string (``[listen] admin``) into the URL to reach it.

    ``tcp:8081:interface=127.0.0.1`` -> ``http://127.0.0.1:8081``; a wildcard
    interface (or none) is reached on loopback; ``ssl:`` gives ``https``.

    Raises:
        UsageError: for endpoints a URL cannot reach (``unix:``, ``systemd:``...).
    """
    parts: list[str] = []
    current = ""
    escaped = False
    for char in endpoint:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    kind = "tcp"
    if parts and not parts[0].isdigit():
        kind = parts.pop(0).lower()
    if kind not in ("tcp", "tcp6", "ssl"):
        raise UsageError(f"cannot reach a {kind}: admin listener with HTTP; pass --url")
    positional = [p for p in parts if "=" not in p]
    options = dict(p.split("=", 1) for p in parts if "=" in p)
    port = options.get("port") or (positional[0] if positional else "")
    if not port.isdigit():
        raise UsageError(f"no port in the admin endpoint {endpoint!r}; pass --url")
    interface = options.get("interface", "")
    if interface in ("", "0.0.0.0"):
        interface = "127.0.0.1"
    elif interface == "::":
        interface = "::1"
    host = f"[{interface}]" if ":" in interface else interface
    scheme = "https" if kind == "ssl" else "http"
    return f"{scheme}://{host}:{port}"


@attrs.define
class AdminClient:
    """A blocking client of the admin API.

    Attributes:
        url: The API's base URL, e.g. ``http://127.0.0.1:8081``.
        token: The bearer token.
        timeout: Seconds to wait for each answer.
    """

    url: str
    token: str = attrs.field(repr=False)
    timeout: float = 60.0

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        """Send one request; return the decoded JSON answer.

        Raises:
            ApiFailure: with the API's error message, or why it could not be reached.
        """
        url = self.url.rstrip("/") + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = Request(url, data=data, headers=headers, method=method)
        # No proxies: the admin API is on this host or a private network.
        opener = build_opener(ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return self._decode(response.status, response.read(), url)
        except HTTPError as e:
            raw = e.read()
            try:
                error = json.loads(raw)["error"]
                message, code, details = error["message"], error["code"], error.get("details") or {}
            except (ValueError, KeyError, TypeError):
                raise ApiFailure(
                    f"HTTP {e.code} from {url}, not a jobhost admin API answer", status=e.code
                ) from None
            raise ApiFailure(message, status=e.code, code=code, details=details) from None
        except URLError as e:
            raise ApiFailure(f"cannot reach the admin API at {self.url}: {e.reason}") from None
        except (OSError, TimeoutError) as e:
            raise ApiFailure(f"cannot reach the admin API at {self.url}: {e}") from None

    @staticmethod
    def _decode(status: int, raw: bytes, url: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiFailure(f"HTTP {status} from {url} is not JSON", status=status) from None


# -- output ------------------------------------------------------------------------------------


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _short(text: Any, width: int) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _display_name(domain: dict[str, Any]) -> str:
    unicode_name = domain.get("hostname_unicode")
    if unicode_name and unicode_name != domain["hostname"]:
        return f"{unicode_name} ({domain['hostname']})"
    return domain["hostname"]


def format_domain_list(domains: list[dict[str, Any]], hidden: int = 0) -> str:
    """The ``domains list`` table; ``hidden`` removed hostnames left out are counted under it."""
    note = f"\n({hidden} removed not shown; --all shows them)" if hidden else ""
    if not domains:
        return "No domains." + note
    rows = []
    for d in domains:
        certificate = d.get("certificate") or {}
        error = (d.get("last_error") or {}).get("message") if d["state"] in ("failing", "paused") else ""
        rows.append(
            [
                d["hostname"],
                d["state"],
                certificate.get("not_after") or "-",
                d.get("next_attempt") or "-",
                _short(error, 50),
            ]
        )
    return _table(rows, ["HOSTNAME", "STATE", "EXPIRES", "NEXT ATTEMPT", "LAST ERROR"]) + note


def format_domain(d: dict[str, Any]) -> str:
    """The ``domains show`` summary."""
    lines = [
        f"Hostname:      {_display_name(d)}",
        f"State:         {d['state']}",
        f"Registered:    {d['created_at']}",
        f"Updated:       {d['updated_at']}",
        f"Attempts:      {d.get('attempts', 0)} failed in a row",
        f"Next attempt:  {d.get('next_attempt') or '-'}",
    ]
    error = d.get("last_error")
    if error:
        lines.append(f"Last error:    {error.get('code', '')}: {error.get('message', '')}")
    if d.get("unpause_url"):
        lines.append(f"Unpause at:    {d['unpause_url']}")
    page = d.get("page")
    lines.append(f"Page:          {page['company']} ({len(page.get('jobs', []))} jobs)" if page else "Page:          -")
    c = d.get("certificate")
    if c:
        lines += [
            "Certificate:",
            f"  Issuer:      {c['issuer']}",
            f"  Serial:      {c['serial']}",
            f"  Valid:       {c['not_before']} .. {c['not_after']}",
            f"  SHA-256:     {c['fingerprint_sha256']}",
            f"  Names:       {', '.join(c.get('names', []))}",
        ]
        if c.get("acme_issuer"):
            lines.append(f"  From:        {c['acme_issuer']} ({c.get('directory_url') or 'directory unknown'})")
        if c.get("ari"):
            lines.append(f"  Renew in:    {c['ari']['start']} .. {c['ari']['end']} (CA's window)")
    else:
        lines.append("Certificate:   none yet")
    if d.get("history"):
        lines.append("History:")
        for h in d["history"][-10:]:
            lines.append(f"  {h['at']}  {h['state']:<9} {h.get('reason') or ''}".rstrip())
    return "\n".join(lines)


def format_diagnostics(doc: dict[str, Any]) -> str:
    """The ``diagnose`` report: one line per check, with hints under failures."""
    marks = {True: "PASS", False: "FAIL", None: "SKIP"}
    where = f"state {doc['state']}" if "state" in doc else "not registered: preflight and self-check only"
    lines = [f"Diagnostics for {doc['hostname']} ({where}):"]
    for check in doc["checks"]:
        lines.append(f"  {marks[check['passed']]}  {check['name']:<12} {check['message']}")
        if check["passed"] is False and check.get("hint"):
            lines.append(f"        {'':<12} hint: {check['hint']}")
    lines.append("All checks passed." if doc["ok"] else "Some checks failed.")
    return "\n".join(lines)


def format_failure(failure: ApiFailure) -> str:
    """What ``jobhost-admin`` prints on standard error for an API error."""
    lines = [f"jobhost-admin: error: {failure.message}"]
    details = failure.details or {}
    if failure.code == "preflight_failed":
        for reason in details.get("reasons", []):
            if reason.get("fix"):
                lines.append(f"  fix: {reason['fix']}")
        if details.get("retryable"):
            lines.append("  (this may be temporary: try again in a few minutes)")
    elif failure.code == "invalid_page":
        for field, message in details.get("errors", {}).items():
            lines.append(f"  {field or '(page)'}: {message}")
    elif failure.code == "unauthorized":
        lines.append("  check --token-file (or [admin] token_file in --config)")
    return "\n".join(lines)


# -- commands ----------------------------------------------------------------------------------


def _path(hostname: str, suffix: str = "") -> str:
    return "/api/v1/domains/" + quote(hostname, safe="") + suffix


def _read_json_file(name: str, stdin: TextIO) -> Any:
    try:
        text = stdin.read() if name == "-" else Path(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {name}: {e}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise UsageError(f"{name} is not JSON: {e}") from None


def _run(args: argparse.Namespace, client: AdminClient, out: TextIO, stdin: TextIO) -> int:
    def emit(doc: Any, text: str) -> None:
        out.write((json.dumps(doc, indent=2, ensure_ascii=False) if args.json else text) + "\n")

    if args.command == "domains":
        if args.action == "add":
            body: dict[str, Any] = {"hostname": args.hostname}
            if args.page:
                body["page"] = _read_json_file(args.page, stdin)
            if args.skip_preflight:
                body["skip_preflight"] = True
            doc = client.request("POST", "/api/v1/domains", body)
            emit(doc, f"Registered {_display_name(doc)}: state {doc['state']}.")
        elif args.action == "list":
            query = {"limit": "500"}
            for key, value in (("state", args.state), ("q", args.prefix), ("expires_before", args.expires_before)):
                if value:
                    query[key] = value
            domains: list[dict[str, Any]] = []
            while True:
                page = client.request("GET", "/api/v1/domains", query=query)
                domains += page["domains"]
                if not page.get("next_cursor"):
                    break
                query["cursor"] = page["next_cursor"]
            hidden = 0
            if not (args.all or args.state):
                # Removed hostnames are history, not what is served: asked for with --all or --state removed.
                shown = [d for d in domains if d["state"] != "removed"]
                hidden, domains = len(domains) - len(shown), shown
            emit({"domains": domains, "next_cursor": None}, format_domain_list(domains, hidden))
        elif args.action == "show":
            doc = client.request("GET", _path(args.hostname))
            emit(doc, format_domain(doc))
        elif args.action == "remove":
            current = client.request("GET", _path(args.hostname))
            if current["state"] == "removed":
                # Removing again would change nothing (its certificate went with the first removal).
                emit(current, f"{_display_name(current)} was already removed: nothing to do.")
                return EXIT_OK
            query = {"revoke": "true"} if args.revoke else None
            doc = client.request("DELETE", _path(args.hostname), query=query)
            revoked = " (certificate revoked)" if args.revoke else ""
            emit(doc, f"Removed {_display_name(doc)}{revoked}: no longer served or renewed.")
        elif args.action == "renew":
            doc = client.request("POST", _path(args.hostname, "/renew"))
            emit(
                doc,
                f"Renewal of {_display_name(doc)} started; follow it with: "
                f"{_command_line(args, 'domains', 'show', doc['hostname'])}",
            )
    elif args.command == "page":
        if args.action == "set":
            page = _read_json_file(args.file, stdin)
            doc = client.request("PUT", _path(args.hostname, "/page"), page)
            emit(doc, f"Page of {args.hostname} saved: {doc['company']}, {len(doc.get('jobs', []))} jobs.")
        else:
            doc = client.request("GET", _path(args.hostname, "/page"))
            emit(doc, json.dumps(doc, indent=2, ensure_ascii=False))
    elif args.command == "diagnose":
        try:
            doc = client.request("GET", _path(args.hostname, "/diagnostics"))
        except ApiFailure as e:
            if e.code != "not_found":
                raise
            # Not registered: the checks a customer's name must pass before it is registered.
            doc = client.request("GET", "/api/v1/check", query={"hostname": args.hostname})
        emit(doc, format_diagnostics(doc))
        return EXIT_OK if doc["ok"] else EXIT_CHECK_FAILED
    return EXIT_OK


def _command_line(args: argparse.Namespace, *words: str) -> str:
    """A ``jobhost-admin`` command to suggest, with the --config, --url and --token-file this one was given."""
    import shlex

    given = [(option, getattr(args, attr, None)) for option, attr in
             (("--config", "config"), ("--url", "url"), ("--token-file", "token_file"))]
    argv = ["jobhost-admin"] + [part for option, value in given if value for part in (option, value)] + list(words)
    return shlex.join(argv)


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after the command's name."""
    # Below the top level the defaults are SUPPRESS, so an option given before the
    # command is not overwritten by the subcommand parser's default.
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument(
        "--url", default=default(None), help=f"admin API URL (default: from --config, else {DEFAULT_URL})"
    )
    parser.add_argument(
        "--config", default=default(None), help="jobhost's TOML config, for [listen] admin and [admin] token_file"
    )
    parser.add_argument(
        "--token-file",
        default=default(None),
        help=f"file holding the admin token (default: from --config, else {DEFAULT_TOKEN_FILE})",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the API's JSON instead of tables"
    )
    parser.add_argument(
        "--timeout", type=float, default=default(60.0), help="seconds to wait for an answer (default 60)"
    )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that prints to given streams rather than the process's."""

    def __init__(self, *args: Any, streams: tuple[TextIO, TextIO] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams = streams

    def _print_message(self, message: str, file: Any = None) -> None:
        if self.streams is not None and message:
            out, err = self.streams
            file = out if file is sys.stdout else err
        super()._print_message(message, file)


def build_parser(stdout: TextIO | None = None, stderr: TextIO | None = None) -> argparse.ArgumentParser:
    """The argument parser; help goes to ``stdout`` and usage errors to ``stderr``."""
    streams = (stdout or sys.stdout, stderr or sys.stderr)
    sub = functools.partial(_Parser, streams=streams)
    parser = _Parser(
        streams=streams,
        prog="jobhost-admin",
        description="Manage jobhost's hostnames, certificates and careers pages through its admin API.",
        epilog="Exit status: 0 done, 1 API error or unreachable, 2 usage error, 3 diagnose found a failing check.",
    )
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=sub)

    domains = commands.add_parser("domains", help="register, list, show, remove and renew hostnames")
    actions = domains.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=sub)
    add = actions.add_parser("add", help="register a hostname (runs the DNS/CAA preflight)")
    add.add_argument("hostname")
    add.add_argument("--page", metavar="FILE", help="careers page JSON file ('-' for standard input)")
    add.add_argument("--skip-preflight", action="store_true", help="register even if DNS does not point here yet")
    listing = actions.add_parser("list", help="list hostnames (removed ones only with --all or --state removed)")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--state", choices=STATES, help="only hostnames in this state")
    which.add_argument("--all", action="store_true", help="removed hostnames too")
    listing.add_argument("--prefix", help="only hostnames starting with this")
    listing.add_argument("--expires-before", metavar="TIME", help="only certificates ending before this RFC 3339 time")
    show = actions.add_parser("show", help="a hostname's state, certificate and history")
    show.add_argument("hostname")
    remove = actions.add_parser("remove", help="stop serving and renewing a hostname")
    remove.add_argument("hostname")
    remove.add_argument("--revoke", action="store_true", help="revoke its certificate at the CA first")
    renew = actions.add_parser("renew", help="start an issuance attempt now")
    renew.add_argument("hostname")

    page = commands.add_parser("page", help="set or show a hostname's careers page")
    page_actions = page.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=sub)
    page_set = page_actions.add_parser("set", help="replace the page with a JSON file ('-' for standard input)")
    page_set.add_argument("hostname")
    page_set.add_argument("file")
    page_show = page_actions.add_parser("show", help="print the page")
    page_show.add_argument("hostname")

    diagnose = commands.add_parser(
        "diagnose", help="fresh DNS, CAA, self-check and certificate checks (DNS, CAA and self-check only for a name not registered)"
    )
    diagnose.add_argument("hostname")
    for leaf in (add, listing, show, remove, renew, page_set, page_show, diagnose):
        _global_options(leaf, top=False)
    return parser


def _settings(args: argparse.Namespace) -> tuple[str, str]:
    """The URL and token file from the arguments, the config, or the defaults."""
    url, token_file = args.url, args.token_file
    if args.config:
        from jobhost.config import load_config
        from jobhost.errors import ConfigError

        try:
            config = load_config(args.config)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        url = url or endpoint_to_url(config.listen.admin)
        token_file = token_file or str(config.path(config.admin.token_file))
    return url or DEFAULT_URL, token_file or DEFAULT_TOKEN_FILE


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ApiFailure(f"cannot read the admin token from {path}: {getattr(e, 'strerror', None) or e}") from None
    if not token:
        raise ApiFailure(f"the admin token file {path} is empty")
    return token


def main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run ``jobhost-admin``; return the exit status (see the module docstring).

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` by default.
        stdout, stderr, stdin: Streams to use instead of the process's.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser(out, err)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        url, token_file = _settings(args)
        client = AdminClient(url, _read_token(token_file), args.timeout)
        return _run(args, client, out, stdin or sys.stdin)
    except UsageError as e:
        err.write(f"jobhost-admin: error: {e}\n")
        return EXIT_USAGE
    except ApiFailure as e:
        err.write(format_failure(e) + "\n")
        return EXIT_ERROR


if __name__ == "__main__":  # python -m jobhost.admin.cli
    sys.exit(main())


__all__ = [
    "AdminClient",
    "ApiFailure",
    "DEFAULT_TOKEN_FILE",
    "DEFAULT_URL",
    "EXIT_CHECK_FAILED",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "endpoint_to_url",
    "format_diagnostics",
    "format_domain",
    "format_domain_list",
    "format_failure",
    "main",
]
