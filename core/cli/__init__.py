"""Owns the ``capsule`` command: ``main`` and the dispatch to each subcommand.

``capsule serve | dev | dashboard | worker | run | data | check | import | export | migrate |
functions | workflows | env | logs``; ``capsule <command> --help`` describes each. The database
is ``--db URL`` or ``CAPSULE_DB_URL``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from core.cli import admin, check, data, env, logs, migrate, run, serve, transfer
from core.cli.output import print_error
from core.errors import CapsuleError


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``capsule``."""
    p = argparse.ArgumentParser(
        prog="capsule", description="Run, serve and move the data of Capsule apps."
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parsers(commands)
    run.add_parser(commands)
    data.add_parser(commands)
    check.add_parser(commands)
    transfer.add_parsers(commands)
    migrate.add_parser(commands)
    admin.add_parsers(commands)
    env.add_parser(commands)
    logs.add_parser(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``capsule`` with ``argv`` (default: the command line); return the exit status."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("capsule.database", "capsule.migrations"):
        # Their info lines are the progress of backfills and migrations, worth seeing.
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return int(args.handler(args))
    except CapsuleError as exc:
        print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["main", "parser"]
