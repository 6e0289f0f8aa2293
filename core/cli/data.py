"""Owns ``capsule data [TABLE] [--limit N] [--order asc|desc]``: look at what is stored.

With no table it lists the tables (of the app and of each mounted component, or of the one
``--component`` names) with their document counts; with one it prints that table's documents,
one JSON object a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from core.cli.loading import choose_database
from core.cli.stored import StoredDatabase
from core.values import to_json


def add_parser(commands: Any) -> None:
    """Register ``capsule data``."""
    p = commands.add_parser("data", help="list tables, or print a table's documents")
    p.add_argument("table", nargs="?", help="the table to print (omit to list tables)")
    p.add_argument("--limit", type=int, default=100, help="at most this many documents (100)")
    p.add_argument(
        "--order",
        choices=["asc", "desc"],
        default="desc",
        help="by creation time (default: newest first)",
    )
    p.add_argument("--component", default="", help="a component's mount path, for its tables")
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """List tables or print documents, reading the database without the app."""
    with StoredDatabase(choose_database(args.db)) as db:
        if args.table is None:
            tables = db.component_tables(args.component) if args.component else db.user_tables()
            rows = [(t.namespace, t.name, db.count(t)) for t in tables]
            if sys.stdout.isatty():
                table = Table("component", "table", "documents")
                for ns, name, n in rows:
                    table.add_row(ns or "(app)", name, f"{n:,}")
                Console().print(table)
            else:
                for ns, name, n in rows:
                    print(f"{ns}\t{name}\t{n}")
            return 0
        t = db.table(args.table, args.component)
        for doc in db.documents(t, reverse=args.order == "desc", limit=max(args.limit, 0)):
            print(json.dumps(to_json(doc), ensure_ascii=False))
    return 0
