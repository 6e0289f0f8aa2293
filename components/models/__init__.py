"""Model plumbing shared by the agent and rag components (not a component: no tables).

Chat models (``ChatModel``: ``OpenAIChatModel``, ``ScriptedChatModel``), embedders
(``Embedder``: ``OpenAIEmbedder``, ``LocalEmbedder``, ``HashingEmbedder``), the records they
exchange, and token counting. Nothing here touches the network at import, and ``openai``,
``sentence_transformers`` and ``torch`` are imported only when used::

    from components.models import ModelMessage, ModelRequest, ScriptedChatModel

    model = ScriptedChatModel(["Hello!"])
    response = await model.request(ModelRequest(messages=[ModelMessage.user("Hi")]))

The OpenAI-compatible test server is ``components.models.testing.OpenAITestServer``.
"""

from __future__ import annotations

from components.models.base import (
    ChatModel,
    Embedder,
    FinalResponse,
    FinishReason,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    OutputSchema,
    Role,
    StreamAccumulator,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    new_tool_call_id,
    open_stream,
)
from components.models.errors import (
    EmbeddingError,
    ModelAPIError,
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelRateLimitError,
    ModelResponseError,
    ScriptExhaustedError,
    ScriptNotConsumedError,
)
from components.models.local import HashingEmbedder, LocalEmbedder, local_embeddings_available
from components.models.openai import OpenAIChatModel
from components.models.openai_embeddings import OpenAIEmbedder
from components.models.retries import Backoff
from components.models.scripted import ScriptedChatModel, StreamFailure, Turn
from components.models.tokens import (
    count_tokens,
    encoding_for,
    estimate_usage,
    split_by_tokens,
    truncate_to_tokens,
)

__all__ = [
    "Backoff",
    "ChatModel",
    "Embedder",
    "EmbeddingError",
    "FinalResponse",
    "FinishReason",
    "HashingEmbedder",
    "LocalEmbedder",
    "ModelAPIError",
    "ModelConfigError",
    "ModelConnectionError",
    "ModelError",
    "ModelMessage",
    "ModelRateLimitError",
    "ModelRequest",
    "ModelResponse",
    "ModelResponseError",
    "OpenAIChatModel",
    "OpenAIEmbedder",
    "OutputSchema",
    "Role",
    "ScriptExhaustedError",
    "ScriptNotConsumedError",
    "ScriptedChatModel",
    "StreamAccumulator",
    "StreamEvent",
    "StreamFailure",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Turn",
    "Usage",
    "count_tokens",
    "encoding_for",
    "estimate_usage",
    "local_embeddings_available",
    "new_tool_call_id",
    "open_stream",
    "split_by_tokens",
    "truncate_to_tokens",
]
