"""Owns the records generation returns: ``GenerateResult``, ``GenerateObjectResult``, streams.

``TextStream`` is what ``stream_text`` opens: ``async for delta in stream`` gives the text
deltas as they come, ``stream.result`` the ``GenerateResult`` once it is done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from components.agent.loop import LoopFinish, StepResult
from components.models import ToolCall, Usage

ObjectT = TypeVar("ObjectT")
ItemT = TypeVar("ItemT")


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateResult:
    """How ``generate_text`` (or a stream) ended."""

    text: str
    """The final text (the last model response's)."""
    message_id: str | None
    """The last saved assistant message."""
    prompt_message_id: str | None
    """The prompt the generation answered."""
    thread_id: str
    """The thread."""
    order: int
    """The turn the messages were saved at."""
    steps: tuple[StepResult, ...]
    """Each model call and its tools."""
    usage: Usage
    """Tokens of all steps."""
    finish_reason: LoopFinish
    """Why it ended: ``stop``, ``length``, ``max_steps``, ``tool_approval``, ``aborted``, ..."""
    agent_name: str | None = None
    """The agent that answered last (another one after a handoff)."""
    pending_approvals: tuple[ToolCall, ...] = ()
    """Tool calls waiting for ``approve_tool_call`` / ``deny_tool_call``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateObjectResult(Generic[ObjectT]):
    """How ``generate_object`` ended: a validated object."""

    object: ObjectT
    """The validated instance."""
    text: str
    """The JSON text the model sent."""
    message_id: str | None
    """The saved assistant message."""
    prompt_message_id: str | None
    """The prompt."""
    usage: Usage
    """Tokens used (retries included)."""
    finish_reason: LoopFinish
    """Why it ended."""


class ResultStream(Generic[ItemT, ObjectT]):
    """Runs a generation in the background; iterate for items, read ``result`` after."""

    def __init__(
        self, run: Callable[[Callable[[ItemT], Awaitable[None]]], Awaitable[ObjectT]]
    ) -> None:
        self._run = run
        self._result: ObjectT | None = None
        self._error: BaseException | None = None
        self._group: anyio.abc.TaskGroup | None = None
        send, receive = anyio.create_memory_object_stream[ItemT](max_buffer_size=10_000)
        self._send: MemoryObjectSendStream[ItemT] = send
        self._receive: MemoryObjectReceiveStream[ItemT] = receive

    async def __aenter__(self) -> ResultStream[ItemT, ObjectT]:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._main)
        return self

    async def _main(self) -> None:
        async def push(item: ItemT) -> None:
            try:
                self._send.send_nowait(item)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # a reader that stopped reading does not stop the generation

        try:
            self._result = await self._run(push)
        except Exception as exc:
            self._error = exc
        finally:
            self._send.close()

    def __aiter__(self) -> AsyncIterator[ItemT]:
        return self._receive.__aiter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        group, self._group = self._group, None
        if group is not None:
            if exc is not None:
                group.cancel_scope.cancel()
            await group.__aexit__(kind, exc, tb)
        self._receive.close()
        if exc is None and self._error is not None:
            raise self._error

    @property
    def result(self) -> ObjectT:
        """The outcome, once the ``async with`` block has ended (or iteration finished).

        Raises:
            RuntimeError: the generation has not finished yet.
        """
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("The stream has not finished: read .result after the async with.")
        return self._result

    async def wait(self) -> ObjectT:
        """Read the rest of the stream and return the outcome."""
        async for _ in self:
            pass
        # The producer closes the stream only after storing its outcome.
        return self.result


TextStream = ResultStream[str, GenerateResult]
"""What ``stream_text`` opens."""
