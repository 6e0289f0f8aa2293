"""Owns the stored shape of messages and its conversion to and from model messages.

A message document holds ``thread_id, user_id, order, step_order, role, status, text,
tool_calls, tool_call_id, tool_name, error, usage, model, agent_name, finish_reason``. This
module is the one place that knows how a document becomes a ``ModelMessage`` and how a model
response or a tool's outcome becomes the fields of a document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from components.agent.tools import ToolOutcome
from components.models import ModelMessage, ModelResponse, ToolCall, Usage

MessageStatus = Literal["pending", "success", "failed"]
"""A message's status: being generated, done, or failed (its text kept)."""

ROLES = ("system", "user", "assistant", "tool")


def usage_to_dict(usage: Usage) -> dict[str, int]:
    """Usage as stored."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def usage_from_dict(raw: Mapping[str, Any] | None) -> Usage:
    """Stored usage back as a record (zeros when missing)."""
    if not raw:
        return Usage()
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens", 0)),
        completion_tokens=int(raw.get("completion_tokens", 0)),
        total_tokens=int(raw.get("total_tokens", 0)),
    )


def call_to_dict(call: ToolCall, *, needs_approval: bool = False) -> dict[str, Any]:
    """A tool call as stored in ``tool_calls``."""
    stored: dict[str, Any] = {"id": call.id, "name": call.name, "arguments": call.arguments}
    if call.invalid_arguments is not None:
        stored["invalid_arguments"] = call.invalid_arguments
    if needs_approval:
        stored["needs_approval"] = True
    return stored


def call_from_dict(raw: Mapping[str, Any]) -> ToolCall:
    """A stored tool call back as a record."""
    return ToolCall(
        id=str(raw["id"]),
        name=str(raw["name"]),
        arguments=dict(raw.get("arguments") or {}),
        invalid_arguments=raw.get("invalid_arguments"),
    )


def response_fields(
    response: ModelResponse, *, agent_name: str | None, approvals: Sequence[str] = ()
) -> dict[str, Any]:
    """The fields of the assistant message that stores a model response."""
    return {
        "role": "assistant",
        "text": response.text,
        "tool_calls": [
            call_to_dict(call, needs_approval=call.id in approvals) for call in response.tool_calls
        ],
        "usage": usage_to_dict(response.usage),
        "model": response.model or None,
        "finish_reason": response.finish_reason,
        "agent_name": agent_name,
    }


def outcome_fields(outcome: ToolOutcome, *, agent_name: str | None) -> dict[str, Any]:
    """The fields of the tool message that stores one tool call's outcome."""
    return {
        "role": "tool",
        "text": outcome.text,
        "tool_call_id": outcome.call.id,
        "tool_name": outcome.call.name,
        "output": outcome.output,
        "error": outcome.text if outcome.error else None,
        "agent_name": agent_name,
    }


def to_model_message(doc: Mapping[str, Any]) -> ModelMessage | None:
    """A stored message as the model reads it; ``None`` when it has nothing to say."""
    role = doc["role"]
    text = doc.get("text") or ""
    if role == "tool":
        if not doc.get("tool_call_id"):
            return None
        return ModelMessage.tool(
            tool_call_id=doc["tool_call_id"], tool_name=doc.get("tool_name") or "", text=text
        )
    if role == "assistant":
        calls = tuple(call_from_dict(c) for c in doc.get("tool_calls") or ())
        if not text and not calls:
            return None
        return ModelMessage.assistant(text, tool_calls=calls)
    if not text:
        return None
    return ModelMessage(role=role, text=text)


def to_model_messages(docs: Sequence[Mapping[str, Any]]) -> list[ModelMessage]:
    """Stored messages as the model reads them, empty ones dropped."""
    found = (to_model_message(doc) for doc in docs)
    return [message for message in found if message is not None]
