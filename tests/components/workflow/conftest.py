from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from core.testing import TestApp


class FakeScheduler:
    """An in-memory stand-in for ctx.scheduler until core/scheduler.py lands."""

    def __init__(self, t: TestApp):
        self.t = t
        self.jobs: list[tuple[float, int, str, str, dict[str, Any]]] = []
        self.seq = itertools.count()
        self.canceled: set[int] = set()

    def bind(self, frame: Any) -> Any:
        sched = self

        class Bound:
            def run_after(self, seconds: float, ref: Any, args: Any) -> str:
                return self.run_at(frame.executor.clock.time() + seconds, ref, args)

            def run_at(self, ts: float, ref: Any, args: Any) -> str:
                target = frame.executor.resolver.resolve(ref, caller=frame.namespace)
                n = next(sched.seq)
                job = (ts, n, target.ref.kind.value, target.handle, dict(args or {}))
                if frame.txn is not None:
                    frame.txn.after_commit.append(lambda *a: heapq.heappush(sched.jobs, job))
                else:
                    heapq.heappush(sched.jobs, job)
                return f"job{n}"

            def cancel(self, job_id: str) -> None:
                sched.canceled.add(int(job_id[3:]))

        return Bound()

    def finish(self, limit: int = 100_000) -> None:
        rt = self.t.runtime
        for _ in range(limit):
            now = rt.clock.time()
            if not self.jobs or self.jobs[0][0] > now:
                return
            _, n, kind, handle, args = heapq.heappop(self.jobs)
            if n in self.canceled:
                continue
            if kind == "mutation":
                rt.executor.mutation(handle, args, caller="")
            elif kind == "action":
                try:
                    rt.portal.call(lambda h=handle, a=args: rt.executor.action(h, a, caller=""))
                except Exception:
                    pass
            else:
                rt.executor.query(handle, args, caller="")
        raise AssertionError("scheduled work did not settle")


@pytest.fixture
def make_test_app() -> Iterator[Any]:
    opened: list[TestApp] = []

    def make(app: Any, **kw: Any) -> TestApp:
        t = TestApp(app, **kw).__enter__()
        opened.append(t)
        if not hasattr(t, "finish_scheduled"):
            fake = FakeScheduler(t)
            t.runtime.executor.hooks.scheduler = fake.bind  # type: ignore[method-assign]
            t.finish_scheduled = fake.finish  # type: ignore[attr-defined]
        return t

    yield make
    for t in opened:
        t.__exit__(None, None, None)
