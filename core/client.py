"""Owns the in-process clients: ``Client`` (async) and ``SyncClient`` (blocking, thread-safe).

Entering a client opens the app's runtime (storage, then the background services unless
``runtime=False``); leaving the last one closes it. The sync client runs queries and mutations
in the calling thread, with no hop through an event loop; actions go through the runtime's
loop thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import anyio.to_thread

from core.auth import UserIdentity, to_identity

if TYPE_CHECKING:
    from core.functions import FunctionRef
    from core.runtime import Runtime

ReturnT = TypeVar("ReturnT")


class RuntimeOwner(Protocol):
    """What a client opens (the ``App``)."""

    def _acquire_runtime(self) -> Runtime: ...

    def _release_runtime(self) -> None: ...


class _ClientBase:
    def __init__(self, owner: RuntimeOwner, *, identity: Any = None, runtime: bool = True):
        self._owner = owner
        self.identity: UserIdentity | None = to_identity(identity)
        self._with_services = runtime
        self._rt: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        """The open runtime (only while the client is entered)."""
        if self._rt is None:
            from core.errors import UserError

            raise UserError("The client is not open: use it in a with / async with block.")
        return self._rt

    def _open(self) -> None:
        self._rt = self._owner._acquire_runtime()
        if self._with_services:
            self._rt.start_services()

    def _close(self) -> None:
        rt, self._rt = self._rt, None
        if rt is not None:
            if self._with_services:
                rt.stop_services()
            self._owner._release_runtime()


class Client(_ClientBase):
    """The async in-process client: ``async with app.client() as client``."""

    async def __aenter__(self) -> Client:
        await anyio.to_thread.run_sync(self._open)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await anyio.to_thread.run_sync(self._close)

    @overload
    async def query(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def query(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    async def query(
        self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None
    ) -> Any:
        """Run a public query."""
        ex = self.runtime.executor
        return await anyio.to_thread.run_sync(ex.query, ref, args, self.identity)

    @overload
    async def mutation(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def mutation(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    async def mutation(
        self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None
    ) -> Any:
        """Run a public mutation."""
        ex = self.runtime.executor
        return await anyio.to_thread.run_sync(ex.mutation, ref, args, self.identity)

    @overload
    async def action(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    async def action(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    async def action(
        self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None
    ) -> Any:
        """Run a public action."""
        return await self.runtime.executor.action(ref, args, self.identity)

    def subscribe(self, ref: Any, args: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Yield the query's result now and again whenever it changes."""
        from core.subscriptions import subscribe

        return subscribe(self.runtime, ref, args, self.identity)


class SyncClient(_ClientBase):
    """The blocking client: ``with app.sync_client() as client``; safe to share by threads."""

    def __enter__(self) -> SyncClient:
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()

    @overload
    def query(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def query(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    def query(self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None) -> Any:
        """Run a public query in the calling thread."""
        return self.runtime.executor.query(ref, args, self.identity)

    @overload
    def mutation(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def mutation(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    def mutation(self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None) -> Any:
        """Run a public mutation in the calling thread."""
        return self.runtime.executor.mutation(ref, args, self.identity)

    @overload
    def action(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def action(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    def action(self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None) -> Any:
        """Run a public action on the runtime's loop thread and wait for it."""
        rt = self.runtime
        return rt.portal.call(rt.executor.action, ref, args, self.identity)

    def subscribe(self, ref: Any, args: dict[str, Any] | None = None) -> Iterator[Any]:
        """Yield the query's result now and again whenever it changes (blocking)."""
        from core.subscriptions import subscribe_sync

        return subscribe_sync(self.runtime, ref, args, self.identity)
