"""The ``jwtapi`` command: ``serve``, ``users add|list|remove|passwd|scope``, ``keys generate``,
``db upgrade``, ``token issue|inspect``.

Every command reads the same configuration as the server. A bad argument or a bad
configuration prints one line naming the problem to stderr and exits non-zero; never a
traceback. ``users passwd``, ``users remove`` and ``token issue`` write their audit line
where ``JWTAPI_AUDIT_LOG`` says (``-``: stderr).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from jwtapi.audit import AuditTrail, configure_trail
from jwtapi.events import Events
from jwtapi.exceptions import ConfigError, InvalidScope
from jwtapi.passwords import PasswordPolicyError, Passwords, check_password_policy
from jwtapi.sessions import Revoker
from jwtapi.settings import (
    ALGORITHMS,
    HMAC_ALGORITHMS,
    PREFIX,
    Settings,
    load_settings,
    redact_url,
)
from jwtapi.stores import open_database, open_stores
from jwtapi.stores.base import StoreError, UnknownUser

if TYPE_CHECKING:
    from jwtapi.metrics import MultiprocessDirectory

PROG = "jwtapi"


class CommandError(Exception):
    """A command failed for a reason the user can fix; the message is one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = _Parser(prog=PROG, description="jwtapi: JWT authentication API and library.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the API under gunicorn")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=5000, help="port to listen on")
    serve.add_argument("--workers", type=_positive, default=2, help="worker processes")
    serve.add_argument("--certfile", type=Path, help="TLS certificate (PEM) for HTTPS")
    serve.add_argument("--keyfile", type=Path, help="TLS private key (PEM) for HTTPS")

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    add = users.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--scope", default="", help='space-separated scopes, e.g. "read admin"')
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    users.add_parser("list", help="list users")
    remove = users.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    scope = users.add_parser("scope", help="replace a user's scopes")
    scope.add_argument("name")
    scope.add_argument("scope", help='space-separated scopes, e.g. "read admin"; "" for none')
    passwd = users.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )

    keys = commands.add_parser("keys", help="manage signing keys").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    generate = keys.add_parser("generate", help="write a new private/public PEM key pair")
    generate.add_argument(
        "--algorithm",
        required=True,
        choices=sorted(ALGORITHMS - HMAC_ALGORITHMS),
        metavar="ALG",
        help="RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA",
    )
    generate.add_argument("--out", type=Path, required=True, help="directory to write to")

    token = commands.add_parser("token", help="issue or inspect access tokens").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    issue = token.add_parser("issue", help="print a signed access token for a user")
    issue.add_argument("name")
    issue.add_argument("--scope", help="a subset of the user's scopes (default: all of them)")
    issue.add_argument("--ttl", type=_positive, help="seconds it lives (default: the setting)")
    inspect = token.add_parser(
        "inspect",
        help="read a token from stdin; print its header and claims, and whether it is valid",
    )
    # Taken only to be refused without echoing it (argparse would print it back).
    inspect.add_argument("given", nargs="*", help=argparse.SUPPRESS)

    db = commands.add_parser("db", help="manage the database").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    db.add_parser("upgrade", help="create or migrate the schema of JWTAPI_DATABASE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, argv)
        if args.command == "users":
            return _users(args, load_settings())
        if args.command == "db":
            return _db_upgrade(load_settings())
        if args.command == "token":
            if args.action == "issue":
                return _token_issue(args, load_settings())
            if args.given:
                print(f"{PROG} token inspect: error: {STDIN_NOT_ARGUMENT}", file=sys.stderr)
                return 2
            return _token_inspect(load_settings())
        return _keys_generate(args)
    except (ConfigError, CommandError, StoreError, PasswordPolicyError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """``jwtapi serve``. With metrics on, it first makes the multiprocess directory and
    runs itself again with ``PROMETHEUS_MULTIPROC_DIR`` in its environment (the same
    process: the workers inherit it, and prometheus-client sees it before its import)."""
    if (args.certfile is None) != (args.keyfile is None):
        raise CommandError("--certfile and --keyfile go together: give both or neither")
    for flag, path in (("--certfile", args.certfile), ("--keyfile", args.keyfile)):
        if path is not None and not path.is_file():
            raise CommandError(f"{flag}: cannot read {path}")
    if args.certfile is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.certfile, args.keyfile
            )
        except (ssl.SSLError, OSError):
            raise CommandError(
                "--certfile/--keyfile: not a PEM certificate and its matching private key"
            ) from None
    _check_listen(args.host, args.port)
    settings = load_settings()
    directory: MultiprocessDirectory | None = None
    if settings.metrics_address is not None:
        host, port = settings.metrics_address
        if port == args.port:
            raise CommandError(
                f"{PREFIX}METRICS_ADDRESS: port {port} is the API's (--port): give the "
                "metrics a port of their own"
            )
        _check_listen(host, port, f"{PREFIX}METRICS_ADDRESS")
        directory = _metrics_directory(argv)
    try:
        return _run_server(args, settings)
    finally:
        if directory is not None:
            directory.remove()


def _run_server(args: argparse.Namespace, settings: Settings) -> int:
    from jwtapi.app import create_app
    from jwtapi.logging import JSON, JSONFormatter
    from jwtapi.server import ServeOptions, serve

    if settings.log_format == JSON:
        # Until gunicorn's own handlers take over: the lines of start-up, JSON too.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        logging.getLogger().handlers = [handler]
        logging.getLogger("jwtapi").propagate = True
    configure_trail(settings)
    app = create_app(settings=settings)
    options = ServeOptions(args.host, args.port, args.workers, args.certfile, args.keyfile)
    serve(app, settings, options)
    return 0


def _metrics_directory(argv: Sequence[str] | None) -> MultiprocessDirectory:
    """The multiprocess directory this process made before it re-executed itself; or a
    new one, and the re-execution (which does not return)."""
    from jwtapi.metrics import MultiprocessDirectory

    inherited = MultiprocessDirectory.inherited()
    if inherited is not None:
        return inherited
    directory = MultiprocessDirectory.create()
    command = list(sys.orig_argv) if argv is None else ["-m", "jwtapi", *argv]
    if argv is not None:
        command.insert(0, sys.executable)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, command)  # noqa: S606 - this very program, again
    except OSError as exc:
        directory.remove()
        raise CommandError(f"cannot start the server again: {exc.strerror or exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _check_listen(host: str, port: int, setting: str | None = None) -> None:
    """Refuse at once, in one line, an address gunicorn (or, naming ``setting``, the
    metrics listener) could not listen on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise CommandError(f"{setting or '--host'}: cannot resolve {host}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise CommandError(
                f"{setting or '--port'}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None


def _audited() -> Events:
    """The events of a CLI command, written to the audit trail (no request: no id, no
    client address)."""
    events = Events()
    AuditTrail().subscribe(events)
    return events


def _users(args: argparse.Namespace, settings: Settings) -> int:
    stores = open_stores(settings.database, settings.redis_url)
    users = stores.users
    if args.action in ("passwd", "remove"):
        configure_trail(settings, sys.stderr)
    revoker = Revoker(stores.families, stores.revocations, settings.leeway, _audited())
    if args.action == "list":
        for user in users.list():
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(user.created_at))
            print(f"{user.name}\t{user.scope or '-'}\t{created}Z")
        return 0
    if args.action == "remove":
        try:
            users.remove(args.name)
        except UnknownUser:
            # Already gone, perhaps by a removal whose revocations an outage cut short
            # (and no known user's name: not for the audit trail).
            revoker.revoke_user(args.name, audited=False)
            raise
        logins = revoker.revoke_user(args.name)
        print(f"removed user {args.name}; revoked the tokens of {logins} login(s)")
        return 0
    if args.action == "scope":
        scope = users.set_scope(args.name, args.scope)
        print(
            f"set the scope of {args.name} to {scope!r}; every login of theirs takes it at its "
            "next refresh"
        )
        return 0
    if args.action == "passwd" and users.get(args.name) is None:
        raise CommandError(f"no user {args.name!r}")
    password = _read_password(args.password_stdin)
    password_hash = Passwords().hash(password)
    if args.action == "add":
        user = users.add(args.name, password_hash, args.scope)
        print(f"added user {user.name}" + (f" with scope {user.scope!r}" if user.scope else ""))
    else:
        users.set_password(args.name, password_hash)
        logins = revoker.revoke_user(args.name)
        print(
            f"changed the password of {args.name}; revoked the tokens of {logins} earlier login(s)"
        )
    return 0


def _read_password(from_stdin: bool) -> str:
    """A new password from stdin (one line) or typed twice at a terminal prompt."""
    if from_stdin:
        try:
            line = sys.stdin.buffer.readline().decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("the password on stdin is not UTF-8 text") from None
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            raise CommandError("no terminal to ask for the password on: use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise CommandError("the passwords do not match")
    check_password_policy(password)
    return password


def _token_issue(args: argparse.Namespace, settings: Settings) -> int:
    """Sign an access token for a user, with a login of its own (revoked like any other by
    ``users passwd`` and ``users remove``). Only the token goes to stdout."""
    from jwtapi.keys import load_keys
    from jwtapi.sessions import Sessions, narrowed
    from jwtapi.tokens import TokenService
    from jwtapi.users import UserTable

    tokens = TokenService(settings, load_keys(settings))
    if not tokens.can_issue:
        raise CommandError("this configuration holds no signing key: it only verifies tokens")
    stores = open_stores(settings.database, settings.redis_url)
    user = stores.users.get(args.name)
    if user is None:
        raise CommandError(f"no user {args.name!r}")
    scope = user.scope
    if args.scope is not None:
        try:
            scope = narrowed(user.scope, args.scope)
        except InvalidScope:
            raise CommandError(
                f"--scope: {args.scope!r} is not a subset of {user.name}'s scope {user.scope!r}"
            ) from None
    configure_trail(settings, sys.stderr)
    revoker = Revoker(stores.families, stores.revocations, settings.leeway, _audited())
    sessions = Sessions(tokens, revoker, UserTable(stores.users))
    ttl = args.ttl or settings.access_token_ttl
    print(sessions.issue_access_token(user.name, scope=scope, expires_in=ttl))
    print(
        f"issued an access token for {user.name} (scope {scope!r}), valid for {ttl} s",
        file=sys.stderr,
    )
    return 0


def _token_inspect(settings: Settings) -> int:
    """``token inspect``: exit 0 when a protected route would accept the token, 1 if not."""
    from jwtapi.inspection import inspect_token

    found = inspect_token(_read_token(), settings)
    print(json.dumps({"header": found.header, "claims": found.claims}, indent=2))
    print(found.verdict)
    return 0 if found.valid else 1


#: Why ``token inspect`` takes no argument.
STDIN_NOT_ARGUMENT = (
    "give the token on stdin, not as an argument (the shell's history keeps arguments): "
    "jwtapi token inspect < token.txt"
)
#: Far above any token jwtapi issues; bounds what is read from stdin.
MAX_TOKEN_INPUT = 64 * 1024


def _read_token() -> str:
    """One token from stdin (never from an argument: shell history keeps those). At a
    terminal it is asked for without echo. ``Authorization: Bearer`` before it is
    dropped, so a header copied whole works too."""
    if sys.stdin.isatty():
        text = getpass.getpass("Token: ")
    else:
        try:
            text = sys.stdin.buffer.read(MAX_TOKEN_INPUT + 1).decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("the token on stdin is not UTF-8 text") from None
        if len(text) > MAX_TOKEN_INPUT:
            raise CommandError(f"more than {MAX_TOKEN_INPUT} bytes on stdin: not one token")
    words = text.split()
    if words[:1] == ["Authorization:"]:
        words = words[1:]
    if words[:1] and words[0].lower() in ("bearer", "dpop"):
        words = words[1:]
    if not words:
        raise CommandError("no token on stdin: jwtapi token inspect < token.txt")
    if len(words) > 1:
        raise CommandError("more than one word on stdin: give one token")
    return words[0]


def _db_upgrade(settings: Settings) -> int:
    db = open_database(settings.database)  # opening migrates, under a lock
    version = db.migrate()
    db.close()
    print(f"{redact_url(settings.database)}: schema at version {version}")
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from jwtapi.keys import generate_private_key, write_key_pair

    try:
        private_path, public_path = write_key_pair(generate_private_key(args.algorithm), args.out)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {private_path} (private, mode 0600) and {public_path} (public)")
    print(f"set JWTAPI_ALGORITHM={args.algorithm} and JWTAPI_PRIVATE_KEY_FILE={private_path}")
    return 0


def _port(text: str) -> int:
    number = _integer(text)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1 to 65535)")
    return number


def _positive(text: str) -> int:
    number = _integer(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return number


def _integer(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
