"""Owns running functions: a transaction per call, nested calls, retries, and call logging.

A top-level query runs at one snapshot. A top-level mutation runs optimistically; when a newer
commit touched what it read it is re-run from scratch (it is deterministic, so this is safe)
with jittered backoff, and after a few attempts one final attempt runs holding the commit lock,
so it cannot conflict. Nested ``run_query`` / ``run_mutation`` calls from queries and mutations
run inside the caller's transaction; a nested mutation is a savepoint, so if it raises only its
own writes are undone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import anyio.to_thread

from core.auth import NO_AUTH, Auth, UserIdentity
from core.context import ActionCtx, MutationCtx, QueryCtx
from core.database.engine import Conflict, Database
from core.database.reader import DatabaseReader
from core.database.writer import DatabaseWriter
from core.errors import Abandoned as Abandoned  # re-exported: hooks raise it
from core.errors import (
    AppError,
    FunctionKindError,
    FunctionNotFoundError,
    RetryableStorageError,
    UserError,
)
from core.functions import KIND_VALUE, FunctionKind, FunctionRef
from core.handles import HandleKey, is_handle
from core.indexes.vector import vector_search
from core.system_tables import FUNCTION_KEYS, SYSTEM_NAMESPACE

if TYPE_CHECKING:
    from core.database.transaction import Transaction

logger = logging.getLogger("capsule.functions")

MAX_DEPTH = 8
OPTIMISTIC_ATTEMPTS = 4
EXCLUSIVE_TIMEOUT = 30.0
_BACKOFF_BASE = 0.002
_BACKOFF_MAX = 0.05
_RESOLVED_MAX = 1024


class Clock(Protocol):
    """Where ``ctx.now`` comes from (``time.time`` in production, ``ManualClock`` in tests)."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The wall clock."""

    def time(self) -> float:
        """``time.time()``."""
        return time.time()


class Target(NamedTuple):
    """A function resolved for a call: the reference and the table space it runs in."""

    ref: FunctionRef[Any, Any]
    namespace: str


class Resolver(Protocol):
    """Turns a function reference, path or verified ``Handle`` into a ``Target`` for a caller."""

    def resolve(self, ref: Any, *, caller: str | None) -> Target:
        """``caller`` is the calling namespace, or ``None`` for a client.

        Handle strings never reach the resolver: the executor verifies them first and passes
        the ``Handle`` they name.
        """
        ...

    def bindings(self, namespace: str) -> Mapping[str, object]:
        """The Python objects bound to a table space's instance (``ctx.bindings``)."""
        ...


class Frame:
    """One function invocation: its transaction (if any), table space, identity and depth."""

    __slots__ = (
        "executor",
        "target",
        "namespace",
        "auth",
        "depth",
        "kind",
        "txn",
        "now",
        "_random",
        "_reader",
    )

    def __init__(
        self,
        executor: Executor,
        target: Target,
        *,
        auth: Auth,
        depth: int,
        kind: str,
        txn: Transaction | None,
        now: float,
    ):
        self.executor = executor
        self.target = target
        self.namespace = target.namespace
        self.auth = auth
        self.depth = depth
        self.kind = kind
        self.txn = txn
        self.now = now
        self._random: random.Random | None = None
        self._reader: DatabaseReader | None = None

    @property
    def random(self) -> random.Random:
        """A generator seeded for this attempt."""
        if self._random is None:
            self._random = random.Random(int.from_bytes(os.urandom(8), "little"))
        return self._random

    def reader(self) -> DatabaseReader:
        """``ctx.db`` for this frame."""
        if self._reader is None:
            if self.txn is None:
                raise UserError("This function has no database transaction.")
            db = self.executor.db
            space = db.space(self.namespace)
            cls = DatabaseWriter if self.kind == "mutation" else DatabaseReader
            self._reader = cls(self.txn, space, self.executor.system_space())
        return self._reader

    def call(self, ref: Any, args: Mapping[str, Any] | None, kind: str | None) -> Any:
        """A nested query or mutation inside this frame's transaction.

        ``kind`` is what the caller expects ``ref`` to be, or ``None`` for whatever it is.
        """
        return self.executor.call_nested(self, ref, args, kind)

    async def call_async(self, ref: Any, args: Mapping[str, Any] | None, kind: str | None) -> Any:
        """A call from an action: its own transaction (``kind`` as in ``call``)."""
        return await self.executor.call_from_action(self, ref, args, kind)

    def bindings(self) -> Mapping[str, object]:
        """``ctx.bindings``: the objects bound to this frame's component instance."""
        return self.executor.resolver.bindings(self.namespace)

    def handle(self, ref: Any) -> str:
        """The handle of ``ref`` as this frame's function sees it (``function_handle``)."""
        return self.executor.handle(self.executor.resolve(ref, caller=self.namespace))

    def scheduler(self) -> Any:
        """``ctx.scheduler`` for this frame."""
        return self.executor.services.scheduler(self)

    def files(self) -> Any:
        """``ctx.files`` for this frame."""
        return self.executor.services.files_for(self)

    def config(self) -> Mapping[str, Any]:
        """``ctx.config``: the component instance's configuration."""
        get = getattr(self.executor.resolver, "component_config", None)
        return {} if get is None else dict(get(self.namespace))

    def env(self) -> Mapping[str, str]:
        """``ctx.env`` (actions only)."""
        return self.executor.services.env_for(self)

    async def vector_search(
        self, table: str, index: str, vector: Any, limit: int, filter: Any
    ) -> list[dict[str, Any]]:
        """``ctx.vector_search``: the in-memory vector store of the index, kept current."""
        db = self.executor.db
        space = db.space(self.namespace)
        return await vector_search(db, space, table, index, vector, limit, filter)


