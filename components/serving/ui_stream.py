"""Owns the Vercel AI SDK UI message stream encoding (``useChat``, AI SDK 5 and later).

The agent persists stream parts shaped like the SDK's UI message chunks with snake_case keys
(``{"type": "text-delta", "id": "t1", "delta": "Hi"}``); this module renames their keys to the
SDK's camelCase (``toolCallId``, ``inputTextDelta``, ``errorText``), and wraps a reply in
``start`` … ``finish`` and the closing ``data: [DONE]``. Every event is ``data: <JSON>`` with
no ``event:`` line, as the SDK's parser expects; an ``id:`` line carries our resume cursor
(the SDK ignores it). Custom backends must send the ``x-vercel-ai-ui-message-stream: v1``
header, which ``UI_MESSAGE_STREAM_HEADERS`` holds. Only fields every SDK major version from 5
to 7 accepts are sent (older 5.x releases refused unknown fields), so the AI SDK 5 and 7
clients both read these streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from components.serving.sse import DONE, STREAM_HEADERS, json_frame

UI_MESSAGE_STREAM_HEADERS = {
    "content-type": "text/event-stream",
    **STREAM_HEADERS,
    "x-vercel-ai-ui-message-stream": "v1",
}
"""The response headers of a UI message stream (the SDK's ``UI_MESSAGE_STREAM_HEADERS``)."""

PART_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("message_id", "message_metadata"),
    "finish": ("finish_reason", "message_metadata"),
    "abort": (),
    "error": ("error_text",),
    "start-step": (),
    "finish-step": (),
    "text-start": ("id",),
    "text-delta": ("id", "delta"),
    "text-end": ("id",),
    "reasoning-start": ("id",),
    "reasoning-delta": ("id", "delta"),
    "reasoning-end": ("id",),
    "tool-input-start": ("tool_call_id", "tool_name"),
    "tool-input-delta": ("tool_call_id", "input_text_delta"),
    "tool-input-available": ("tool_call_id", "tool_name", "input"),
    "tool-input-error": ("tool_call_id", "tool_name", "input", "error_text"),
    "tool-output-available": ("tool_call_id", "output"),
    "tool-output-error": ("tool_call_id", "error_text"),
    "message-metadata": ("message_metadata",),
}
"""Each part type the encoder sends and its fields (snake_case); other fields are dropped,
since older SDK clients refuse any field they do not know."""

FINISH_REASONS = frozenset({"stop", "length", "content-filter", "tool-calls", "error", "other"})
"""The ``finishReason`` values the SDK accepts."""


def camel(name: str) -> str:
    """``tool_call_id`` → ``toolCallId``."""
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def ui_chunk(part: Mapping[str, Any]) -> dict[str, Any] | None:
    """One persisted part as the SDK's chunk (camelCase keys), or ``None`` for unknown types.

    Only the top-level keys are renamed: a tool's ``input`` and ``output`` are the app's own
    values and travel unchanged.
    """
    kind = part.get("type")
    fields = PART_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        return None
    chunk: dict[str, Any] = {"type": kind}
    for field in fields:
        if field in part and part[field] is not None:
            chunk[camel(field)] = part[field]
    return chunk


def finish_reason(reason: str | None) -> str:
    """An agent's finish reason as one the SDK accepts (``tool_calls`` → ``tool-calls``)."""
    if reason is None:
        return "stop"
    normalized = reason.replace("_", "-")
    return normalized if normalized in FINISH_REASONS else "other"


class UIMessageStream:
    """Encodes one assistant reply as UI message stream events.

    ``start()`` once, ``parts(...)`` as deltas arrive (each event tagged with the resume
    cursor), then ``finish(reason)``, which also closes any text or reasoning block the
    parts left open (a stopped reply) so the SDK's ordering checks pass.
    """

    def __init__(self, *, message_id: str | None = None):
        self.message_id = message_id
        self._open: dict[str, str] = {}
        """Open text and reasoning blocks: id → the type of their end part."""
        self._in_step = False
        self.started = False

    def start(self, *, id: str | None = None) -> str:
        """The ``start`` event (once per reply)."""
        self.started = True
        part: dict[str, Any] = {"type": "start"}
        if self.message_id is not None:
            part["messageId"] = self.message_id
        return json_frame(part, id=id)

    def parts(self, parts: Iterable[Mapping[str, Any]], *, id: str | None = None) -> Iterator[str]:
        """Events for persisted parts; the last one carries ``id`` (the cursor after them)."""
        chunks = [chunk for part in parts if (chunk := self._track(part)) is not None]
        for n, chunk in enumerate(chunks):
            yield json_frame(chunk, id=id if n == len(chunks) - 1 else None)

    def _track(self, part: Mapping[str, Any]) -> dict[str, Any] | None:
        chunk = ui_chunk(part)
        if chunk is None:
            return None
        kind = chunk["type"]
        if kind in ("text-start", "reasoning-start"):
            self._open[chunk["id"]] = kind.replace("-start", "-end")
        elif kind in ("text-end", "reasoning-end"):
            self._open.pop(chunk["id"], None)
        elif kind == "start-step":
            self._in_step = True
        elif kind == "finish-step":
            self._in_step = False
        return chunk

    def finish(
        self, reason: str | None = "stop", *, error: str | None = None, aborted: bool = False
    ) -> Iterator[str]:
        """Close open blocks and the step, then ``error`` or ``abort`` (if any), ``finish``.

        A stopped reply (``aborted``) ends with an ``abort`` chunk, so the SDK marks the
        message aborted rather than failed. ``[DONE]`` comes last.
        """
        for block_id, end in list(self._open.items()):
            yield json_frame({"type": end, "id": block_id})
        self._open.clear()
        if self._in_step:
            yield json_frame({"type": "finish-step"})
            self._in_step = False
        if error is not None:
            yield json_frame({"type": "error", "errorText": error})
        if aborted:
            yield json_frame({"type": "abort"})
        yield json_frame({"type": "finish", "finishReason": finish_reason(reason)})
        yield DONE
