"""Owns ``capsule serve`` / ``dev`` / ``dashboard`` (uvicorn) and ``capsule worker`` (no HTTP).

``serve`` runs the app's ASGI server; ``dev`` does the same and restarts it when a Python file
under the working directory changes; ``worker`` runs only the background services (scheduler
and crons) until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from core.cli.loading import choose_database, load_app
from core.config import ServerSettings, set_setting, setting
from core.errors import UserError

APP_SETTING = "CAPSULE_APP"
"""Where ``capsule dev`` leaves the app's ``module:attr`` for the reloaded server process."""


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default (except options whose default is "unset")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def add_parsers(commands: Any) -> None:
    """Register ``serve``, ``dev``, ``dashboard`` and ``worker``."""
    for name, help_text in (
        ("serve", "serve the app over HTTP (uvicorn)"),
        ("dev", "serve with reload on code changes"),
    ):
        p = commands.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Endpoints: POST /api/query | "
            "mutation | action, GET /api/subscribe (SSE), GET /_health, GET /openapi.json. "
            "Settings: CAPSULE_DB_URL, CAPSULE_JWT_ISSUER / _SECRET / _JWKS_FILE / _AUDIENCE, "
            "CAPSULE_CORS_ORIGINS, CAPSULE_MAX_BODY_BYTES, CAPSULE_SHUTDOWN_TIMEOUT.",
            formatter_class=DefaultsHelpFormatter,
        )
        p.add_argument("target", help="the app, as module:attr (e.g. tasks:app)")
        p.add_argument("--host", default="127.0.0.1", help="the interface to listen on")
        p.add_argument("--port", type=int, default=8000, help="the port to listen on")
        p.add_argument(
            "--log-level",
            default="info",
            choices=["critical", "error", "warning", "info", "debug", "trace"],
            help="uvicorn's log level",
        )
        p.add_argument(
            "--db", default=None, help="database URL (default: CAPSULE_DB_URL, else ./capsule.db)"
        )
        p.add_argument("--migrate", action="store_true", help="run pending migrations first")
        p.set_defaults(handler=serve if name == "serve" else dev)
    p = commands.add_parser(
        "dashboard",
        help="open the admin dashboard of an app (a local web UI)",
        description="Serve the app with its dashboard at /_dashboard on this machine, no key "
        "needed: tables, documents, functions, live logs, jobs and workflows.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("target", help="the app, as module:attr (e.g. tasks:app)")
    p.add_argument("--port", type=int, default=8001, help="the port to listen on")
    p.add_argument(
        "--db", default=None, help="database URL (default: CAPSULE_DB_URL, else ./capsule.db)"
    )
    p.add_argument("--migrate", action="store_true", help="run pending migrations first")
    p.set_defaults(handler=dashboard)
    p = commands.add_parser(
        "worker",
        help="run the scheduler and crons without an HTTP server",
        description="Run the app's scheduled jobs and crons, printing one line per job.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("target", help="the app, as module:attr")
    p.add_argument("--quiet", action="store_true", help="print only failures")
    p.add_argument(
        "--db", default=None, help="database URL (default: CAPSULE_DB_URL, else ./capsule.db)"
    )
    p.add_argument("--migrate", action="store_true", help="run pending migrations first")
    p.set_defaults(handler=worker)


def capture_info_logs() -> None:
    """Let handlers' INFO records reach the call log; the terminal still shows WARNING and up.

    The root logger's level gates every record before any handler sees it, so it drops to
    INFO and the handlers already installed keep the old threshold.
    """
    root = logging.getLogger()
    if root.level <= logging.INFO:
        return
    for handler in root.handlers:
        if handler.level == logging.NOTSET:
            handler.setLevel(root.level)
    root.setLevel(logging.INFO)


def dev_app() -> Any:
    """The ASGI app ``capsule dev`` serves (built anew by each reloaded process)."""
    from core.server import create_asgi_app

    target = setting(APP_SETTING)
    if not target:
        raise UserError(f"{APP_SETTING} names no app.")
    capture_info_logs()
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
    capture_info_logs()
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


def dashboard(args: argparse.Namespace) -> int:
    """Serve the app with its dashboard (no key: it listens on 127.0.0.1 only)."""
    from core.server import create_asgi_app
    from core.server.dashboard import dashboard_routes, dashboard_url

    choose_database(args.db)
    capture_info_logs()
    app = load_app(args.target)
    migrate_first(args, app)
    asgi = create_asgi_app(app)
    asgi.router.routes[0:0] = dashboard_routes(asgi.state.capsule, local=True)
    print(f"capsule dashboard: {dashboard_url(f'http://127.0.0.1:{args.port}')}", flush=True)
    uvicorn.run(asgi, host="127.0.0.1", port=args.port, log_level="warning")
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
    capture_info_logs()
    report = job_reporter(quiet=args.quiet)
    runtime = app._acquire_runtime()
    try:
        runtime.start_services()
        print(f"capsule worker: running {args.target} (Ctrl-C to stop)", flush=True)
        stop.wait()
        runtime.stop_services()
    finally:
        app._release_runtime()
        report()
    return 0


def job_reporter(*, quiet: bool = False) -> Callable[[], None]:
    """Print each call the worker makes (its jobs) as one line on stdout; return an undo.

    The lines are the executor's call log (``capsule.functions``): ``HH:MM:SS mutation
    tasks:cleanup ok in 1.20 ms (retries: 0)``, failures included. They are not passed on to
    the root logger, so nothing is printed twice.
    """
    log = logging.getLogger("capsule.functions")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    before = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.DEBUG)
    log.propagate = False

    def undo() -> None:
        log.removeHandler(handler)
        log.setLevel(before[0])
        log.propagate = before[1]

    return undo
