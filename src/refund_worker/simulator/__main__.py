"""``python -m refund_worker.simulator``: serve the Magento simulator.

::

    python -m refund_worker.simulator --host 127.0.0.1 --port 8081 --seed demo \\
        [--import orders.json ...] \\
        [--token T | --token T=Magento_Sales::creditmemo,Magento_Sales::sales_creditmemo ...] \\
        [--admin-user admin:admin123 ...] [--oauth KEY:SECRET:TOKEN:TOKEN_SECRET ...] \\
        [--store-code us ...] [--shop eu --shop us ...] [--fault-seed 42] [--log-level warning]

Prints ``simulator listening on http://HOST:PORT`` once bound (useful with ``--port 0``).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys

import uvicorn

from .app import create_app
from .auth import OAuthCredentials
from .seeds import SeedError
from .state import SimulatorState
from .testing import LISTENING_PREFIX, bind_socket, uvicorn_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m refund_worker.simulator",
        description="A Magento 2.4 refund API simulator (REST, on a real socket).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--seed", default=None, help='"demo", a JSON file of order specs, or none')
    parser.add_argument(
        "--import",
        dest="import_files",
        action="append",
        default=[],
        metavar="FILE",
        help="orders in Magento's entity form (GET /V1/orders/{id} and its invoices and credit "
        "memos), loaded after the seed and again on every reset (repeatable)",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=None,
        metavar="TOKEN[=RESOURCE,...]",
        help="accepted bearer token, optionally limited to ACL resources (default: sim-token)",
    )
    parser.add_argument(
        "--admin-user",
        action="append",
        default=None,
        metavar="USER:PASSWORD",
        help="admin user for POST /V1/integration/admin/token (default: admin:admin123)",
    )
    parser.add_argument(
        "--oauth",
        action="append",
        default=[],
        metavar="KEY:SECRET:TOKEN:TOKEN_SECRET",
        help="OAuth 1.0a integration credentials",
    )
    parser.add_argument("--store-code", action="append", default=[], help="extra store codes")
    parser.add_argument(
        "--shop",
        action="append",
        default=[],
        metavar="NAME",
        help="another Magento installation, served under /NAME/ with its own orders (repeatable)",
    )
    parser.add_argument("--fault-seed", type=int, default=None, help="seed for probability faults")
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser


def _tokens(values: list[str] | None) -> dict[str, set[str] | None] | None:
    if values is None:
        return None
    tokens: dict[str, set[str] | None] = {}
    for value in values:
        token, _, resources = value.partition("=")
        tokens[token] = {r for r in resources.split(",") if r} if resources else None
    return tokens


def _admin_users(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    users = {}
    for value in values:
        user, sep, password = value.partition(":")
        if not sep:
            raise SystemExit(f"--admin-user wants USER:PASSWORD, got {value!r}")
        users[user] = password
    return users


def _oauth(values: list[str]) -> list[OAuthCredentials]:
    credentials = []
    for value in values:
        parts = value.split(":")
        if len(parts) != 4:
            raise SystemExit("--oauth wants KEY:SECRET:TOKEN:TOKEN_SECRET")
        credentials.append(OAuthCredentials(*parts))
    return credentials


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:

        def new_state() -> SimulatorState:
            return SimulatorState(
                seed=args.seed,
                tokens=_tokens(args.token),
                admin_users=_admin_users(args.admin_user),
                oauth_credentials=_oauth(args.oauth),
                store_codes=args.store_code,
                fault_seed=args.fault_seed,
                import_files=args.import_files,
            )

        state = new_state()
        app = create_app(state, shops={name: new_state() for name in args.shop})
    except (SeedError, ValueError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    _raise_open_files_limit()
    sock = bind_socket(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"{LISTENING_PREFIX}http://{host}:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn_config(app, log_level=args.log_level))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
