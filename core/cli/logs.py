"""Owns ``capsule logs [--follow] [--path P] [--component C] [--errors]``: read call logs.

The records come from the ``_function_logs`` system table (``core.logs``), written by every
server and worker on the database, so this command works from any process. Without
``--follow`` it prints the latest ``--limit`` calls and exits; with it, it keeps printing new
ones until interrupted. Each call is one line (time, kind, path, duration, outcome), followed
by the lines it printed or logged, indented.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.cli.env import open_system
from core.cli.loading import choose_database
from core.logs import SUCCESS, read_records

POLL_SECONDS = 0.25
"""How often ``--follow`` looks for new records."""
OVERLAP_SECONDS = 30.0
"""How far back each poll looks again: records of several processes arrive out of order."""


def add_parser(commands: Any) -> None:
    """Register ``logs``."""
    p = commands.add_parser(
        "logs",
        help="print function call logs (from every server and worker on the database)",
        description="Each call a server or worker makes is logged with its duration, outcome "
        "and the lines it printed or logged.",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new calls")
    p.add_argument("--path", help="only calls of this function path (or module: prefix)")
    p.add_argument("--component", help="only calls of this component instance (mount path)")
    p.add_argument("--errors", action="store_true", help="only failed calls")
    p.add_argument("--limit", type=int, default=100, help="how many recent calls (100)")
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.set_defaults(handler=run)


def matcher(args: argparse.Namespace) -> Callable[[dict[str, Any]], bool]:
    """The filter the options describe."""

    def match(rec: dict[str, Any]) -> bool:
        if args.errors and rec["outcome"] == SUCCESS:
            return False
        if args.component is not None and rec["component"] != args.component:
            return False
        if args.path:
            path = rec["path"]
            if path != args.path and not (args.path.endswith(":") and path.startswith(args.path)):
                return False
        return True

    return match


def format_record(rec: dict[str, Any]) -> str:
    """One call as text: a header line, then its output lines indented."""
    stamp = datetime.fromtimestamp(rec["ts"]).strftime("%H:%M:%S.%f")[:-3]
    where = f" [{rec['component']}]" if rec["component"] else ""
    outcome = "ok" if rec["outcome"] == SUCCESS else rec["outcome"]
    head = f"{stamp} {rec['kind']} {rec['path']}{where} {rec['duration_ms']:.1f} ms {outcome}"
    if rec["error"]:
        head += f": {rec['error']}"
    return "\n".join([head, *(f"    | {line}" for line in rec["lines"])])


def run(args: argparse.Namespace) -> int:
    """``capsule logs``."""
    url = choose_database(args.db)
    match = matcher(args)
    with open_system(url) as runtime:
        ex = runtime.executor
        shown = [r for r in read_records(ex, limit=max(args.limit, 0) * 10) if match(r)]
        shown = shown[-args.limit :] if args.limit > 0 else []
        for rec in shown:
            print(format_record(rec), flush=True)
        if not args.follow:
            return 0
        since = max((r["ts"] for r in shown), default=time.time())
        # What is already in the window counts as seen, shown or not (filtered, over --limit).
        seen = {
            str(r["_id"]) for r in read_records(ex, since=since - OVERLAP_SECONDS, limit=10_000)
        }
        while True:
            time.sleep(POLL_SECONDS)
            fresh = read_records(ex, since=since - OVERLAP_SECONDS, limit=10_000)
            for rec in fresh:
                key = str(rec["_id"])
                if key in seen:
                    continue
                seen.add(key)
                since = max(since, rec["ts"])
                if match(rec):
                    print(format_record(rec), flush=True)
            if len(seen) > 100_000:  # keep memory bounded: forget ids outside the window
                seen = {str(r["_id"]) for r in fresh}
    return 0  # pragma: no cover - the loop ends with Ctrl-C
