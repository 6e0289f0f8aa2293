"""Pure parts of exposing an agent: turn outcomes, message views, request bodies."""

from __future__ import annotations

from typing import Any

import pytest

from components.serving.agents import expose, message_view, turn_outcome
from components.serving.endpoints import prompt_of, ui_message_text
from components.serving.errors import AgentNotFoundError, ChatRequestError
from core import App, UserError


def msg(order: int, step: int, role: str, status: str, text: str = "", **kw: Any) -> dict[str, Any]:
    return {
        "_id": f"m{order}.{step}",
        "order": order,
        "step_order": step,
        "role": role,
        "status": status,
        "text": text,
        **kw,
    }


def test_a_turn_is_over_once_no_reply_is_pending() -> None:
    assert turn_outcome([msg(0, 0, "user", "success", "hi")])["done"] is False
    pending = [msg(0, 0, "user", "success"), msg(0, 1, "assistant", "pending")]
    assert turn_outcome(pending) == {
        "done": False,
        "status": "pending",
        "text": "",
        "error": None,
        "finish_reason": None,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "message_id": "m0.1",
    }
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    finished = [
        msg(0, 3, "assistant", "success", "Done.", usage=usage, finish_reason="stop"),
        msg(0, 0, "user", "success", "hi"),
        msg(0, 1, "assistant", "success", "", usage=usage, finish_reason="tool_calls"),
        msg(0, 2, "tool", "success", "result"),
    ]
    outcome = turn_outcome(finished)
    assert (outcome["done"], outcome["status"], outcome["text"]) == (True, "success", "Done.")
    assert outcome["usage"]["total_tokens"] == 10
    assert outcome["finish_reason"] == "stop"


def test_a_failed_turn_reports_its_error_and_partial_text() -> None:
    failed = [
        msg(1, 0, "user", "success"),
        msg(1, 1, "assistant", "failed", "Half", error="aborted by a client"),
    ]
    outcome = turn_outcome(failed)
    assert (outcome["status"], outcome["text"], outcome["error"]) == (
        "failed",
        "Half",
        "aborted by a client",
    )


def test_message_view_keeps_what_clients_need() -> None:
    view = message_view(msg(0, 1, "assistant", "success", "x", tool_calls=None))
    assert view["id"] == "m0.1" and view["tool_calls"] == [] and view["error"] is None


def test_prompt_of_reads_text_and_use_chat_bodies() -> None:
    assert prompt_of({"text": "hi"}) == "hi"
    ui = {
        "role": "user",
        "parts": [{"type": "text", "text": "a"}, {"type": "file"}, {"type": "text", "text": "b"}],
    }
    assert prompt_of({"id": "t", "messages": [{"role": "user"}, ui]}) == "ab"
    assert prompt_of({"message": ui}) == "ab"
    assert ui_message_text({"content": "legacy"}) == "legacy"
    assert ui_message_text("nope") == ""
    bad: Any
    for bad in ({"text": " "}, {}, [], {"messages": []}):
        with pytest.raises(ChatRequestError):
            prompt_of(bad)


class Named:
    def __init__(self, name: Any, handle: Any = None) -> None:
        self.name = name
        self.handle = handle


def test_expose_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(UserError, match="named agent"):
        expose(Named(""))
    with pytest.raises(UserError, match="Unknown protocol"):
        expose(Named("a"), protocols=["grpc"])
    with pytest.raises(UserError, match="not mounted"):
        expose(Named("a", handle=object()))
    with pytest.raises(UserError, match="must start with"):
        expose(Named("a", handle=object()), app=App(), prefix="agents")


def test_agent_not_found_names_the_exposed_agents() -> None:
    error = AgentNotFoundError("x", exposed=["a", "b"])
    assert str(error) == 'No exposed agent is named "x"; exposed agents: "a", "b".'
    assert AgentNotFoundError("x", exposed=[]).http_status == 404
