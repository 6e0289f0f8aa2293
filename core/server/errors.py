"""Owns turning errors into HTTP responses: ``{"code", "message", "data"}`` and a status.

The status is the error's ``http_status`` attribute (400 bad arguments or values, 401/403
auth, 404 unknown function, 409 conflict, 413 body too large, 422 ``AppError``). Anything else
is a bug: a 500 with a generic message, logged here with its traceback and where it happened,
so no internals reach the client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.responses import JSONResponse

from core.errors import AppError, CapsuleError, InvalidValueError
from core.values import to_json

logger = logging.getLogger("capsule.server")

_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    """``value`` with every unpaired surrogate in its strings (keys too) replaced by U+FFFD.

    A client can send them (JSON escapes of lone surrogates decode to them); an error
    message may quote what it sent, and UTF-8 cannot encode them, so they are replaced.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class EncodableJSONResponse(JSONResponse):
    """A JSON response that encodes whatever strings it holds (unpaired surrogates replaced)."""

    def render(self, content: Any) -> bytes:
        """UTF-8 JSON; strings holding unpaired surrogates are scrubbed first."""
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(_scrub(content))


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


def error_response(exc: BaseException, *, where: str) -> EncodableJSONResponse:
    """The response for an exception raised while serving ``where`` (a function path, a URL)."""
    status, body = error_body(exc)
    if status == 500:
        logger.error("%s failed", where, exc_info=exc)
    return EncodableJSONResponse(body, status_code=status)


def plain_error(status: int, code: str, message: str) -> EncodableJSONResponse:
    """An error response that no exception stands behind (file not found, shutting down)."""
    return EncodableJSONResponse(
        {"code": code, "message": message, "data": None}, status_code=status
    )
