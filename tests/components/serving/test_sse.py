from __future__ import annotations

import pytest

from components.serving.sse import DONE, comment, frame, json_frame


def test_frame_with_id_and_event() -> None:
    assert frame("hi", id="c1", event="delta") == "id: c1\nevent: delta\ndata: hi\n\n"


def test_multiline_data_is_split_into_data_lines() -> None:
    assert frame("a\nb") == "data: a\ndata: b\n\n"
    assert frame("") == "data: \n\n"


def test_json_frame_is_one_line_even_with_newlines_in_values() -> None:
    event = json_frame({"delta": "line one\nline two é"}, id="7")
    assert event == 'id: 7\ndata: {"delta":"line one\\nline two é"}\n\n'


def test_ids_may_not_hold_newlines() -> None:
    with pytest.raises(ValueError, match="newline"):
        frame("x", id="a\nb")


def test_comment_and_done() -> None:
    assert comment() == ": keep-alive\n\n"
    assert DONE == "data: [DONE]\n\n"
