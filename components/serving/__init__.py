"""Serving agents to real clients: ``expose(agent)`` and the wire formats it speaks.

Not a component (no tables)::

    from components.serving import expose

    expose(helper)  # capsule serve now serves /agents/helper/... and /v1/chat/completions

``agents`` registers an exposed agent's server-side functions, ``endpoints`` serves
``/agents/<name>/...``, ``openai_routes`` serves ``/v1``; ``ui_stream`` encodes the Vercel AI
SDK UI message stream (``useChat``), ``openai_wire`` the OpenAI chat completions shapes,
``sse`` the event framing.
"""

from __future__ import annotations

from components.serving.agents import ExposedAgent, expose
from components.serving.errors import (
    AgentNotFoundError,
    ChatRequestError,
    ServingError,
    ThreadNotFoundError,
)
from components.serving.openai_wire import (
    ChatMessage,
    ChatRequest,
    ChunkStream,
    chat_completion,
    models_list,
    parse_chat_request,
)
from components.serving.ui_stream import UI_MESSAGE_STREAM_HEADERS, UIMessageStream, ui_chunk

__all__ = [
    "AgentNotFoundError",
    "ChatMessage",
    "ChatRequest",
    "ChatRequestError",
    "ChunkStream",
    "ExposedAgent",
    "ServingError",
    "ThreadNotFoundError",
    "UIMessageStream",
    "UI_MESSAGE_STREAM_HEADERS",
    "chat_completion",
    "expose",
    "models_list",
    "parse_chat_request",
    "ui_chunk",
]
