"""Context assembly: no orphan tool call or result; search hits before recent history."""

from __future__ import annotations

from typing import Any

from components.agent.history import assemble, drop_orphans
from components.agent.parts import PartEncoder, compress, last_step_text, parts_text
from components.agent.usage import Price, cost, price_for
from components.models import TextDelta, ToolCall, ToolCallDelta, Usage


def doc(i: int, role: str, **kw: Any) -> dict[str, Any]:
    return {"_id": f"m{i}", "order": 0, "step_order": i, "role": role, "text": "", **kw}


def test_orphans_are_dropped() -> None:
    docs = [
        doc(0, "user", text="hi"),
        doc(
            1,
            "assistant",
            tool_calls=[
                {"id": "a", "name": "t", "arguments": {}},
                {"id": "b", "name": "t", "arguments": {}},
            ],
        ),
        doc(2, "tool", tool_call_id="a", text="A"),
        doc(3, "tool", tool_call_id="zzz", text="orphan result"),
        doc(4, "assistant", tool_calls=[{"id": "c", "name": "t", "arguments": {}}]),
        doc(5, "assistant", text="text", tool_calls=[{"id": "d", "name": "t", "arguments": {}}]),
    ]
    kept = drop_orphans(docs)
    assert [d["_id"] for d in kept] == ["m0", "m1", "m2", "m5"]
    assert [c["id"] for c in kept[1]["tool_calls"]] == ["a"]
    assert kept[3]["tool_calls"] == []


def test_assemble_orders_instructions_search_recent() -> None:
    recent = [doc(1, "user", text="now"), doc(0, "user", text="before")]
    hits = [{**doc(9, "assistant", text="old fact"), "order": -1}, doc(1, "user", text="now")]
    messages = assemble(instructions="sys", recent=recent, search=hits)
    assert [m.text for m in messages] == ["sys", "old fact", "before", "now"]


def test_part_encoder_and_helpers() -> None:
    enc = PartEncoder()
    parts = enc.start_step()
    parts += enc.delta(TextDelta(text="Hel")) + enc.delta(TextDelta(text="lo"))
    parts += enc.delta(ToolCallDelta(index=0, id="c", name="t"))
    parts += enc.delta(ToolCallDelta(index=0, arguments='{"a":'))
    parts += enc.end_response(
        [ToolCall(id="c", name="t", arguments={"a": 1}), ToolCall(id="d", name="u")]
    )
    assert [p["type"] for p in parts] == [
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "tool-input-start",
        "tool-input-delta",
        "text-end",
        "tool-input-available",
        "tool-input-start",
        "tool-input-available",
    ]
    assert len(compress(parts)) == len(parts) - 1
    assert parts_text(parts) == "Hello"
    more = parts + enc.finish_step() + enc.start_step() + enc.text("Bye")
    assert last_step_text(more) == "Bye"
    assert PartEncoder.error("x") == [{"type": "error", "error_text": "x"}]


def test_prices() -> None:
    prices = {"gpt-4o": Price(prompt=2.5, completion=10.0), "gpt-*": Price(prompt=1, completion=1)}
    assert price_for(prices, "gpt-4o") == prices["gpt-4o"]
    assert price_for(prices, "gpt-5") == prices["gpt-*"]
    assert price_for(prices, "claude") is None and price_for(None, "gpt-4o") is None
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=100_000, total_tokens=1_100_000)
    assert cost(prices, "gpt-4o", usage) == 2.5 + 1.0
    assert cost(prices, "other", usage) is None
