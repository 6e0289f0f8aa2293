"""Owns the test harness: ``TestApp`` on a fresh temporary SQLite file, with a manual clock.

``with TestApp(app) as t:`` opens the app on the production engine (a real SQLite file in a
temporary folder, deleted on close), synchronously, like Starlette's ``TestClient``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from core.app import App
from core.auth import UserIdentity, to_identity
from core.errors import UserError
from core.execution import Target
from core.functions import FunctionKind, FunctionRef
from core.migrations import MigrationStatus, Migrator
from core.runtime import Runtime
from core.scheduler import scheduler_of
from core.storage.sqlite import SQLiteStorage
from core.testing.clock import ManualClock
from core.testing.faults import FaultyStorage

ReturnT = TypeVar("ReturnT")


class TestApp:
    """A synchronous harness around an app: ``query``, ``mutation``, ``action``, ``run``."""

    __test__ = False

    def __init__(
        self,
        app: App,
        *,
        identity: Any = None,
        clock: ManualClock | None = None,
        storage: Any = None,
        migrate: bool = False,
    ):
        self.app = app
        self.migrate_at_open = migrate
        """Run pending migrations as the app opens (``capsule serve --migrate``)."""
        self.identity: UserIdentity | None = to_identity(identity)
        self.clock = clock or ManualClock()
        self._storage = storage
        self._tmp: str | None = None
        self._runtime: Runtime | None = None
        self._parent: TestApp | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> TestApp:
        if self._parent is not None:  # a with_identity view: its parent owns the runtime
            return self
        storage = self._storage
        if storage is None:
            self._tmp = tempfile.mkdtemp(prefix="capsule-test-")
            storage = SQLiteStorage(Path(self._tmp) / "test.db", synchronous="NORMAL")
        rt = self.app.make_runtime(storage, clock=self.clock)
        rt.open(defer=self.migrate_at_open)
        if self.migrate_at_open:
            try:
                Migrator(self.app, rt).run()
                left = list(rt.db.catalog.unsettled.values())
                if left:
                    raise left[0].error()
            except BaseException:
                rt.close()
                raise
        self._runtime = rt
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._parent is not None:
            return
        rt, self._runtime = self._runtime, None
        if rt is not None:
            rt.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def runtime(self) -> Runtime:
        """The open runtime."""
        if self._runtime is None:
            raise UserError("TestApp is not open: use it as `with TestApp(app) as t:`.")
        return self._runtime

    def with_identity(self, identity: Any) -> TestApp:
        """A view of this harness whose calls carry ``identity`` (a dict of claims works)."""
        view = TestApp(self.app, identity=identity, clock=self.clock)
        view._runtime = self.runtime
        view._parent = self
        return view

    # -- calls --------------------------------------------------------------------------------

    @overload
    def query(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def query(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    def query(self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None) -> Any:
        """Run a public query."""
        return self.runtime.executor.query(ref, args, self.identity)

    @overload
    def mutation(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def mutation(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    def mutation(self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None) -> Any:
        """Run a public mutation."""
        return self.runtime.executor.mutation(ref, args, self.identity)

    @overload
    def action(
        self, ref: FunctionRef[Any, ReturnT], args: dict[str, Any] | None = None
    ) -> ReturnT: ...
    @overload
    def action(self, ref: str, args: dict[str, Any] | None = None) -> Any: ...
    def action(self, ref: FunctionRef[Any, Any] | str, args: dict[str, Any] | None = None) -> Any:
        """Run a public action (on the runtime's loop thread) and wait for it."""
        rt = self.runtime
        return rt.portal.call(rt.executor.action, ref, args, self.identity)

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(ctx)`` as a mutation of the app (setup and inspection in tests)."""
        ref: FunctionRef[Any, Any] = FunctionRef(
            fn, kind=FunctionKind.MUTATION, internal=True, name="TestApp.run"
        )
        ex = self.runtime.executor
        return ex._logged(
            Target(ref, ""),
            lambda: ex._run_mutation(Target(ref, ""), {}, ex_auth(self.identity)),
        )

    def migrate(self, *names: str, dry_run: bool = False) -> list[MigrationStatus]:
        """Run the pending migrations (all, or those named), as ``capsule migrate`` does."""
        migrator = Migrator(self.app, self.runtime)
        return migrator.dry_run(names) if dry_run else migrator.run(names)

    # -- time -------------------------------------------------------------------------------

    def advance_time(self, seconds: float) -> None:
        """Move the manual clock forward; ``finish_scheduled()`` then runs what became due.

        Missed cron occurrences coalesce into one run, as after a restart: to see a cron run
        every interval, advance one interval at a time.
        """
        self.clock.advance(seconds)
        scheduler_of(self.runtime).wake()  # a running runner (a client's services) looks again

    def finish_scheduled(self, *, max_jobs: int = 10_000) -> int:
        """Run every job due at the manual clock's time, and what those jobs schedule.

        Due crons are dispatched first. Returns the number of jobs started; a job another
        caller already runs is not waited for.
        """
        rt = self.runtime
        return int(rt.portal.call(lambda: scheduler_of(rt).finish(max_jobs=max_jobs)))


def ex_auth(identity: UserIdentity | None) -> Any:
    """The ``ctx.auth`` for an identity."""
    from core.auth import NO_AUTH, Auth

    return NO_AUTH if identity is None else Auth(identity)


__all__ = ["FaultyStorage", "ManualClock", "TestApp"]
