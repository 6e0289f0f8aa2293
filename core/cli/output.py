"""Owns how commands print: values as JSON (pretty on a terminal), errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from core.values import to_json


def print_value(value: Any) -> None:
    """Print a value in the JSON wire format (indented when stdout is a terminal)."""
    indent = 2 if sys.stdout.isatty() else None
    print(json.dumps(to_json(value), indent=indent, ensure_ascii=False))


def print_error(message: str) -> None:
    """Print an error message to stderr."""
    print(f"error: {message}", file=sys.stderr)
