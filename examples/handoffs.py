"""Handoffs: a triage agent hands billing questions over to a billing agent, which
asks a researcher agent (used as a tool, on its own thread) and streams its answer.

Runs offline with scripted models (``python examples/multi_agent.py``); set ``OPENAI_API_KEY``
(and ``OPENAI_BASE_URL`` for any OpenAI-compatible server, ``MODEL`` for its model) to use a
real model instead. The database is a temporary SQLite file unless ``CAPSULE_DB_URL`` is set.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import anyio

from components.agent import Agent, tool
from components.agent import component as agent_component
from components.models import ChatModel, OpenAIChatModel, ScriptedChatModel, ToolCall
from core import ActionCtx, App, QueryCtx

INVOICES = {"INV-7": "paid on 3 March", "INV-9": "due on 1 April"}


@tool
async def invoice_status(ctx: ActionCtx, invoice: str) -> str:
    """The payment status of an invoice, by its number (like INV-7)."""
    return INVOICES.get(invoice.upper(), "unknown invoice")


def model(script: list[Any]) -> ChatModel:
    if os.environ.get("OPENAI_API_KEY"):
        return OpenAIChatModel(os.environ.get("MODEL", "gpt-4o-mini"))
    return ScriptedChatModel(script, chunk_size=6, delay=0.01)


url = os.environ.get("CAPSULE_DB_URL") or f"sqlite:///{Path(tempfile.mkdtemp()) / 'agents.db'}"
app = App(storage=url)
agents = app.use(agent_component, name="agents")

researcher = Agent(
    agents,
    name="researcher",
    instructions="Look facts up with your tools; answer in a line.",
    tools=[invoice_status],
    model=model(
        [
            ToolCall(name="invoice_status", arguments={"invoice": "INV-9"}),
            "INV-9 is due on 1 April.",
        ]
    ),
)
billing = Agent(
    agents,
    name="billing",
    instructions="You answer billing questions, asking the researcher.",
    tools=[researcher.as_tool(name="research", description="Ask the researcher a question.")],
    model=model(
        [
            ToolCall(name="research", arguments={"prompt": "Status of INV-9?"}),
            "Your invoice INV-9 is due on 1 April; nothing is overdue.",
        ]
    ),
)
triage = Agent(
    agents,
    name="triage",
    instructions="Route the user to the right agent.",
    handoffs=[billing],
    model=model([ToolCall(name="transfer_to_billing")]),
)


@app.action
async def ask(ctx: ActionCtx, question: str) -> dict[str, Any]:
    thread_id = await triage.create_thread(ctx, user_id="ada", title="billing question")
    print("streaming: ", end="", flush=True)
    async with triage.stream_text(ctx, thread_id=thread_id, prompt=question) as stream:
        async for delta in stream:
            print(delta, end="", flush=True)
    print()
    return {"thread_id": thread_id, "agent": stream.result.agent_name}


@app.query
def transcript(ctx: QueryCtx, thread_id: str) -> list[str]:
    lines = []
    for m in triage.list_messages(ctx, thread_id=thread_id).page:
        said = m["text"] or ", ".join(f"calls {c['name']}" for c in m["tool_calls"])
        lines.append(
            f"({m['order']},{m['step_order']}) {m['agent_name'] or 'user'}/{m['role']}: {said}"
        )
    return lines


async def main() -> None:
    async with app.client() as client:
        answer = await client.action(ask, {"question": "Is my invoice INV-9 paid?"})
        print(f"answered by: {answer['agent']}")
        for line in await client.query(transcript, {"thread_id": answer["thread_id"]}):
            print(line)
        usage = await client.query(usage_of, {"thread_id": answer["thread_id"]})
        print(f"tokens used in the thread: {usage}")


@app.query
def usage_of(ctx: QueryCtx, thread_id: str) -> int:
    return int(triage.usage(ctx, thread_id=thread_id).total_tokens)


if __name__ == "__main__":
    anyio.run(main)
