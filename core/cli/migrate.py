"""Owns ``capsule migrate [--dry-run] [--status] [NAME...]``: run or report migrations.

``migrate`` opens the app even while documents do not fit its schema, runs the pending
migrations (all, or the ones named) in order, stores defaults, and reports what still does not
fit (exit status 1 then). ``--dry-run`` runs the migrations without writing and reports how many
documents each would change; ``--status`` reports each migration (done, running or pending, with
counts) and the tables whose stored documents do not fit their schema yet.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli.loading import choose_database, load_app
from core.config import setting
from core.database.catalog import ShapeReport
from core.errors import UserError
from core.migrations import MigrationStatus, migrate, migration_status


def add_parser(commands: Any) -> None:
    """Register ``capsule migrate``."""
    p = commands.add_parser(
        "migrate",
        help="run pending migrations (or report them: --status, --dry-run)",
        description="Migrations run in name order, each once, in batches that resume where a "
        "crash stopped them.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these migrations")
    p.add_argument("--dry-run", action="store_true", help="change nothing; count what would")
    p.add_argument("--status", action="store_true", help="report done and pending migrations")
    p.add_argument("--app", help="module:app (default: CAPSULE_APP)")
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.set_defaults(handler=run)


def report(statuses: list[MigrationStatus], unsettled: list[ShapeReport]) -> None:
    """Print one line per migration, then one per table that does not fit yet."""
    for s in statuses:
        print(s.describe())
    if not statuses:
        print("no migrations declared")
    for r in unsettled:
        print(r.describe())


def run(args: argparse.Namespace) -> int:
    """``capsule migrate``."""
    url = choose_database(args.db)
    target = args.app or setting("CAPSULE_APP")
    if not target:
        raise UserError("Name the app to migrate: --app module:app (or set CAPSULE_APP).")
    if args.status and args.dry_run:
        raise UserError("Pass --status or --dry-run, not both.")
    app = load_app(target)
    if args.status:
        report(*migration_status(app, args.names, storage=url))
        return 0
    statuses, unsettled = migrate(app, args.names, dry_run=args.dry_run, storage=url)
    report(statuses, unsettled)
    if unsettled and not args.dry_run:
        print("some documents still do not fit the schema", file=sys.stderr)
        return 1
    return 0
