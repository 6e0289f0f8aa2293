"""Owns what every command needs first: the app (``module:attr``), a function, the database.

The working directory is put first on ``sys.path``, as ``uvicorn`` and ``python -m`` do, so
``capsule serve tasks:app`` finds ``./tasks.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from core.app import App
from core.config import database_url, use_database_url
from core.errors import UserError
from core.functions import FunctionRef


def _import(module: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise UserError(f'Cannot import module "{module}": {exc}.') from None
        raise


def _attribute(obj: Any, qualname: str, where: str) -> Any:
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f'"{where}" has no attribute "{qualname}".') from None
    return obj


def load_app(target: str) -> App:
    """The ``App`` named by ``module:attr`` (``module`` alone means ``module:app``)."""
    module, _, attr = target.partition(":")
    found = _attribute(_import(module), attr or "app", module)
    if not isinstance(found, App):
        raise UserError(f'"{target}" is a {type(found).__name__}, not a capsule App.')
    return found


def load_function(path: str, app_target: str | None) -> tuple[App, FunctionRef[Any, Any]]:
    """A function by its path (``"tasks:create"``) and the app it belongs to.

    The module is imported, which registers the function on its app; ``--app`` names the app
    when the function's own module does not hold it.
    """
    module, sep, qualname = path.partition(":")
    if not sep or not qualname:
        raise UserError(f'"{path}" is not a function path like "tasks:create".')
    ref = _attribute(_import(module), qualname, module)
    if not isinstance(ref, FunctionRef):
        raise UserError(f'"{path}" is not a capsule function (no @app.query / mutation / ...).')
    app = load_app(app_target) if app_target else ref.owner
    if not isinstance(app, App):
        raise UserError(f'"{path}" belongs to no app; name it with --app module:app.')
    return app, ref


def choose_database(url: str | None) -> str:
    """Use ``--db`` when given (for the app and everything opened after), else the setting."""
    if url:
        use_database_url(url)
    return database_url()
