"""Owns how a generation's context is fetched: recent messages plus optional search hits.

``ContextOptions`` says how much history a model call reads; ``fetch_context`` reads it
through the component (recent successful messages up to the prompt's turn, then search hits
over the thread or all the user's threads) and ``history.assemble`` orders it, never with an
orphan tool call or result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from components.agent.history import assemble
from components.models import ModelMessage

SearchMode = Literal["text", "vector", "hybrid"]
"""How messages are searched: BM25 over their text, vectors, or both fused."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextOptions:
    """How much history a model call reads."""

    recent_messages: int = 100
    """The latest successful messages up to the prompt's turn (0: none)."""
    search_limit: int = 0
    """Search hits added before the recent messages (0: no search)."""
    search_mode: SearchMode = "text"
    """How to search (vector and hybrid need the agent's embedder)."""
    search_other_threads: bool = False
    """Search all the user's threads, not only this one."""


async def fetch_context(
    *,
    recent: Sequence[dict[str, Any]],
    search: Callable[..., Awaitable[list[dict[str, Any]]]] | None,
    thread_id: str,
    user_id: str | None,
    upto_order: int,
    prompt_text: str | None,
    instructions: str | None,
    options: ContextOptions,
) -> list[ModelMessage]:
    """The messages the first model call of a generation reads (``recent`` read already)."""
    hits: list[dict[str, Any]] = []
    if options.search_limit > 0 and search is not None and prompt_text:
        hits = await search(
            query=prompt_text,
            thread_id=None if options.search_other_threads else thread_id,
            user_id=user_id if options.search_other_threads else None,
            limit=options.search_limit,
            mode=options.search_mode,
            before_order=upto_order,
            target_thread_id=thread_id,
        )
    return assemble(instructions=instructions, recent=recent, search=hits)
