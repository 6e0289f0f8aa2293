"""Owns the typed shapes of the plain values ``Agent`` methods return.

Threads, messages and approvals are the component's documents, returned as stored (plain
dicts); ``stream_deltas`` and approval decisions are plain dicts built by the component. These
``TypedDict``s describe them for type checkers only: at run time they are ordinary dicts.
They are ``typing_extensions.TypedDict``s because pydantic, which validates function
arguments, refuses ``typing.TypedDict`` before Python 3.12: so they may annotate arguments too.
"""

from __future__ import annotations

from typing import Any, NotRequired

from typing_extensions import TypedDict

from components.agent.parts import Part
from core import Id


class ThreadDocument(TypedDict):
    """A thread, as ``get_thread`` and ``update_thread`` return it."""

    _id: Id
    _creation_time: float
    user_id: str | None
    title: str | None
    summary: str | None
    status: str
    """``"active"`` unless changed with ``update_thread``."""
    agent_name: str | None


class MessageDocument(TypedDict):
    """A message, as ``get_message``, ``update_message`` and ``search_messages`` return it."""

    _id: Id
    _creation_time: float
    thread_id: str
    user_id: str | None
    order: int
    step_order: int
    role: str
    """``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``."""
    status: str
    """``"pending"``, ``"success"`` or ``"failed"``."""
    text: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str | None
    tool_name: str | None
    output: Any
    error: str | None
    usage: dict[str, int] | None
    model: str | None
    agent_name: str | None
    finish_reason: str | None
    lease_until: float | None
    embedding_id: str | None
    _score: NotRequired[float]
    """Relevance, on vector and hybrid search results."""


class StreamInfo(TypedDict):
    """One stream of ``stream_deltas``."""

    stream_id: str
    thread_id: str
    order: int
    step_order: int
    status: str
    """``"streaming"``, ``"finished"``, ``"aborted"`` or ``"failed"``."""
    agent_name: str | None
    model: str | None
    cursor: int
    """Parts written so far."""
    reason: str | None


class StreamDelta(TypedDict):
    """One delta row of ``stream_deltas``: the parts ``[start, end)`` of a stream."""

    stream_id: str
    start: int
    end: int
    parts: list[Part]
    text: str
    """The row's text deltas joined."""


class StreamDeltas(TypedDict):
    """What ``stream_deltas`` returns."""

    streams: list[StreamInfo]
    deltas: list[StreamDelta]
    """The deltas after the cursor given."""
    cursor: str
    """Pass it back to get only newer deltas."""
    done: bool
    """Every stream ended and every delta was returned."""


class ApprovalDocument(TypedDict):
    """A tool call waiting for (or given) approval, as ``pending_approvals`` returns it."""

    _id: Id
    _creation_time: float
    thread_id: str
    message_id: str
    prompt_message_id: str | None
    agent_name: str | None
    tool_call_id: str
    tool_name: str
    arguments: dict[str, Any]
    status: str
    """``"pending"``, ``"approved"`` or ``"denied"`` (``"…_done"`` once resumed)."""
    reason: str | None


class ApprovalDecision(TypedDict):
    """What ``approve_tool_call`` / ``deny_tool_call`` return from a mutation."""

    thread_id: str
    message_id: str
    ready: bool
    """Every call of the step is decided (the resume is scheduled)."""
    approvals: list[ApprovalDocument]
    """The step's approval rows."""
