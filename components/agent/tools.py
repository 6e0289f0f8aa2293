"""Owns tools: ``@tool`` turns a typed, documented function into something a model can call.

pydantic builds the JSON schema of the arguments from the type hints, and validates the
model's arguments before the function runs. A tool never crashes the loop: invalid arguments
and exceptions raised by the function become the tool's result (an error text the model
reads and can react to).

The first parameter receives the caller's context when it is named ``ctx`` (an ``ActionCtx``
when the agent runs in an action); every other parameter is an argument for the model.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import pydantic

from components.agent.errors import ToolDefinitionError
from components.models import ToolCall, ToolSpec

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_ARG_LINE = re.compile(r"^\s{2,}(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?:\s*(.*)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutcome:
    """What running one tool call gave: the text the model reads, and the raw output."""

    call: ToolCall
    """The call that ran."""
    text: str
    """The result as the model reads it (the error text when it failed)."""
    output: Any = None
    """The function's return value as a JSON-like value (``None`` on error)."""
    error: bool = False
    """Whether the call failed (invalid arguments, an exception, an unknown tool, a denial)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A function a model may call. Build one with ``@tool`` or ``tool(fn, ...)``."""

    name: str
    """The name the model calls it by."""
    description: str
    """What it does (from the docstring's first paragraph unless given)."""
    parameters: Mapping[str, Any]
    """The JSON schema of its arguments."""
    function: Callable[..., Any]
    """The function (async or not)."""
    arguments_model: type[pydantic.BaseModel]
    """Validates the model's arguments."""
    takes_ctx: bool = True
    """Whether the function's first parameter is the caller's context."""
    needs_approval: bool = False
    """Whether a call waits for ``approve_tool_call`` / ``deny_tool_call`` before running."""
    handoff: Any = None
    """For a handoff tool: the agent the conversation is transferred to."""
    extras: Mapping[str, Any] = field(default_factory=dict)
    """Free-form metadata."""

    def spec(self) -> ToolSpec:
        """The tool as the model sees it."""
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The model's arguments, validated and converted to the function's types.

        Raises:
            pydantic.ValidationError: they do not match.
        """
        model = self.arguments_model.model_validate(dict(arguments))
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def __call__(self, ctx: Any, call: ToolCall) -> ToolOutcome:
        """Run one call; never raises for invalid arguments or the function's errors."""
        if call.invalid_arguments is not None:
            return error_outcome(
                call,
                f'Invalid arguments for tool "{self.name}": not a JSON object: '
                f"{call.invalid_arguments!r}. Call it again with a JSON object.",
            )
        try:
            kwargs = self.validate(call.arguments)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                for e in exc.errors()
            )
            return error_outcome(
                call,
                f'Invalid arguments for tool "{self.name}": {problems}. '
                "Call it again with valid arguments.",
            )
        try:
            result = self.function(ctx, **kwargs) if self.takes_ctx else self.function(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # the model reads the error and may retry
            return error_outcome(call, f'Tool "{self.name}" failed: {type(exc).__name__}: {exc}')
        output = to_json_value(result)
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        return ToolOutcome(call=call, text=text, output=output)


def error_outcome(call: ToolCall, text: str) -> ToolOutcome:
    """A failed call's outcome: the model reads ``text``."""
    return ToolOutcome(call=call, text=text, error=True)


def to_json_value(value: Any) -> Any:
    """A tool's return value as a JSON-like value (pydantic models and dataclasses dumped)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        return pydantic.TypeAdapter(type(value)).dump_python(value, mode="json")
    except (pydantic.PydanticSchemaGenerationError, TypeError):
        return str(value)


def _docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(fn) or ""
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section, current = "args", None
            continue
        if stripped.endswith(":") and stripped[:-1] in ("Returns", "Raises", "Example", "Yields"):
            section = "other"
            continue
        if section == "summary":
            summary_lines.append(line)
        elif section == "args":
            match = _ARG_LINE.match(line)
            if match:
                current = match.group(1).lstrip("*")
                params[current] = match.group(3).strip()
            elif current and stripped:
                params[current] = f"{params[current]} {stripped}".strip()
    summary = "\n".join(summary_lines).strip().split("\n\n")[0].strip()
    return summary, params


def _arguments_model(
    fn: Callable[..., Any], name: str, parameters: Sequence[inspect.Parameter], docs: dict[str, str]
) -> type[pydantic.BaseModel]:
    raw = inspect.get_annotations(fn)
    hints: dict[str, Any] = {}
    for param in parameters:  # only the model's arguments: the context's hint may not resolve
        if param.name not in raw:
            continue
        hint = raw[param.name]
        if isinstance(hint, str):
            try:
                hint = eval(hint, getattr(fn, "__globals__", {}))
            except Exception as exc:
                raise ToolDefinitionError(
                    f'Tool "{name}": the type hint of "{param.name}" ({hint}) cannot be '
                    f"resolved ({exc})."
                ) from exc
        hints[param.name] = hint
    fields: dict[str, Any] = {}
    for param in parameters:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f'Tool "{name}": *args and **kwargs are not supported.')
        if param.name not in hints:
            raise ToolDefinitionError(
                f'Tool "{name}": parameter "{param.name}" has no type hint; the model needs '
                "one to know what to pass."
            )
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (
            hints[param.name],
            pydantic.Field(default, description=docs.get(param.name)),
        )
    return pydantic.create_model(
        f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )


def _json_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def make_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    handoff: Any = None,
) -> Tool:
    """Build a ``Tool`` from a function (what ``tool(fn, ...)`` does).

    Raises:
        ToolDefinitionError: a bad name or a parameter without a type hint.
    """
    tool_name = str(name or getattr(fn, "__name__", "") or "")
    if not _NAME.match(tool_name):
        raise ToolDefinitionError(
            f"Tool name {tool_name!r} must be 1 to 64 characters of [A-Za-z0-9_-]."
        )
    summary, docs = _docstring(fn)
    params = list(inspect.signature(fn).parameters.values())
    takes_ctx = bool(params) and (
        params[0].name in ("ctx", "context") or "Ctx" in str(params[0].annotation)
    )
    model = _arguments_model(fn, tool_name, params[1:] if takes_ctx else params, docs)
    return Tool(
        name=tool_name,
        description=description if description is not None else summary,
        parameters=_json_schema(model),
        function=fn,
        arguments_model=model,
        takes_ctx=takes_ctx,
        needs_approval=needs_approval,
        handoff=handoff,
    )


@overload
def tool(fn: Callable[..., Awaitable[Any]] | Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


@overload
def tool(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
) -> Tool: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn ``async def (ctx, ...)`` with type hints and a docstring into a ``Tool``.

    Use it bare (``@tool``), called (``@tool(needs_approval=True)``) or as a function
    (``tool(fn, name="lookup")``).

    Example::

        @tool
        async def weather(ctx: ActionCtx, city: str) -> str:
            \"\"\"The current weather in a city.\"\"\"
            return f"sunny in {city}"
    """
    if fn is not None:
        return make_tool(fn, name=name, description=description, needs_approval=needs_approval)

    def decorate(inner: Callable[..., Any]) -> Tool:
        return make_tool(inner, name=name, description=description, needs_approval=needs_approval)

    return decorate


def tool_map(tools: Sequence[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    """Tools by name (plain functions become tools).

    Raises:
        ToolDefinitionError: two tools share a name.
    """
    found: dict[str, Tool] = {}
    for item in tools:
        made = item if isinstance(item, Tool) else make_tool(item)
        if made.name in found:
            raise ToolDefinitionError(f'Two tools are named "{made.name}"; names must be unique.')
        found[made.name] = made
    return found
