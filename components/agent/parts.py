"""Owns stream parts: model stream events as Vercel AI SDK UI message stream parts.

Persisted deltas carry lists of parts shaped exactly like the AI SDK's UI message stream
chunks, with snake_case keys (``{"type": "text-delta", "id", "delta"}``,
``{"type": "tool-input-start", "tool_call_id", "tool_name"}``, ...), so a server can relay
them to ``useChat`` by renaming keys, and any client can rebuild the text from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from components.agent.tools import ToolOutcome
from components.models import TextDelta, ToolCall, ToolCallDelta

Part = dict[str, Any]


class PartEncoder:
    """Turns one generation's stream events into parts, step by step."""

    def __init__(self) -> None:
        self._step = 0
        self._text_id: str | None = None
        self._calls: dict[int, str] = {}
        self._names: dict[int, str] = {}

    def start_step(self) -> list[Part]:
        """The parts that open a model call."""
        self._step += 1
        self._text_id = None
        self._calls = {}
        self._names = {}
        return [{"type": "start-step"}]

    def delta(self, event: TextDelta | ToolCallDelta) -> list[Part]:
        """The parts for one text or tool-call delta."""
        if isinstance(event, TextDelta):
            if not event.text:
                return []
            parts: list[Part] = []
            if self._text_id is None:
                self._text_id = f"text-{self._step}"
                parts.append({"type": "text-start", "id": self._text_id})
            parts.append({"type": "text-delta", "id": self._text_id, "delta": event.text})
            return parts
        parts = []
        if event.index not in self._calls and event.id is not None and event.name:
            self._calls[event.index] = event.id
            self._names[event.index] = event.name
            parts.append(
                {"type": "tool-input-start", "tool_call_id": event.id, "tool_name": event.name}
            )
        call_id = self._calls.get(event.index)
        if call_id is not None and event.arguments:
            parts.append(
                {
                    "type": "tool-input-delta",
                    "tool_call_id": call_id,
                    "input_text_delta": event.arguments,
                }
            )
        return parts

    def end_response(self, calls: Sequence[ToolCall]) -> list[Part]:
        """The parts that close a model response: the text's end, every call's whole input."""
        parts: list[Part] = []
        if self._text_id is not None:
            parts.append({"type": "text-end", "id": self._text_id})
            self._text_id = None
        started = set(self._calls.values())
        for call in calls:
            if call.id not in started:
                parts.append(
                    {"type": "tool-input-start", "tool_call_id": call.id, "tool_name": call.name}
                )
            parts.append(
                {
                    "type": "tool-input-available",
                    "tool_call_id": call.id,
                    "tool_name": call.name,
                    "input": call.arguments,
                }
            )
        return parts

    def text(self, text: str) -> list[Part]:
        """A whole text as parts (a response that was not streamed)."""
        return [*self.delta(TextDelta(text=text))] if text else []

    @staticmethod
    def outputs(outcomes: Iterable[ToolOutcome]) -> list[Part]:
        """The parts that carry tool results."""
        return [
            {
                "type": "tool-output-available",
                "tool_call_id": o.call.id,
                "output": o.output if not o.error else o.text,
            }
            for o in outcomes
        ]

    @staticmethod
    def approval_requests(calls: Iterable[ToolCall]) -> list[Part]:
        """The parts that say a call waits for approval (its id is the approval's id)."""
        return [
            {"type": "tool-approval-request", "approval_id": c.id, "tool_call_id": c.id}
            for c in calls
        ]

    @staticmethod
    def finish_step() -> list[Part]:
        """The part that closes a model call."""
        return [{"type": "finish-step"}]

    @staticmethod
    def error(text: str) -> list[Part]:
        """The part that reports a failure."""
        return [{"type": "error", "error_text": text}]


def compress(parts: Sequence[Part]) -> list[Part]:
    """Consecutive text deltas of one text part merged into one (fewer, larger parts)."""
    merged: list[Part] = []
    for part in parts:
        last = merged[-1] if merged else None
        if (
            last is not None
            and part["type"] == "text-delta"
            and last["type"] == "text-delta"
            and last["id"] == part["id"]
        ):
            merged[-1] = {**last, "delta": last["delta"] + part["delta"]}
        else:
            merged.append(part)
    return merged


def parts_text(parts: Iterable[Part]) -> str:
    """The text the parts spell (text deltas joined): what a follower shows."""
    return "".join(p["delta"] for p in parts if p.get("type") == "text-delta")


def last_step_text(parts: Sequence[Part]) -> str:
    """The text of the last step only (the partial reply when a stream breaks off)."""
    start = 0
    for index, part in enumerate(parts):
        if part.get("type") == "start-step":
            start = index
    return parts_text(parts[start:])
