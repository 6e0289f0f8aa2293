"""Owns ``capsule serve`` / ``capsule dev`` (uvicorn) and ``capsule worker`` (no HTTP).

``serve`` runs the app's ASGI server; ``dev`` does the same and restarts it when a Python file
under the working directory changes; ``worker`` runs only the background services (scheduler
and crons) until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

import uvicorn

from core.cli.loading import choose_database, load_app
from core.config import ServerSettings, set_setting, setting
from core.errors import UserError

APP_SETTING = "CAPSULE_APP"
"""Where ``capsule dev`` leaves the app's ``module:attr`` for the reloaded server process."""


def add_parsers(commands: Any) -> None:
    """Register ``serve``, ``dev`` and ``worker``."""
    for name, help_text in (
        ("serve", "serve the app over HTTP (uvicorn)"),
        ("dev", "serve with reload on code changes"),
    ):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("target", help="the app, as module:attr (e.g. tasks:app)")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--log-level", default="info")
        p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
        p.add_argument("--migrate", action="store_true", help="run pending migrations first")
        p.set_defaults(handler=serve if name == "serve" else dev)
    p = commands.add_parser("worker", help="run the scheduler and crons without an HTTP server")
    p.add_argument("target", help="the app, as module:attr")
    p.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
    p.add_argument("--migrate", action="store_true", help="run pending migrations first")
    p.set_defaults(handler=worker)


def dev_app() -> Any:
    """The ASGI app ``capsule dev`` serves (built anew by each reloaded process)."""
    from core.server import create_asgi_app

    target = setting(APP_SETTING)
    if not target:
        raise UserError(f"{APP_SETTING} names no app.")
    return create_asgi_app(load_app(target))


def migrate_first(args: argparse.Namespace, app: Any) -> None:
    """With ``--migrate``: run the app's pending migrations before it starts."""
    if not getattr(args, "migrate", False):
        return
    from core.migrations import migrate

    statuses, unsettled = migrate(app)
    for s in statuses:
        print(f"capsule: migration {s.describe()}", flush=True)
    if unsettled:
        raise unsettled[0].error()


def serve(args: argparse.Namespace) -> int:
    """Run uvicorn with the app's ASGI server until interrupted."""
    from core.server import create_asgi_app

    choose_database(args.db)
    settings = ServerSettings.from_env()
    app = load_app(args.target)
    migrate_first(args, app)
    asgi = create_asgi_app(app, settings=settings)
    uvicorn.run(
        asgi,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_seconds) or None,
    )
    return 0


def dev(args: argparse.Namespace) -> int:
    """Like ``serve``, restarting when code under the working directory changes."""
    choose_database(args.db)
    # Fail here, with a clear message, rather than in the reloader.
    migrate_first(args, load_app(args.target))
    set_setting(APP_SETTING, args.target)
    uvicorn.run(
        "core.cli.serve:dev_app",
        factory=True,
        reload=True,
        reload_dirs=[os.getcwd()],
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    """Open the app's runtime, run its services until SIGINT / SIGTERM, then close."""
    choose_database(args.db)
    app = load_app(args.target)
    migrate_first(args, app)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime = app._acquire_runtime()
    try:
        runtime.start_services()
        print(f"capsule worker: running {args.target} (Ctrl-C to stop)", flush=True)
        stop.wait()
        runtime.stop_services()
    finally:
        app._release_runtime()
    return 0
