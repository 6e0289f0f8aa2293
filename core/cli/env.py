"""Owns ``capsule env set | get | list | unset``: deployment variables stored in the database.

Actions read them as ``ctx.env`` (``core.environment``); every process on the database sees
a change at once, with no restart. The command needs no app, only the database: it opens the
``_system`` table space alone, so nothing else (an app's crons, its tables) is touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.app import App
from core.cli.loading import choose_database
from core.environment import DeploymentEnvironment, check_name
from core.errors import UserError
from core.runtime import Runtime
from core.storage import open_storage

HIDDEN = "********"


def add_parser(commands: Any) -> None:
    """Register ``env`` and its actions."""
    p = commands.add_parser(
        "env",
        help="set, get, list or unset deployment variables (ctx.env in actions)",
        description="Deployment variables live in the database: every server and worker on it "
        "sees a change at once, with no restart. Actions read them as ctx.env (the process "
        "environment is the fallback); queries, mutations and components cannot.",
    )
    actions = p.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    sub = actions.add_parser("set", help="store NAME=VALUE")
    sub.add_argument("name")
    sub.add_argument("value")
    sub.add_argument("--secret", action="store_true", help="hide the value from `env list`")
    sub = actions.add_parser("get", help="print one variable's value")
    sub.add_argument("name")
    sub = actions.add_parser("list", help="list the variables (secrets hidden)")
    sub.add_argument("--show-secrets", action="store_true", help="print secret values too")
    sub = actions.add_parser("unset", help="remove a variable")
    sub.add_argument("name")
    for sub in actions.choices.values():
        sub.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.set_defaults(handler=run)


@contextmanager
def open_system(url: str) -> Iterator[Runtime]:
    """A runtime of the database at ``url`` with only its ``_system`` table space open."""
    runtime = Runtime(app=App(), storage=open_storage(url), system_only=True)
    runtime.open()
    try:
        yield runtime
    finally:
        runtime.close()


@contextmanager
def open_environment(url: str) -> Iterator[DeploymentEnvironment]:
    """The deployment variables of the database at ``url`` (only ``_system`` is opened)."""
    with open_system(url) as runtime:
        yield DeploymentEnvironment(runtime.executor)


def run(args: argparse.Namespace) -> int:
    """``capsule env ...``."""
    url = choose_database(args.db)
    command = args.env_command
    with open_environment(url) as env:
        if command == "set":
            env.set(args.name, args.value, secret=args.secret)
            print(f"set {args.name}" + (" (secret)" if args.secret else ""), file=sys.stderr)
        elif command == "get":
            found = env.get(check_name(args.name))
            if found is None:
                raise UserError(f'"{args.name}" is not set; set it with capsule env set.')
            print(found.value)
        elif command == "unset":
            if not env.unset(check_name(args.name)):
                raise UserError(f'"{args.name}" is not set.')
            print(f"unset {args.name}", file=sys.stderr)
        else:
            for v in env.list():
                value = HIDDEN if v.secret and not args.show_secrets else v.value
                print(f"{v.name}={value}")
    return 0


__all__ = ["add_parser", "open_environment", "open_system", "run"]
