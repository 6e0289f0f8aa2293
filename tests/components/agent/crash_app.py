"""An agent app run in a child process by test_sweeper.py and killed with SIGKILL mid-stream.

``python crash_app.py URL`` streams a reply whose model hangs after its first delta; it
prints ``{"thread_id", "text"}`` once the first delta is saved, then waits to be killed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator

import anyio

from components.agent import Agent, component
from components.models import ModelRequest, ModelResponse, StreamEvent, TextDelta
from core import ActionCtx, App

URL = sys.argv[1]
LEASE = 30.0


class HangingModel:
    """Streams one delta, then never finishes."""

    model = "hanging"

    async def request(self, req: ModelRequest) -> ModelResponse:
        raise RuntimeError("streamed only")

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamEvent]:
        yield TextDelta(text="Partial answer")
        await anyio.sleep_forever()
        yield TextDelta(text="never")


app = App(storage=URL)
agent = Agent(
    app.use(component, name="agent"),
    name="crashy",
    model=HangingModel(),
    stream_throttle=0.0,
    pending_timeout=LEASE,
)


@app.action
async def run(ctx: ActionCtx) -> None:
    thread_id = await agent.create_thread(ctx, user_id="ada")

    async def report(delta: str) -> None:
        sys.stdout.write(json.dumps({"thread_id": thread_id, "text": delta}) + "\n")
        sys.stdout.flush()

    async with agent.stream_text(ctx, thread_id=thread_id, prompt="tell me") as stream:
        async for delta in stream:
            await report(delta)


async def main() -> None:
    async with app.client(runtime=False) as client:
        await client.action(run, {})


if __name__ == "__main__":
    anyio.run(main)
