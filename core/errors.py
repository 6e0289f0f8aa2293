"""Owns every exception the core raises, each with a stable ``code`` and an ``http_status``.

The tree::

    CapsuleError                      root; code "internal", 500
    ├── UserError                     a mistake in app code (bad schema, wrong context use), 500
    │   ├── BindingExistsError        a name bound twice on one component instance, 500
    │   └── BindingNotFoundError      ``ctx.bindings[name]`` of a name never bound (a KeyError), 500
    ├── InvalidArgumentError          a function argument failed validation, 400
    ├── InvalidValueError             a value is not storable / does not match the schema, 400
    │   ├── LimitExceededError        a size or count limit was exceeded, 400
    │   └── InvalidIdError            a string is not an id, or an id of another table, 400
    ├── UnauthenticatedError          missing or invalid credentials, 401
    ├── ForbiddenError                authenticated but not allowed, 403
    │   └── InvalidHandleError        a function handle the database did not sign (forged), 403
    ├── FunctionNotFoundError         unknown (or unreachable) function path, 404
    │   └── FunctionKindError         a function called as another kind (a mutation as a query), 400
    ├── ConflictError                 a mutation could not commit after its retries, 409
    ├── RequestTooLargeError          an HTTP request body is over the server's limit, 413
    ├── SchemaMismatchError           stored documents violate the schema at open, 500
    ├── RetryableStorageError         a storage step failed transiently (retried), 503
    ├── DatabaseUnavailableError      the database URL cannot be opened (unreachable, missing), 503
    └── AppError                      raised by app code; its ``data`` reaches the client, 422

Internal signals, never seen by callers (not ``CapsuleError``s)::

    Conflict                          a transaction's reads were overwritten; it is re-run
    Abandoned                         a before_commit hook gave up an attempt (a lost race)
    StaleLatest                       a commit step presumed no other process had committed

The server maps errors to responses by the ``code`` and ``http_status`` attributes, never by an
``isinstance`` ladder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Conflict(Exception):
    """Raised when a newer commit touched a transaction's read set (internal: it is re-run)."""

    def __init__(self, tables: set[str]):
        super().__init__(tables)
        self.tables = tables

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.tables,))


class Abandoned(Exception):
    """Raised when a ``before_commit`` hook gives up an attempt on purpose (a lost race).

    Internal: another runner or request got there first; nothing failed. The executor logs it
    at debug level, not as a failed call.
    """


class StaleLatest(Exception):
    """Raised when a write session presumed the newest commit and another process had committed.

    Internal: nothing was applied (the storage transaction rolls back); the database redoes
    the commit step reading the newest timestamp (``WriteSession.presume_latest``).
    """


class CapsuleError(Exception):
    """Raised when Capsule fails; the root of every error the suite raises."""

    code: str = "internal"
    http_status: int = 500


class UserError(CapsuleError):
    """Raised when app code misuses the API (a bad schema, a write in a query, ...)."""

    code = "user_error"


class BindingExistsError(UserError):
    """Raised when ``handle.bind(name, obj)`` names a binding the instance already has."""

    code = "binding_exists"

    def __init__(self, namespace: str, name: str):
        super().__init__(
            f'Component instance "{namespace}" already has a binding named "{name}"; a name is '
            "bound once per instance (mount the component again, under another name, for a "
            "second one)."
        )
        self.namespace = namespace
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.namespace, self.name))


class BindingNotFoundError(UserError, KeyError):
    """Raised when ``ctx.bindings[name]`` names nothing bound on the calling instance."""

    code = "binding_not_found"

    def __init__(self, namespace: str, name: str, known: Iterable[str] = ()):
        names = ", ".join(f'"{n}"' for n in sorted(known)) or "none"
        where = f'component instance "{namespace}"' if namespace else "the app"
        super().__init__(
            f'No binding named "{name}" on {where} (bound: {names}); bind it with '
            "handle.bind(name, obj) on the handle app.use() returned."
        )
        self.namespace = namespace
        self.name = name
        self.known = sorted(known)

    def __str__(self) -> str:
        # KeyError quotes its argument; this message is a sentence.
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.namespace, self.name, self.known))


class InvalidArgumentError(CapsuleError):
    """Raised when a function argument fails validation."""

    code = "invalid_argument"
    http_status = 400

    def __init__(self, message: str, *, function: str | None = None, argument: str | None = None):
        super().__init__(message)
        self.function = function
        self.argument = argument


class InvalidValueError(CapsuleError):
    """Raised when a value cannot be stored or does not match its table's shape."""

    code = "invalid_value"
    http_status = 400

    def __init__(self, message: str, *, table: str | None = None, field: str | None = None):
        super().__init__(message)
        self.table = table
        self.field = field


class LimitExceededError(InvalidValueError):
    """Raised when a value or a transaction goes over one of the documented limits."""

    code = "limit_exceeded"

    def __init__(
        self, message: str, *, limit: str, maximum: int, actual: int | None = None, **kw: Any
    ):
        super().__init__(message, **kw)
        self.limit = limit
        self.maximum = maximum
        self.actual = actual


class InvalidIdError(InvalidValueError):
    """Raised when a string is not a document id, or is the id of another table."""

    code = "invalid_id"


class UnauthenticatedError(CapsuleError):
    """Raised when credentials are missing where required, invalid, or expired."""

    code = "unauthenticated"
    http_status = 401


class ForbiddenError(CapsuleError):
    """Raised when an authenticated caller may not do what it asked."""

    code = "forbidden"
    http_status = 403


