"""The chatbot's offline model: an honest, retrieval-only responder (no language model).

It implements the same ``ChatModel`` protocol as ``OpenAIChatModel``, so the agent runs its
usual loop: asked a question, it calls the ``search_docs`` tool with the question; given the
tool's result, it answers with the passages found, and says plainly that no language model
wrote the answer. Its text streams in small pieces (``delay`` seconds apart) like a model's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from components.models import (
    FinalResponse,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    count_tokens,
)

INTRO = (
    "I am running without a language model (set OPENAI_API_KEY to use one), so I cannot "
    "write an answer. These are the passages of the documentation most relevant to your "
    "question:\n\n"
)
NOTHING = (
    "I am running without a language model (set OPENAI_API_KEY to use one), and the "
    "documentation search found nothing relevant to your question."
)


@dataclass
class RetrievalResponder:
    """Search the docs with the question, then answer with what was found, quoted."""

    tool: str = "search_docs"
    chunk_size: int = 16
    delay: float = 0.02
    model: str = "retrieval-only"

    def respond(self, req: ModelRequest) -> ModelResponse:
        last = req.messages[-1]
        prompt_tokens = sum(count_tokens(m.text) for m in req.messages)
        if last.role == "user":
            call = ToolCall(name=self.tool, arguments={"query": last.text})
            usage = Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens)
            return ModelResponse(
                tool_calls=(call,), finish_reason="tool_calls", usage=usage, model=self.model
            )
        found = last.text.strip() if last.role == "tool" else ""
        text = INTRO + quote(found) if found else NOTHING
        completion = count_tokens(text)
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=prompt_tokens + completion,
        )
        return ModelResponse(text=text, usage=usage, model=self.model)

    async def request(self, req: ModelRequest) -> ModelResponse:
        return self.respond(req)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamEvent]:
        response = self.respond(req)
        for index, call in enumerate(response.tool_calls):
            yield ToolCallDelta(index=index, id=call.id, name=call.name)
            yield ToolCallDelta(index=index, arguments=json.dumps(call.arguments))
        text = response.text
        for start in range(0, len(text), self.chunk_size):
            if start:
                await anyio.sleep(self.delay)
            yield TextDelta(text=text[start : start + self.chunk_size])
        yield FinalResponse(response=response)


def quote(found: str) -> str:
    """The search result as readable passages: one per section, hard-wrapped lines joined."""
    passages: list[str] = []
    section = ""
    paragraphs: list[str] = []
    lines: list[str] = []

    def flush_paragraph() -> None:
        if lines:
            paragraphs.append(" ".join(lines))
            lines.clear()

    def flush_section() -> None:
        flush_paragraph()
        if paragraphs:
            head = f"From “{section}”:\n" if section else ""
            passages.append(head + "\n".join(f"  {p}" for p in paragraphs))
            paragraphs.clear()

    for line in found.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            flush_section()
            section = stripped.lstrip("# ").rstrip(":")
        elif stripped in ("", "...", "---"):
            flush_paragraph()
        else:
            lines.append(stripped)
    flush_section()
    return "\n\n".join(passages) + "\n"