class ContextServices(Protocol):
    """What contexts reach beyond functions and the database (the ``Runtime`` provides it)."""

    def scheduler(self, frame: Frame) -> Any:
        """``ctx.scheduler`` for ``frame``."""
        ...

    def files_for(self, frame: Frame) -> Any:
        """``ctx.files`` for ``frame``."""
        ...

    def env_for(self, frame: Frame) -> Mapping[str, str]:
        """``ctx.env`` for ``frame`` (an action's)."""
        ...

    def call_span(self, target: Target) -> contextlib.AbstractContextManager[None]:
        """A block around one top-level call: it sees the call's duration, output, exception."""
        ...


class _NoServices:
    """An executor outside a runtime: explains what is missing."""

    def scheduler(self, frame: Frame) -> Any:
        raise UserError("ctx.scheduler needs a running app (open a client or TestApp).")

    def files_for(self, frame: Frame) -> Any:
        raise UserError("ctx.files needs a running app (open a client or TestApp).")

    def env_for(self, frame: Frame) -> Mapping[str, str]:
        return frame.executor.env

    def call_span(self, target: Target) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class Executor:
    """Runs functions of one app against one open database."""

    def __init__(
        self,
        db: Database,
        resolver: Resolver,
        *,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        services: ContextServices | None = None,
    ):
        self.db = db
        self.resolver = resolver
        self.clock: Clock = clock or SystemClock()
        self.env: Mapping[str, str] = dict(env or {})
        self.services: ContextServices = services if services is not None else _NoServices()
        self.calls = 0
        self.retries = 0
        self._key: HandleKey | None = None
        self._key_lock = threading.Lock()
        self._resolved: dict[tuple[FunctionRef[Any, Any], str | None], Target] = {}
        """Resolutions of reference objects by (reference, calling namespace; ``None`` for
        clients): mounts are fixed once a runtime opens, so a reference object always
        resolves the same way from a caller."""

    def system_space(self) -> Any:
        """The system table space, when the runtime has one."""
        return self.db.catalog.spaces.get("_system")

    # -- handles ------------------------------------------------------------------------------

    def load_handle_key(self) -> HandleKey:
        """The database's handle key: read from ``_function_keys``, or created there once.

        The runtime loads it as it opens, outside any transaction. Two processes opening a
        new database at once both try to insert a key; the second one's transaction read the
        empty table, so it conflicts, re-runs and reads the first one's key.
        """
        with self._key_lock:
            if self._key is None:

                def attempt(txn: Transaction) -> bytes:
                    db = DatabaseWriter(txn, self.db.space(SYSTEM_NAMESPACE))
                    doc = db.query(FUNCTION_KEYS).first()
                    if doc is not None:
                        return bytes(doc["secret"])
                    secret = os.urandom(32)
                    db.insert(FUNCTION_KEYS, {"secret": secret})
                    return secret

                self._key = HandleKey(self.run_transaction(attempt, label="handles: key"))
            return self._key

    def handle(self, target: Target) -> str:
        """The signed handle string of ``target`` (what travels and is stored)."""
        return self.load_handle_key().sign(target.namespace, target.ref.path)

    def resolve(self, ref: Any, *, caller: str | None) -> Target:
        """Resolve ``ref`` as ``caller`` sees it, verifying handle strings first.

        Raises:
            InvalidHandleError: ``ref`` is a handle this database did not sign.
            FunctionNotFoundError: ``ref`` does not resolve from ``caller`` (a client may not
                call handles at all).
        """
        if isinstance(ref, str) and is_handle(ref):
            if caller is None:
                raise FunctionNotFoundError(ref[:80], detail="handles are not callable by clients")
            ref = self.load_handle_key().verify(ref)
        return self.resolver.resolve(ref, caller=caller)

    # -- top-level calls -------------------------------------------------------------------

    def _resolve(self, ref: Any, kind: str | None, caller: str | None) -> Target:
        if isinstance(ref, FunctionRef):
            # Clients and functions call the same reference objects again and again.
            key = (ref, caller)
            target = self._resolved.get(key)
            if target is None:
                target = self.resolve(ref, caller=caller)
                if len(self._resolved) >= _RESOLVED_MAX:
                    self._resolved.clear()  # references made per call: never grow without bound
                self._resolved[key] = target
        else:
            target = self.resolve(ref, caller=caller)
        if kind is not None and KIND_VALUE[target.ref.kind] != kind:
            raise FunctionKindError(target.ref.path, kind=target.ref.kind.value, called_as=kind)
        return target

    def _handles_in(self, args: Any, caller: str | None) -> Any:
        """Replace function references among ``args`` by handle strings.

        References travel between table spaces as handles, resolved as ``caller`` sees them.
        """
        if caller is None or not isinstance(args, dict):
            return args
        if not any(isinstance(v, FunctionRef) for v in args.values()):
            return args
        return {
            k: self.handle(self.resolve(v, caller=caller)) if isinstance(v, FunctionRef) else v
            for k, v in args.items()
        }

    def _args(self, target: Target, args: Any, caller: str | None = None) -> dict[str, Any]:
        args = self._handles_in(args, caller)
        space = self.db.catalog.spaces.get(target.namespace)
        context = space.validation_context() if space is not None else None
        kwargs: dict[str, Any] = target.ref.validate_args(args, context)
        return kwargs

    def query(
        self,
        ref: Any,
        args: Any = None,
        identity: UserIdentity | None = None,
        *,
        caller: str | None = None,
        observe: Callable[[Transaction], None] | None = None,
    ) -> Any:
        """Run a query at one snapshot and return its result.

        ``observe(txn)`` is called before the transaction closes, even if the handler raised
        (subscriptions keep its read set and snapshot timestamp).
        """
        target = self._resolve(ref, "query", caller)
        return self._logged(target, lambda: self._run_query(target, args, _auth(identity), observe))

    def _run_query(
        self,
        target: Target,
        args: Any,
        auth: Auth,
        observe: Callable[[Transaction], None] | None = None,
    ) -> Any:
        kwargs = self._args(target, args)
        txn = self.db.transaction(now=self.clock.time())
        try:
            frame = Frame(self, target, auth=auth, depth=0, kind="query", txn=txn, now=txn.now)
            return target.ref.check_result(target.ref.handler(QueryCtx(frame), **kwargs))
        finally:
            if observe is not None:
                observe(txn)
            txn.close()

    def mutation(
        self,
        ref: Any,
        args: Any = None,
        identity: UserIdentity | None = None,
        *,
        caller: str | None = None,
        before_commit: Callable[[Transaction, Any], None] | None = None,
    ) -> Any:
        """Run a mutation as one serializable transaction (retried on conflicts).

        ``before_commit(txn, result)`` runs after the handler, in its transaction (the server
        records idempotency keys there, so the record commits exactly with the mutation).
        """
        target = self._resolve(ref, "mutation", caller)
        return self._logged(
            target, lambda: self._run_mutation(target, args, _auth(identity), before_commit)
        )

    def _run_mutation(
        self,
        target: Target,
        args: Any,
        auth: Auth,
        before_commit: Callable[[Transaction, Any], None] | None = None,
    ) -> Any:
        kwargs = self._args(target, args)

        def attempt(txn: Transaction) -> Any:
            frame = Frame(self, target, auth=auth, depth=0, kind="mutation", txn=txn, now=txn.now)
            result = target.ref.check_result(target.ref.handler(MutationCtx(frame), **kwargs))
            if before_commit is not None:
                before_commit(txn, result)
            return result

        return self.run_transaction(attempt, label=target.ref.path)

    def run_transaction(self, attempt: Callable[[Transaction], Any], *, label: str) -> Any:
        """Run ``attempt(txn)`` and commit it, re-running it on conflicts (mutation semantics).

        Mutations use it, and so do services writing system tables (files, idempotency keys).
        """
        tables: set[str] = set()
        for n in range(OPTIMISTIC_ATTEMPTS):
            txn = self.db.transaction(now=self.clock.time())
            try:
                result = attempt(txn)
                self.db.commit(txn)
                return result
            except (Conflict, RetryableStorageError) as exc:
                # A read the storage failed transiently (a lost connection) wrote nothing:
                # re-run it like a conflict.
                if isinstance(exc, Conflict):
                    tables |= exc.tables
                self.retries += 1
                self.db.conflict_count += 1
                logger.debug("%s conflicted on %s (attempt %d)", label, exc, n + 1)
                time.sleep(random.uniform(0, min(_BACKOFF_BASE * 2**n, _BACKOFF_MAX)))
            finally:
                txn.close()
        # Each conflict above counted the retry it causes, this final attempt included.
        # Invariant: holding the commit lock, no other commit of this process can land
        # between this attempt's snapshot and its commit, and storage's write lock keeps other
        # processes out, so this attempt cannot conflict.
        result, _ = self.db.run_exclusive(
            attempt, now=self.clock.time(), timeout=EXCLUSIVE_TIMEOUT, tables=tables
        )
        return result

    async def action(
        self,
        ref: Any,
        args: Any = None,
        identity: UserIdentity | None = None,
        *,
        caller: str | None = None,
    ) -> Any:
        """Run an action (async; it may do any I/O)."""
        target = self._resolve(ref, "action", caller)
        start = time.perf_counter()
        self.calls += 1
        try:
            with self.services.call_span(target):
                result = await self._run_action(target, args, _auth(identity))
        except BaseException as exc:
            self._log_failure(target, start, exc)
            raise
        self._log_success(target, start)
        return result

    async def http(
        self,
        ref: FunctionRef[Any, Any],
        request: Any,
        args: Mapping[str, Any],
        identity: UserIdentity | None = None,
    ) -> Any:
        """Run an ``@app.http_route`` handler like an action: validated, logged, counted.

        ``args`` are the request's path and query parameters; those the handler declares
        after ``request`` are validated (in lax mode: they arrive as strings) and passed,
        the rest stay readable on the request. Returns what the handler returns (the server
        checks it is a Response).

        Raises:
            InvalidArgumentError: a declared parameter is missing or not valid.
        """
        if ref.kind is not FunctionKind.HTTP:
            raise UserError(f"{ref!r} is not an HTTP route.")
        target = Target(ref, "")
        start = time.perf_counter()
        self.calls += 1
        try:
            declared = ref.args_model.model_fields
            kwargs = ref.validate_args({k: v for k, v in args.items() if k in declared})
            frame = Frame(
                self,
                target,
                auth=_auth(identity),
                depth=0,
                kind="action",
                txn=None,
                now=self.clock.time(),
            )
            result = await ref.handler(ActionCtx(frame), request, **kwargs)
        except BaseException as exc:
            self._log_failure(target, start, exc)
            raise
        self._log_success(target, start)
        return result

    async def _run_action(self, target: Target, args: Any, auth: Auth, depth: int = 0) -> Any:
        kwargs = self._args(target, args)
        frame = Frame(
            self, target, auth=auth, depth=depth, kind="action", txn=None, now=self.clock.time()
        )
        return target.ref.check_result(await target.ref.handler(ActionCtx(frame), **kwargs))

    # -- nested calls -----------------------------------------------------------------------

    def _child_auth(self, parent: Frame, target: Target) -> Auth:
        # Identity flows between the app's own functions; components see none, and what a
        # component calls back into runs without one too.
        if parent.namespace == "" and target.namespace == "":
            return parent.auth
        return NO_AUTH

    def call_nested(self, parent: Frame, ref: Any, args: Any, kind: str | None) -> Any:
        """``ctx.run_query`` / ``ctx.run_mutation`` from a query or mutation.

        ``kind`` is the kind the caller asked for, or ``None`` (``core.call``): whatever
        ``ref`` is, as far as a query or mutation may call it.
        """
        depth = parent.depth + 1
        if depth > MAX_DEPTH:
            raise UserError(f"Nested function calls are limited to a depth of {MAX_DEPTH}.")
        parent_kind = parent.kind
        if kind == "mutation" and parent_kind != "mutation":
            raise UserError(
                f"ctx.run_mutation is not available in a {parent_kind}: queries are read-only."
            )
        caller = parent.namespace
        target = self._resolve(ref, kind, caller)
        fn = target.ref
        if kind is None:
            kind = KIND_VALUE[fn.kind]
            if kind not in ("query", "mutation") or (
                kind == "mutation" and parent_kind != "mutation"
            ):
                raise UserError(
                    f"{fn!r} is {_a(kind)}; {_a(parent_kind)} cannot call it "
                    f"({_CALLABLE_FROM[parent_kind]})."
                )
        kwargs = self._args(target, args, caller)
        txn = parent.txn
        if txn is None:  # pragma: no cover - a query or mutation frame always has one
            raise UserError("nested call outside a transaction")
        auth = self._child_auth(parent, target)
        frame = Frame(self, target, auth=auth, depth=depth, kind=kind, txn=txn, now=parent.now)
        if kind == "query":
            return fn.check_result(fn.handler(QueryCtx(frame), **kwargs))
        mark = txn.savepoint()
        try:
            return fn.check_result(fn.handler(MutationCtx(frame), **kwargs))
        except BaseException:
            txn.rollback_to(mark)
            raise

    async def call_from_action(self, parent: Frame, ref: Any, args: Any, kind: str | None) -> Any:
        """``await ctx.run_query / run_mutation / run_action`` from an action.

        ``kind`` is as in ``call_nested``.
        """
        if parent.depth + 1 > MAX_DEPTH:
            raise UserError(f"Nested function calls are limited to a depth of {MAX_DEPTH}.")
        target = self._resolve(ref, kind, parent.namespace)
        if kind is None:
            kind = target.ref.kind.value
            if kind not in ("query", "mutation", "action"):
                raise UserError(
                    f"{target.ref!r} is {_a(kind)}; an action cannot call it "
                    f"({_CALLABLE_FROM['action']})."
                )
        auth = self._child_auth(parent, target)
        args = self._handles_in(args, parent.namespace)
        if kind == "query":
            return await anyio.to_thread.run_sync(self._run_query, target, args, auth)
        if kind == "mutation":
            return await anyio.to_thread.run_sync(self._run_mutation, target, args, auth)
        return await self._run_action(target, args, auth, parent.depth + 1)

    # -- logging ------------------------------------------------------------------------------

    def _logged(self, target: Target, run: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        retries = self.retries
        self.calls += 1
        try:
            with self.services.call_span(target):
                result = run()
        except Abandoned:
            self._log_success(target, start, self.retries - retries, note="abandoned (lost race)")
            raise
        except BaseException as exc:
            self._log_failure(target, start, exc, self.retries - retries)
            raise
        self._log_success(target, start, self.retries - retries)
        return result

    def _log_success(
        self, target: Target, start: float, retries: int = 0, *, note: str = "ok"
    ) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s %s in %.2f ms (retries: %d)",
                target.ref.kind.value,
                target.ref.path,
                note,
                (time.perf_counter() - start) * 1000,
                retries,
            )

    def _log_failure(
        self, target: Target, start: float, exc: BaseException, retries: int = 0
    ) -> None:
        # An AppError is an expected outcome the caller receives, not a fault: not a warning.
        level = logging.INFO if isinstance(exc, AppError) else logging.WARNING
        logger.log(
            level,
            "%s %s failed in %.2f ms (retries: %d): %s: %s",
            target.ref.kind.value,
            target.ref.path,
            (time.perf_counter() - start) * 1000,
            retries,
            type(exc).__name__,
            exc,
        )


_CALLABLE_FROM = {
    "query": "queries are read-only and call only queries",
    "mutation": "a mutation calls queries and mutations; schedule actions with ctx.scheduler",
    "action": "an action calls queries, mutations and actions; HTTP routes are not callable",
}


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _auth(identity: UserIdentity | None) -> Auth:
    return NO_AUTH if identity is None else Auth(identity)


KIND_OF = {k.value: k for k in FunctionKind}
