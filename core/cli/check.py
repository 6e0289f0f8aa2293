"""Owns ``capsule check [--db URL]``: verify that a database's documents and indexes agree.

Reads one snapshot without the app (nothing is written) and prints each inconsistency and a
summary line; the exit status is 0 when everything agrees and 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from core.cli.loading import choose_database
from core.errors import UserError
from core.integrity import check_closed_storage, format_report
from core.storage import SQLiteStorage, open_storage


def add_parser(commands: Any) -> None:
    """Register ``capsule check``."""
    p = commands.add_parser(
        "check", help="verify that documents, indexes and catalog agree (read-only)"
    )
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the database; 1 if anything disagrees."""
    storage = open_storage(choose_database(args.db))
    if isinstance(storage, SQLiteStorage) and not os.path.exists(storage.path):
        raise UserError(f'There is no database at "{storage.path}"; check --db.')
    report = check_closed_storage(storage)
    for line in format_report(report):
        print(line)
    return 0 if report.ok else 1
