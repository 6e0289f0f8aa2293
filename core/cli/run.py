"""Owns ``capsule run PATH '{json}' [--identity JSON]``: call one function and print its value.

Internal functions run too: the command opens the database itself, so it acts as an admin.
With ``--url`` it asks a running server instead, through its dashboard API, with the admin key
(``--admin-key`` or ``CAPSULE_ADMIN_KEY``); the function's module need not be importable here.
"""

from __future__ import annotations

import argparse
import json
import logging
from functools import partial
from typing import Any

from core.cli.loading import choose_database, load_function
from core.cli.output import print_value
from core.errors import InvalidArgumentError, UserError
from core.functions import FunctionKind
from core.values import from_json


def add_parser(commands: Any) -> None:
    """Register ``capsule run``."""
    p = commands.add_parser("run", help="run a query, mutation or action and print its value")
    p.add_argument("path", help='the function path, e.g. "tasks:create"')
    p.add_argument("args", nargs="?", default="{}", help="its arguments as a JSON object")
    p.add_argument("--identity", help='run as this caller: JSON claims, e.g. {"sub": "u1"}')
    p.add_argument("--app", help="module:app, when the function's module does not hold its app")
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.add_argument("--url", help="run on the server at this URL (needs its admin key)")
    p.add_argument("--admin-key", help="the server's CAPSULE_ADMIN_KEY (default: that variable)")
    p.set_defaults(handler=run)


def _json_object(text: str, what: str, *, plural: bool = False) -> dict[str, Any]:
    verb = "are" if plural else "is"
    try:
        value = from_json(json.loads(text))
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{what} {verb} not valid JSON ({exc}); pass a JSON object such as '{{\"name\": 1}}'."
        ) from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what} must be a JSON object such as '{{\"name\": 1}}'.")
    return value


def run(args: argparse.Namespace) -> int:
    """Call the function through a sync client (no background services) and print the value."""
    fn_args = _json_object(args.args, "The arguments", plural=True)
    if args.url:
        return _remote(args.url, args.path, args.args, args.admin_key)
    choose_database(args.db)
    app, ref = load_function(args.path, args.app)
    identity = _json_object(args.identity, "--identity") if args.identity else None
    # This command reports the call's error itself: the executor's failure log would repeat it.
    functions_log = logging.getLogger("capsule.functions")
    level = functions_log.level
    functions_log.setLevel(logging.ERROR)
    try:
        return _call(app, ref, fn_args, identity, args.path)
    finally:
        functions_log.setLevel(level)


def _remote(url: str, path: str, raw_args: str, key: str | None) -> int:
    """Run ``path`` on the server at ``url`` as an admin (internal functions included)."""
    import httpx

    from core.config import setting
    from core.http_client import error_from_body
    from core.server.dashboard import ADMIN_HEADER, PREFIX

    key = key or setting("CAPSULE_ADMIN_KEY")
    if not key:
        raise UserError(
            "Running on a server needs its admin key: --admin-key or CAPSULE_ADMIN_KEY."
        )
    try:
        r = httpx.post(
            f"{url.rstrip('/')}{PREFIX}/api/run",
            json={"path": path, "args": raw_args},
            headers={ADMIN_HEADER: key},
            timeout=None,
        )
    except httpx.TransportError as exc:
        raise UserError(f"Cannot reach the server at {url}: {exc}.") from None
    if r.status_code == 401 or r.status_code == 404:
        raise UserError(
            f"The server at {url} refused the admin key (or has no CAPSULE_ADMIN_KEY set)."
        )
    body = r.json()
    if r.status_code != 200:
        raise error_from_body(r.status_code, {"code": "remote", **body})
    print_value(from_json(body["value"]))
    return 0


def _call(app: Any, ref: Any, fn_args: dict[str, Any], identity: Any, path: str) -> int:
    if ref.kind not in (FunctionKind.QUERY, FunctionKind.MUTATION, FunctionKind.ACTION):
        raise InvalidArgumentError(f'"{path}" is an HTTP route; it cannot be run.')
    with app.sync_client(identity, runtime=False) as client:
        # The command line has the database itself, so it is an admin: it may run internal
        # functions too (caller "" is the app's own code; None would be a client).
        caller = "" if ref.internal else None
        ex = client.runtime.executor
        if ref.kind is FunctionKind.QUERY:
            value = ex.query(ref, fn_args, client.identity, caller=caller)
        elif ref.kind is FunctionKind.MUTATION:
            value = ex.mutation(ref, fn_args, client.identity, caller=caller)
        else:
            rt = client.runtime
            value = rt.portal.call(partial(ex.action, ref, fn_args, client.identity, caller=caller))
        print_value(value)
    return 0
