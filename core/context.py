"""Owns the contexts handlers receive: ``QueryCtx``, ``MutationCtx`` and ``ActionCtx``.

Each context offers exactly what its kind of function may do. Asking for anything else (a
write in a query, ``run_action`` in a mutation, ``env`` outside an action) raises a
``UserError`` that says why and what to do instead, never an ``AttributeError``.

``ctx.now`` is read once when an attempt starts and ``ctx.random`` is seeded per attempt, so a
query or mutation is deterministic within an attempt.
"""

from __future__ import annotations

import random as _random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from core.auth import Auth
from core.errors import UserError

if TYPE_CHECKING:
    from core.database.reader import DatabaseReader
    from core.execution import Frame
    from core.functions import FunctionRef

ReturnT = TypeVar("ReturnT")

_WHY = {
    ("query", "scheduler"): "queries are read-only; schedule from a mutation or an action",
    ("query", "run_mutation"): "queries are read-only; call mutations from a mutation or an action",
    ("query", "run_action"): "queries cannot do I/O; call actions from an action",
    ("query", "random"): "queries have no randomness, so their results can be cached and re-run",
    ("mutation", "run_action"): (
        "mutations must stay deterministic so they can be retried; schedule the action with "
        "ctx.scheduler.run_after(0, ref, args) instead"
    ),
    ("action", "db"): (
        "actions reach the database only through ctx.run_query / ctx.run_mutation, each its own "
        "transaction"
    ),
    ("action", "random"): "actions may use the random module directly",
}
_CAPABILITIES = frozenset(
    {
        "db",
        "auth",
        "scheduler",
        "run_query",
        "run_mutation",
        "run_action",
        "now",
        "random",
        "env",
        "files",
        "vector_search",
    }
)


class _Context:
    """What every context shares: the frame it runs in and the capability errors."""

    _kind = ""
    __slots__ = ("_frame",)

    def __init__(self, frame: Frame):
        self._frame = frame

    def __getattr__(self, name: str) -> Any:
        if name in _CAPABILITIES:
            why = _WHY.get((self._kind, name))
            if why is None:
                if name in ("env", "auth") and self._frame.namespace:
                    why = "components have no auth and no env; pass what they need as arguments"
                elif name == "env":
                    why = "environment variables are readable only in actions (ctx.env)"
                else:
                    why = f"a {self._kind} cannot use it"
            raise UserError(f"ctx.{name} is not available in a {self._kind}: {why}.")
        raise AttributeError(name)

    @property
    def config(self) -> Mapping[str, Any]:
        """The configuration this component instance was mounted with (``{}`` in the app)."""
        return self._frame.config()

    @property
    def bindings(self) -> Mapping[str, object]:
        """Python objects bound to this component instance with ``handle.bind`` (read-only).

        Each instance sees only its own; the app's functions see an empty mapping. A missing
        name raises ``BindingNotFoundError`` (a ``KeyError``).
        """
        return self._frame.bindings()

    @property
    def auth(self) -> Auth:
        """The caller's identity (``ctx.auth.get_user_identity()``)."""
        frame = self._frame
        if frame.namespace:
            return self.__getattr__("auth")  # type: ignore[no-any-return]
        return frame.auth


class QueryCtx(_Context):
    """The context of a query: read-only database access at one snapshot."""

    _kind = "query"
    __slots__ = ()

    @property
    def db(self) -> DatabaseReader:
        """Read access to this app's (or component's) tables."""
        return self._frame.reader()

    @property
    def now(self) -> float:
        """Seconds since the epoch, fixed for this attempt."""
        return self._frame.now

    @overload
    def run_query(
        self, ref: FunctionRef[Any, ReturnT], args: Mapping[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def run_query(self, ref: str, args: Mapping[str, Any] | None = None) -> Any: ...
    def run_query(
        self, ref: FunctionRef[Any, Any] | str, args: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a query in this transaction (same snapshot) and return its result."""
        return self._frame.call(ref, args, "query")


class MutationCtx(QueryCtx):
    """The context of a mutation: one serializable transaction."""

    _kind = "mutation"
    __slots__ = ()

    @property
    def random(self) -> _random.Random:
        """A random generator seeded for this attempt."""
        return self._frame.random

    @property
    def scheduler(self) -> Any:
        """Schedule functions to run later; takes effect only if this mutation commits."""
        return self._frame.scheduler()

    @overload
    def run_mutation(
        self, ref: FunctionRef[Any, ReturnT], args: Mapping[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def run_mutation(self, ref: str, args: Mapping[str, Any] | None = None) -> Any: ...
    def run_mutation(
        self, ref: FunctionRef[Any, Any] | str, args: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a mutation inside this transaction as a nested unit (its own savepoint)."""
        return self._frame.call(ref, args, "mutation")


class ActionCtx(_Context):
    """The context of an action: any I/O; data only through ``run_*`` calls."""

    _kind = "action"
    __slots__ = ()

    @property
    def env(self) -> Mapping[str, str]:
        """Environment variables (readable only in actions)."""
        if self._frame.namespace:
            return self.__getattr__("env")  # type: ignore[no-any-return]
        return self._frame.env()

    @property
    def now(self) -> float:
        """Seconds since the epoch (the app's clock, which tests can control)."""
        return self._frame.executor.clock.time()

    @property
    def scheduler(self) -> Any:
        """Schedule functions to run later."""
        return self._frame.scheduler()

    @property
    def files(self) -> Any:
        """File storage (blobs with signed URLs)."""
        return self._frame.files()

    @overload
    async def run_query(
        self, ref: FunctionRef[Any, ReturnT], args: Mapping[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def run_query(self, ref: str, args: Mapping[str, Any] | None = None) -> Any: ...
    async def run_query(
        self, ref: FunctionRef[Any, Any] | str, args: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a query in its own transaction."""
        return await self._frame.call_async(ref, args, "query")

    @overload
    async def run_mutation(
        self, ref: FunctionRef[Any, ReturnT], args: Mapping[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def run_mutation(self, ref: str, args: Mapping[str, Any] | None = None) -> Any: ...
    async def run_mutation(
        self, ref: FunctionRef[Any, Any] | str, args: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a mutation in its own transaction (retried on conflicts)."""
        return await self._frame.call_async(ref, args, "mutation")

    @overload
    async def run_action(
        self, ref: FunctionRef[Any, ReturnT], args: Mapping[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def run_action(self, ref: str, args: Mapping[str, Any] | None = None) -> Any: ...
    async def run_action(
        self, ref: FunctionRef[Any, Any] | str, args: Mapping[str, Any] | None = None
    ) -> Any:
        """Run another action."""
        return await self._frame.call_async(ref, args, "action")

    async def vector_search(
        self, table: str, index: str, *, vector: list[float], limit: int = 10, filter: Any = None
    ) -> list[dict[str, Any]]:
        """Nearest documents by cosine similarity: ``[{"_id", "_score"}]``, best first."""
        return await self._frame.vector_search(table, index, vector, limit, filter)
