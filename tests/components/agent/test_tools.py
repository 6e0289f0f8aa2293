"""@tool: schemas from type hints and docstrings, validation, errors back to the model."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from components.agent import Tool, ToolDefinitionError, tool
from components.agent.tools import make_tool, tool_map
from components.models import ToolCall


class Point(pydantic.BaseModel):
    x: int
    y: int


@tool
async def move(ctx: Any, point: Point, steps: int = 1) -> Point:
    """Move a point.

    Longer text that the model does not need.

    Args:
        point: where it starts.
        steps: how far it goes,
            on two lines.
    """
    return Point(x=point.x + steps, y=point.y)


def test_schema_from_hints_and_docstring() -> None:
    assert isinstance(move, Tool) and move.takes_ctx
    assert move.description == "Move a point."
    params = move.parameters
    assert params["required"] == ["point"]
    assert params["properties"]["steps"]["description"] == "how far it goes, on two lines."
    assert params["properties"]["steps"]["default"] == 1
    assert move.spec().name == "move"


async def test_valid_call_returns_json() -> None:
    outcome = await move(None, ToolCall(name="move", arguments={"point": {"x": 1, "y": 2}}))
    assert not outcome.error and outcome.output == {"x": 2, "y": 2}
    assert outcome.text == '{"x": 2, "y": 2}'


async def test_invalid_arguments_become_an_error_text() -> None:
    outcome = await move(None, ToolCall(name="move", arguments={"point": {"x": "a"}}))
    assert outcome.error and "point.x" in outcome.text and "point.y" in outcome.text
    outcome = await move(
        None, ToolCall(name="move", arguments={"point": {"x": 1, "y": 1}, "extra": 1})
    )
    assert outcome.error and "extra" in outcome.text
    broken = ToolCall.from_json(id="c", name="move", arguments="{not json")
    outcome = await move(None, broken)
    assert outcome.error and "not a JSON object" in outcome.text


def test_plain_functions_and_options() -> None:
    def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    made = tool(shout, name="yell", needs_approval=True)
    assert made.name == "yell" and made.needs_approval and not made.takes_ctx
    assert set(tool_map([shout, move])) == {"shout", "move"}


def test_the_context_parameter_is_found_by_name_or_type() -> None:
    from core import ActionCtx

    async def by_type(c: ActionCtx, city: str) -> str:
        """Weather."""
        return city

    made = make_tool(by_type)
    assert made.takes_ctx and list(made.parameters["properties"]) == ["city"]


def test_definition_errors() -> None:
    def no_hint(ctx: Any, x) -> None:  # type: ignore[no-untyped-def]
        """No hint."""

    with pytest.raises(ToolDefinitionError, match='"x" has no type hint'):
        make_tool(no_hint)
    with pytest.raises(ToolDefinitionError, match="1 to 64 characters"):
        make_tool(lambda: None, name="bad name")
    with pytest.raises(ToolDefinitionError, match="unique"):
        tool_map([move, move])
