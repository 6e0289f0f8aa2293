"""The token-aware chunker: sizes, boundaries, Markdown, CJK, long runs, errors, properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.rag.chunking import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_MIN_TOKENS,
    DEFAULT_TARGET_TOKENS,
    Chunker,
    TokenChunker,
    check_chunks,
    cl100k_tokens,
    default_chunker,
)
from components.rag.errors import ChunkTooLargeError, EmptyTextError, RAGConfigError


def words(text: str) -> int:
    """A readable token counter for tests: one token per whitespace-separated word."""
    return len(text.split())


def squash(text: str) -> str:
    return "".join(text.split())


def assert_faithful(chunker: TokenChunker, text: str) -> list[str]:
    """The invariants every chunking keeps; returns the chunks."""
    chunks = chunker(text)
    spans = chunker.spans(text)
    assert chunks == [text[start:end] for start, end in spans]
    assert chunks, "no chunks"
    previous_end = 0
    for (start, end), chunk in zip(spans, chunks, strict=True):
        assert chunk.strip() == chunk and chunk, f"empty or unstripped chunk {chunk!r}"
        assert start >= previous_end
        assert not text[previous_end:start].strip(), "text lost between chunks"
        assert chunker.count_tokens(chunk) <= chunker.max_tokens
        previous_end = end
    assert not text[previous_end:].strip()
    assert squash("".join(chunks)) == squash(text)
    return chunks


def sentence(i: int, n: int = 9) -> str:
    return " ".join(["Sentence", str(i), *["word"] * (n - 3), "end."])


# --- basics and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\n\t \n"])
def test_empty_or_whitespace_text_is_a_clear_error(text: str) -> None:
    with pytest.raises(EmptyTextError, match='"text" is empty or only whitespace') as caught:
        default_chunker(text)
    assert caught.value.code == "empty_text"
    assert caught.value.http_status == 400
    assert caught.value.argument == "text"


def test_short_text_is_one_chunk_equal_to_the_input() -> None:
    text = "First line.\nSecond line.\nThird line."
    assert default_chunker(text) == [text]
    assert default_chunker(f"\n  {text}  \n\n") == [text]


def test_small_paragraphs_share_one_chunk() -> None:
    text = "Short para 1.\n\nShort para 2.\n\nShort para 3.\n\nShort para 4."
    assert TokenChunker(target_tokens=50, max_tokens=200, min_tokens=10)(text) == [text]


def test_defaults_are_the_documented_ones() -> None:
    chunker = TokenChunker()
    assert (chunker.target_tokens, chunker.max_tokens, chunker.min_tokens) == (200, 512, 50)
    assert (DEFAULT_TARGET_TOKENS, DEFAULT_MAX_TOKENS, DEFAULT_MIN_TOKENS) == (200, 512, 50)
    assert chunker.count_tokens is cl100k_tokens
    assert default_chunker == chunker


def test_default_counter_is_cl100k_offline() -> None:
    assert cl100k_tokens("hello world") == 2
    # Special-token text is plain text, not an error.
    assert cl100k_tokens("<|endoftext|>") > 1


@pytest.mark.parametrize(
    ("min_tokens", "target_tokens", "max_tokens"),
    [(0, 0, 10), (20, 10, 30), (0, 40, 30), (0, 4, 4), (-1, 10, 20), (0, True, 20), (0, 1.5, 20)],
)
def test_bad_sizes_are_a_config_error(min_tokens: int, target_tokens: int, max_tokens: int) -> None:
    with pytest.raises(RAGConfigError, match="TokenChunker") as caught:
        TokenChunker(min_tokens=min_tokens, target_tokens=target_tokens, max_tokens=max_tokens)
    assert caught.value.code == "rag_config"


def test_a_plain_function_is_a_chunker() -> None:
    def by_line(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    chunker: Chunker = by_line
    assert chunker("a\nb") == ["a", "b"]
    chunker = default_chunker
    assert chunker("a") == ["a"]


def test_chunking_is_deterministic() -> None:
    text = "\n\n".join(" ".join(sentence(i) for i in range(j, j + 7)) for j in range(0, 70, 7))
    chunker = TokenChunker(target_tokens=30, max_tokens=60, min_tokens=10, count_tokens=words)
    assert chunker(text) == chunker(text)


# --- boundaries --------------------------------------------------------------------------------


def test_long_paragraph_splits_at_sentences_and_packs_to_target() -> None:
    text = " ".join(sentence(i) for i in range(40))  # 360 words, one paragraph
    chunker = TokenChunker(target_tokens=50, max_tokens=100, min_tokens=10, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert len(chunks) == 8  # five 9-word sentences (45 words) per chunk
    assert all(chunk.startswith("Sentence") and chunk.endswith("end.") for chunk in chunks)
    assert all(words(chunk) <= 50 for chunk in chunks)


def test_paragraphs_are_preferred_boundaries() -> None:
    paragraphs = [" ".join(sentence(10 * p + i) for i in range(3)) for p in range(4)]
    text = "\n\n".join(paragraphs)  # 27 words each
    chunker = TokenChunker(target_tokens=60, max_tokens=100, min_tokens=10, count_tokens=words)
    assert assert_faithful(chunker, text) == [
        f"{paragraphs[0]}\n\n{paragraphs[1]}",
        f"{paragraphs[2]}\n\n{paragraphs[3]}",
    ]


def test_abbreviations_do_not_end_a_sentence() -> None:
    text = " ".join(["It uses e.g. this approach and approx. three more steps."] * 20)
    chunker = TokenChunker(target_tokens=25, max_tokens=40, min_tokens=5, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert all(chunk.startswith("It uses") and chunk.endswith("steps.") for chunk in chunks)


def test_text_without_punctuation_splits_between_words() -> None:
    text = " ".join(f"w{i}" for i in range(1000))
    chunker = TokenChunker(target_tokens=100, max_tokens=150, min_tokens=10, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert [words(chunk) for chunk in chunks] == [100] * 10
    assert " ".join(chunks) == text


def test_unpunctuated_lines_split_at_line_ends() -> None:
    lines = [" ".join(["line", str(i), "with", "no", "full", "stop"]) for i in range(30)]
    text = "\n".join(lines)
    chunker = TokenChunker(target_tokens=20, max_tokens=40, min_tokens=5, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert all(chunk.startswith("line") and chunk.endswith("stop") for chunk in chunks)


def test_tiny_fragments_merge_with_a_neighbour() -> None:
    body = " ".join(sentence(i) for i in range(4))  # 36 words
    text = f"{body}\n\nOk.\n\n{body}"
    chunker = TokenChunker(target_tokens=40, max_tokens=80, min_tokens=10, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert len(chunks) == 2
    assert "Ok." in chunks[0] or chunks[1].startswith("Ok.")
    # A small last chunk joins the one before it.
    tail = f"{body}\n\nThe end."
    assert assert_faithful(chunker, tail) == [tail]


def test_small_chunk_stays_alone_when_no_neighbour_fits() -> None:
    big = " ".join(["word"] * 79) + " end."  # 80 words: only max fits
    text = f"{big}\n\nOk.\n\n{big}"
    chunker = TokenChunker(target_tokens=40, max_tokens=80, min_tokens=10, count_tokens=words)
    assert assert_faithful(chunker, text) == [big, "Ok.", big]


# --- Markdown ----------------------------------------------------------------------------------


def test_a_heading_starts_a_new_chunk_and_stays_with_its_text() -> None:
    section_a = " ".join(sentence(i) for i in range(2))
    section_b = " ".join(sentence(i) for i in range(2, 4))
    text = f"# Alpha\n\n{section_a}\n\n## Beta\n\n{section_b}"
    chunker = TokenChunker(target_tokens=100, max_tokens=200, min_tokens=10, count_tokens=words)
    assert assert_faithful(chunker, text) == [
        f"# Alpha\n\n{section_a}",
        f"## Beta\n\n{section_b}",
    ]


def test_a_short_section_merges_into_the_next_one() -> None:
    text = "# Title\n\nIntro.\n\n## Part\n\n" + " ".join(sentence(i) for i in range(3))
    chunker = TokenChunker(target_tokens=100, max_tokens=200, min_tokens=10, count_tokens=words)
    assert assert_faithful(chunker, text) == [text]


def test_a_heading_is_never_the_end_of_a_chunk() -> None:
    text = "\n\n".join(
        f"## Section {i}\n\n" + " ".join(sentence(10 * i + j) for j in range(i % 4 + 1))
        for i in range(12)
    )
    chunker = TokenChunker(target_tokens=30, max_tokens=50, min_tokens=10, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert all(not chunk.splitlines()[-1].startswith("#") for chunk in chunks)
    # A heading inside a chunk only follows text too small to stand alone (under min_tokens).
    for chunk in chunks:
        for heading in re.finditer(r"^## ", chunk, re.MULTILINE):
            assert words(chunk[: heading.start()]) < 10


def test_a_fenced_code_block_is_kept_whole_up_to_max() -> None:
    code = "```python\n" + "\n\n".join(f"x{i} = {i}  # value {i}" for i in range(20)) + "\n```"
    intro = " ".join(sentence(i) for i in range(2))
    text = f"{intro}\n\n{code}\n\n{intro}"
    chunker = TokenChunker(target_tokens=20, max_tokens=150, min_tokens=5, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert chunks == [intro, code, intro]  # 100 words: over target, within max, blank lines
    assert sum(chunk.count("```") for chunk in chunks) == 2


def test_an_oversized_code_block_splits_at_lines() -> None:
    lines = [f"    call(argument_{i}, other_{i})  # note {i}" for i in range(60)]
    code = "```\n" + "\n".join(lines) + "\n```"
    chunker = TokenChunker(target_tokens=30, max_tokens=60, min_tokens=5, count_tokens=words)
    chunks = assert_faithful(chunker, code)
    assert len(chunks) > 1
    # Cut at line ends only (a chunk's first line loses its leading spaces, nothing else).
    rebuilt = "\n".join(chunks)
    assert [line.strip() for line in rebuilt.splitlines()] == [
        line.strip() for line in code.splitlines()
    ]


def test_an_unclosed_fence_runs_to_the_end() -> None:
    text = "Intro.\n\n```\ncode line one\n\ncode line two\n"
    chunker = TokenChunker(target_tokens=3, max_tokens=20, min_tokens=0, count_tokens=words)
    assert assert_faithful(chunker, text) == ["Intro.", "```\ncode line one\n\ncode line two"]


def test_an_oversized_list_splits_between_items() -> None:
    items = [f"- item {i}: " + " ".join(["detail"] * 8) + f"\n  continued {i}" for i in range(20)]
    text = "Things to know:\n" + "\n".join(items)
    chunker = TokenChunker(target_tokens=40, max_tokens=80, min_tokens=5, count_tokens=words)
    chunks = assert_faithful(chunker, text)
    assert len(chunks) > 1
    assert all(chunk.startswith(("- item", "Things")) for chunk in chunks)
    assert all(re.search(r"continued \d+$", chunk) for chunk in chunks)


def test_crlf_text_keeps_its_line_endings() -> None:
    text = "# Title\r\n\r\nFirst paragraph.\r\n\r\nSecond paragraph."
    assert default_chunker(text) == [text]


# --- CJK and long runs -------------------------------------------------------------------------


def test_cjk_sentences_split_at_full_stops() -> None:
    text = "这是一个句子。" * 300
    chunker = TokenChunker(target_tokens=50, max_tokens=100, min_tokens=10)
    chunks = assert_faithful(chunker, text)
    assert len(chunks) > 1
    assert all(chunk.endswith("。") for chunk in chunks)
    assert "".join(chunks) == text


def test_cjk_without_punctuation_is_cut_by_tokens() -> None:
    text = "这是一个没有标点符号的很长的中文句子" * 200
    chunker = TokenChunker(target_tokens=50, max_tokens=100, min_tokens=10)
    chunks = assert_faithful(chunker, text)
    assert len(chunks) > 10
    assert "".join(chunks) == text
    assert all(cl100k_tokens(chunk) <= 100 for chunk in chunks)


def test_a_very_long_url_is_cut_and_nothing_is_lost() -> None:
    url = "https://example.com/" + "a1b2c3d4" * 2000
    text = f"See {url} for details."
    chunks = assert_faithful(default_chunker, text)
    assert len(chunks) > 10
    assert all(cl100k_tokens(chunk) <= DEFAULT_MAX_TOKENS for chunk in chunks)
    assert url.startswith(chunks[0].removeprefix("See "))
    assert squash("".join(chunks)) == squash(text)


def test_combining_marks_stay_with_their_letter() -> None:
    text = "e\u0301" * 3000  # é as e + combining acute, no spaces
    for count in (cl100k_tokens, len):  # len: a cut at 5 characters lands on a mark
        chunker = TokenChunker(target_tokens=5, max_tokens=40, min_tokens=0, count_tokens=count)
        chunks = assert_faithful(chunker, text)
        assert all(chunk[0] == "e" and chunk[-1] == "\u0301" for chunk in chunks)


def test_a_big_document_chunks_quickly_within_limits() -> None:
    text = ("word " * 20000) + "\n\n" + ("Sentence here. " * 5000)
    chunks = assert_faithful(default_chunker, text)
    assert all(cl100k_tokens(chunk) <= DEFAULT_MAX_TOKENS for chunk in chunks)
    assert max(cl100k_tokens(chunk) for chunk in chunks) <= DEFAULT_TARGET_TOKENS + 50


# --- check_chunks ------------------------------------------------------------------------------


def test_check_chunks_accepts_good_chunks() -> None:
    assert check_chunks(("one", "two three")) == ["one", "two three"]


@pytest.mark.parametrize(
    ("chunks", "argument"),
    [([], "chunks"), ("text", "chunks"), (["ok", "  "], "chunks[1]"), (["ok", 3], "chunks[1]")],
)
def test_check_chunks_refuses_empty_chunks(chunks: object, argument: str) -> None:
    with pytest.raises(EmptyTextError) as caught:
        check_chunks(chunks)  # type: ignore[arg-type]
    assert caught.value.argument == argument


def test_check_chunks_refuses_an_oversized_chunk() -> None:
    with pytest.raises(
        ChunkTooLargeError, match=r"Chunk 1 of \"chunks\" is 5 tokens; the limit is 4"
    ) as caught:
        check_chunks(["a b", "a b c d e"], max_tokens=4, count_tokens=words)
    error = caught.value
    assert (error.index, error.tokens, error.maximum, error.code) == (1, 5, 4, "chunk_too_large")
    assert error.http_status == 400


# --- properties --------------------------------------------------------------------------------

PIECES = [
    "word",
    "Word",
    "longerword",
    "x",
    "42",
    "3.14",
    ".",
    "!",
    "?",
    ",",
    "e.g.",
    " ",
    " ",
    " ",
    "\n",
    "\n\n",
    "\t",
    "# ",
    "## ",
    "- ",
    "1. ",
    "```",
    "~~~",
    "    ",
    "。",
    "中文",
    "句子",
    "https://example.com/path?q=1",
    "aaaaaaaaaaaaaaaaaaaa",
    "é",
    "e\u0301",
    "🙂",
    "\r\n",
]
texts = st.lists(st.sampled_from(PIECES), min_size=1, max_size=300).map("".join).filter(str.strip)


@settings(max_examples=150, deadline=None)
@given(
    text=texts,
    sizes=st.tuples(st.integers(0, 30), st.integers(1, 60), st.integers(8, 120)).filter(
        lambda s: s[0] <= s[1] <= s[2]
    ),
)
def test_chunks_reproduce_the_text_within_the_token_limit(
    text: str, sizes: tuple[int, int, int]
) -> None:
    low, target, high = sizes
    assert_faithful(TokenChunker(min_tokens=low, target_tokens=target, max_tokens=high), text)


@settings(max_examples=100, deadline=None)
@given(text=texts, target=st.integers(1, 40), extra=st.integers(0, 40))
def test_chunks_stay_within_a_character_budget(text: str, target: int, extra: int) -> None:
    chunker = TokenChunker(
        min_tokens=min(5, target),
        target_tokens=target,
        max_tokens=max(8, target + extra),
        count_tokens=len,
    )
    assert_faithful(chunker, text)


def test_errors_survive_pickling() -> None:
    import pickle

    empty = pickle.loads(pickle.dumps(EmptyTextError("chunks[2]")))
    assert (type(empty), empty.argument, str(empty)) == (
        EmptyTextError,
        "chunks[2]",
        str(EmptyTextError("chunks[2]")),
    )
    large = pickle.loads(pickle.dumps(ChunkTooLargeError(3, 900, 512, "chunks")))
    assert (large.index, large.tokens, large.maximum, large.argument) == (3, 900, 512, "chunks")
    assert str(large) == 'Chunk 3 of "chunks" is 900 tokens; the limit is 512. ' + (
        "Split it, or pass text and let the chunker split it."
    )
