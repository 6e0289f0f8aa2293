"""A Capsule app with one exposed agent, for the serving tests (and ``capsule serve``).

The agent's model is ``GuideModel``: asked a question, it first calls the server-side
``lookup`` tool, then answers with text streamed in small pieces. With a ``gate`` it stops
after ``pause_after`` text pieces until the gate opens, so tests can act mid-reply without
timing anything.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from components.agent import Agent, tool
from components.agent import component as agent_component
from components.models import (
    FinalResponse,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    ToolCall,
    Usage,
)
from components.models.scripted import response_events
from core import ActionCtx, App

ANSWER = "The answer about {topic} is forty-two, as the lookup said. " * 3
"""The reply's text (about 180 characters, streamed 6 at a time)."""


@tool
async def lookup(ctx: ActionCtx, topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


@dataclass
class GuideModel:
    """Tool call first, then the streamed answer; optionally paused mid-answer."""

    gate: threading.Event | None = None
    pause_after: int = 3
    paused: threading.Event = field(default_factory=threading.Event)
    """Set when the stream has reached the pause."""
    calls: int = 0

    def respond(self, req: ModelRequest) -> ModelResponse:
        self.calls += 1
        last = req.messages[-1]
        usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
        if last.role == "user":
            call = ToolCall(name="lookup", arguments={"topic": last.text[:40]})
            return ModelResponse(tool_calls=(call,), finish_reason="tool_calls", usage=usage)
        topic = next(m.text for m in reversed(req.messages) if m.role == "user")[:40]
        return ModelResponse(text=ANSWER.format(topic=topic), usage=usage, model="guide")

    async def request(self, req: ModelRequest) -> ModelResponse:
        return self.respond(req)

    async def stream(self, req: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        response = self.respond(req)
        pieces = 0
        for event in response_events(response, chunk_size=6):
            if not isinstance(event, FinalResponse) and response.text:
                pieces += 1
                if self.gate is not None and pieces == self.pause_after + 1:
                    self.paused.set()
                    await anyio.to_thread.run_sync(self.gate.wait)
            await anyio.lowlevel.checkpoint()
            yield event


@dataclass
class ChatApp:
    app: App
    agent: Agent
    model: GuideModel


def build(
    gate: threading.Event | None = None, *, throttle: float = 0.0, storage: Any = None
) -> ChatApp:
    app = App(storage=storage)
    model = GuideModel(gate=gate)
    agent = Agent(
        app.use(agent_component, name="agent"),
        name="guide",
        model=model,
        instructions="Answer from the lookup tool.",
        tools=[lookup],
        stream_throttle=throttle,
    )
    agent.expose()
    return ChatApp(app=app, agent=agent, model=model)


app: Any = build().app
"""What ``capsule serve tests.components.serving.chat_app:app`` serves."""