class InvalidHandleError(ForbiddenError):
    """Raised when a function handle was not made by this database (forged, edited, foreign)."""

    code = "invalid_handle"

    def __init__(self, handle: str, reason: str):
        super().__init__(
            f"Function handle {handle} is refused: {reason}. Handles are made by the core "
            "(function_handle(ctx, ref)) and cannot be written by hand."
        )
        self.handle = handle
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.handle, self.reason))


class FunctionNotFoundError(CapsuleError):
    """Raised when no public function answers to a path."""

    code = "function_not_found"
    http_status = 404

    def __init__(self, path: str, *, detail: str = ""):
        message = f'No function "{path}" is registered'
        super().__init__(message + (f"; {detail}" if detail else "."))
        self.path = path


class FunctionKindError(FunctionNotFoundError):
    """Raised when a function is called as another kind: a mutation through ``query``.

    A subclass of ``FunctionNotFoundError`` (nothing of that kind has the path), answered with
    400: the function exists, the call is wrong.
    """

    code = "wrong_function_kind"
    http_status = 400

    def __init__(self, path: str, *, kind: str, called_as: str):
        CapsuleError.__init__(
            self,
            f'Cannot call "{path}" as {_article(called_as)} {called_as}: it is {_article(kind)} '
            f"{kind}, not {_article(called_as)} {called_as}. Call it with {kind} (client.{kind}, "
            f"ctx.run_{kind} or POST /api/{kind}).",
        )
        self.path = path
        self.kind = kind
        self.called_as = called_as


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class ConflictError(CapsuleError):
    """Raised when a mutation keeps conflicting and its final attempt could not commit."""

    code = "conflict"
    http_status = 409

    def __init__(self, tables: Iterable[str], *, detail: str = ""):
        self.tables = sorted(set(tables))
        names = ", ".join(f'"{t}"' for t in self.tables) or "(unknown)"
        super().__init__(
            f"Documents read from table(s) {names} changed while this mutation ran, on every "
            f"retry{'; ' + detail if detail else ''}."
        )


class RequestTooLargeError(CapsuleError):
    """Raised when an HTTP request body is larger than the server accepts."""

    code = "request_too_large"
    http_status = 413

    def __init__(self, *, limit: int):
        super().__init__(
            f"The request body is over the limit of {limit:,} bytes; send less data at once "
            "(or raise CAPSULE_MAX_BODY_BYTES)."
        )
        self.limit = limit


class SchemaMismatchError(CapsuleError):
    """Raised when stored documents do not match the app's schema when the database opens."""

    code = "schema_mismatch"

    def __init__(
        self,
        *,
        table: str,
        document_id: str,
        field: str,
        detail: str,
        count: int = 1,
        migrations: Iterable[str] = (),
    ):
        self.table = table
        self.document_id = document_id
        self.field = field
        self.detail = detail
        self.count = count
        """How many stored documents of the table do not fit."""
        self.migrations = list(migrations)
        """Pending migrations of the table, which would fix them (``capsule migrate``)."""
        first = f'(field "{field}": {detail})'
        if count > 1:
            head = (
                f'Table "{table}": {count:,} stored documents do not match the schema; the first, '
                f'"{document_id}", {first}.'
            )
        else:
            head = (
                f'Table "{table}": stored document "{document_id}" does not match the schema '
                f"{first}."
            )
        if self.migrations:
            names = ", ".join(f'"{m}"' for m in self.migrations)
            plural = "s" if len(self.migrations) > 1 else ""
            tail = f" Pending migration{plural} {names} would fix them: run `capsule migrate`."
        else:
            tail = " Migrate the data or relax the schema."
        super().__init__(head + tail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_mismatch, (self.__dict__.copy(),))


def _mismatch(state: dict[str, Any]) -> SchemaMismatchError:
    return SchemaMismatchError(
        table=state["table"],
        document_id=state["document_id"],
        field=state["field"],
        detail=state["detail"],
        count=state["count"],
        migrations=state["migrations"],
    )


class RetryableStorageError(CapsuleError):
    """Raised when a storage step failed for a transient reason (e.g. a serialization failure).

    Nothing of the batch was applied; the database retries its transactions as if they had
    conflicted, so the caller never sees it while retries remain. Backends raise it; callers
    ask ``Storage.is_transient`` rather than inspecting driver errors.
    """

    code = "storage_retryable"
    http_status = 503


class DatabaseUnavailableError(CapsuleError):
    """Raised when the database a URL names cannot be opened: unreachable, missing, refused."""

    code = "database_unavailable"
    http_status = 503

    def __init__(self, url: str, *, reason: str, fix: str):
        super().__init__(f"Cannot open the database {url}: {reason}. {fix}")
        self.url = url
        self.reason = reason


class AppError(CapsuleError):
    """Raised by application code; ``data`` travels unchanged to the caller."""

    code = "app_error"
    http_status = 422

    def __init__(self, data: Any = None, message: str | None = None):
        self.data = data
        super().__init__(message if message is not None else repr(data))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.data, str(self)))


__all__ = [
    "AppError",
    "BindingExistsError",
    "BindingNotFoundError",
    "CapsuleError",
    "ConflictError",
    "DatabaseUnavailableError",
    "ForbiddenError",
    "FunctionKindError",
    "FunctionNotFoundError",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidValueError",
    "LimitExceededError",
    "RequestTooLargeError",
    "SchemaMismatchError",
    "UnauthenticatedError",
    "UserError",
]
