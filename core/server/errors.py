"""Owns turning errors into HTTP responses: ``{"code", "message", "data"}`` and a status.

The status is the error's ``http_status`` attribute (400 bad arguments or values, 401/403
auth, 404 unknown function, 409 conflict, 413 body too large, 422 ``AppError``). Anything else
is a bug: a 500 with a generic message, logged here with its traceback and where it happened,
so no internals reach the client.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse

from core.errors import AppError, CapsuleError, InvalidValueError
from core.values import to_json

logger = logging.getLogger("capsule.server")

INTERNAL_MESSAGE = "Internal server error; the server log has the details."
_FACTS = ("function", "argument", "table", "field", "limit", "maximum", "actual", "path", "tables")
"""Attributes of request errors sent along as ``details`` (the facts the message states)."""


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body an exception becomes."""
    status = exc.http_status if isinstance(exc, CapsuleError) else 500
    if status >= 500 or not isinstance(exc, CapsuleError):
        return 500, {"code": "internal", "message": INTERNAL_MESSAGE, "data": None}
    data = None
    if isinstance(exc, AppError):
        try:
            data = to_json(exc.data)
        except InvalidValueError:
            logger.warning("AppError data %r is not a value; sent as its repr", exc.data)
            data = repr(exc.data)
    body: dict[str, Any] = {"code": exc.code, "message": str(exc), "data": data}
    details = {
        name: value
        for name in _FACTS
        if isinstance(value := getattr(exc, name, None), str | int | list)
    }
    if details:
        body["details"] = details
    return status, body


def error_response(exc: BaseException, *, where: str) -> JSONResponse:
    """The response for an exception raised while serving ``where`` (a function path, a URL)."""
    status, body = error_body(exc)
    if status == 500:
        logger.error("%s failed", where, exc_info=exc)
    return JSONResponse(body, status_code=status)


def plain_error(status: int, code: str, message: str) -> JSONResponse:
    """An error response that no exception stands behind (file not found, shutting down)."""
    return JSONResponse({"code": code, "message": message, "data": None}, status_code=status)
