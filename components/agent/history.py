"""Owns context assembly: which stored messages a model call reads, never an orphan among them.

The context of a generation is the agent's instructions, then search hits (when enabled)
that are not already recent, then the recent messages up to and including the prompt's turn
(so a re-run continues from the responses already saved). A tool call whose result is
missing, or a result whose call is missing, is dropped: providers refuse both, and one such
pair would break the thread for good (reference A4, agent#228).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from components.agent.messages import to_model_messages
from components.models import ModelMessage

Doc = Mapping[str, Any]


def drop_orphans(docs: Sequence[Doc]) -> list[Doc]:
    """The messages with every unmatched tool call and tool result removed.

    An assistant message keeps only the calls that have a result; it is dropped when nothing
    (no text, no call) is left. A tool message is kept only if its call is kept.
    """
    results = {doc.get("tool_call_id") for doc in docs if doc["role"] == "tool"}
    kept_calls: set[str] = set()
    kept: list[Doc] = []
    for doc in docs:
        if doc["role"] == "assistant" and doc.get("tool_calls"):
            calls = [call for call in doc["tool_calls"] if call["id"] in results]
            kept_calls.update(call["id"] for call in calls)
            if len(calls) != len(doc["tool_calls"]):
                if not calls and not doc.get("text"):
                    continue
                doc = {**doc, "tool_calls": calls}
            kept.append(doc)
        elif doc["role"] == "tool":
            if doc.get("tool_call_id") in kept_calls:
                kept.append(doc)
        else:
            kept.append(doc)
    return kept


def sort_key(doc: Doc) -> tuple[int, int]:
    """Thread order: ``(order, step_order)``."""
    return (int(doc["order"]), int(doc["step_order"]))


def assemble(
    *,
    instructions: str | None,
    recent: Sequence[Doc],
    search: Sequence[Doc] = (),
) -> list[ModelMessage]:
    """The messages a model call reads: instructions, search hits, then recent history."""
    recent_ids = {doc["_id"] for doc in recent}
    hits = sorted((doc for doc in search if doc["_id"] not in recent_ids), key=sort_key)
    messages = [ModelMessage.system(instructions)] if instructions else []
    # Search hits keep their text only: a tool call without its result would be an orphan.
    messages += [
        ModelMessage(role=doc["role"], text=doc["text"])
        for doc in hits
        if doc["role"] in ("user", "assistant") and doc.get("text")
    ]
    messages += to_model_messages(drop_orphans(sorted(recent, key=sort_key)))
    return messages
