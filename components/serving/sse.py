r"""Owns Server-Sent Events framing for the agent endpoints: events with ids, comments, ``[DONE]``.

One event is ``id: <id>\\nevent: <name>\\ndata: <line>\\n...\\n\\n``; a payload holding newlines
is split over several ``data:`` lines, as the SSE spec asks, so a client never sees a raw newline
inside one line. Ids are opaque cursors: a client that reconnects sends the last one it saw as
``Last-Event-ID`` and the server resumes right after it.
"""

from __future__ import annotations

import json
from typing import Any

DONE = "data: [DONE]\n\n"
"""The terminator both the Vercel AI SDK and the OpenAI clients expect at the end of a stream."""

STREAM_HEADERS = {
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-accel-buffering": "no",
}
"""Headers every event stream carries (no caching, no proxy buffering)."""


def frame(data: str, *, id: str | None = None, event: str | None = None) -> str:
    """One SSE event carrying ``data`` (split into one ``data:`` line per line of text)."""
    lines: list[str] = []
    if id is not None:
        if "\n" in id or "\r" in id:
            raise ValueError(f"An SSE event id may not hold a newline: {id!r}.")
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


def json_frame(value: Any, *, id: str | None = None, event: str | None = None) -> str:
    """One SSE event whose data is ``value`` as compact JSON (always a single line)."""
    return frame(dumps(value), id=id, event=event)


def comment(text: str = "keep-alive") -> str:
    """A comment line: clients ignore it, proxies see traffic (keep-alive)."""
    return f": {text}\n\n"


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 kept as is (JSON escapes newlines, so the result is one line)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
