"""Owns reading import files: JSON lines, CSV and JSON arrays, each record with its line.

Every reader yields ``Record``s naming where each document came from (``"users.jsonl line
57"``), reports the bytes it consumed (for the progress bar), and refuses malformed input
with an ``InvalidValueError`` naming that place.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import IO, Any

from core.errors import CapsuleError, InvalidValueError
from core.values import from_json


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One document to import and where it came from."""

    where: str
    """``"<file> line <n>"``, for error messages."""
    doc: dict[str, Any]


def _parse(where: str, text: str) -> Record:
    try:
        doc = from_json(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise InvalidValueError(f"{where}: not valid JSON ({exc}).") from None
    except CapsuleError as exc:
        raise InvalidValueError(f"{where}: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidValueError(f"{where}: expected a JSON object, not {type(doc).__name__}.")
    return Record(where=where, doc=doc)


def jsonl_records(
    name: str, stream: IO[bytes], counter: Callable[[int], None]
) -> Generator[Record, None, None]:
    """Records of a JSON-lines stream (blank lines skipped)."""
    for number, raw in enumerate(stream, 1):
        counter(len(raw))
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InvalidValueError(f"{name} line {number}: not UTF-8 text.") from None
        if text.strip():
            yield _parse(f"{name} line {number}", text)


def _csv_cell(text: str) -> Any:
    """A CSV cell as a value: JSON numbers, true/false/null and arrays/objects; else text."""
    stripped = text.strip()
    if stripped and (stripped[0] in '-0123456789[{"' or stripped in ("true", "false", "null")):
        with contextlib.suppress(ValueError, RecursionError):
            return json.loads(stripped)
    return text


def csv_records(
    name: str, stream: IO[bytes], counter: Callable[[int], None]
) -> Generator[Record, None, None]:
    """Records of a CSV stream with a header row (empty cells are left out)."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    try:
        reader = csv.DictReader(text)
        for row in reader:
            counter(sum(len(v or "") for v in row.values()))
            where = f"{name} line {reader.line_num}"
            if None in row:
                raise InvalidValueError(f"{where}: more cells than header columns.")
            doc = {k: _csv_cell(v) for k, v in row.items() if v not in (None, "")}
            try:
                yield Record(where=where, doc=from_json(doc))
            except CapsuleError as exc:
                raise InvalidValueError(f"{where}: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidValueError(f"{name}: not UTF-8 text.") from None
    finally:
        text.detach()  # the caller closes the file


def json_records(
    name: str, stream: IO[bytes], counter: Callable[[int], None]
) -> Generator[Record, None, None]:
    """Records of a JSON array of objects (elements are numbered from 1)."""
    raw = stream.read()
    counter(len(raw))
    try:
        items = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidValueError(f"{name}: not valid JSON ({exc}).") from None
    if not isinstance(items, list):
        raise InvalidValueError(f"{name}: expected a JSON array of documents.")
    for number, item in enumerate(items, 1):
        yield _parse(f"{name} element {number}", json.dumps(item))


READERS = {
    ".jsonl": jsonl_records,
    ".ndjson": jsonl_records,
    ".csv": csv_records,
    ".json": json_records,
}
