"""Two agents coordinated by a durable workflow: a researcher with a rag tool, then a writer.

    pip install -e . && python examples/multi_agent.py "how do components stay consistent?"

The researcher searches the chatbot's documents (``examples/chatbot/docs``, ingested into a
rag namespace) with its ``search_notes`` tool and reports findings; the writer turns the
findings into a short brief. A workflow runs the two as journaled steps: if the process
dies between them, the workflow resumes at the writer, and the researcher's step is not run
again. Both agents write to one thread, so the whole exchange is kept.

Offline (no ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``) the agents run on scripted models that
build their replies from what the tool returned, and say they are scripted. With a key they
use ``OpenAIChatModel`` (``MULTI_AGENT_MODEL``, default ``gpt-4o-mini``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from components.agent import Agent, tool
from components.agent import component as agent_component
from components.models import ChatModel, HashingEmbedder, ModelRequest, ScriptedChatModel, ToolCall
from components.rag import RAG
from components.rag import component as rag_component
from components.workflow import WorkflowManager, WorkflowStatus
from components.workflow import component as workflow_component
from core import ActionCtx, App, AppError, MutationCtx, QueryCtx

DOCS = Path(__file__).resolve().parent / "chatbot" / "docs"
ONLINE = bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def first_sentences(text: str, n: int) -> list[str]:
    """The first ``n`` sentences of the prose in ``text`` (headings and separators skipped)."""
    prose = " ".join(
        line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] not in "#-."
    )
    sentences = [s.strip() + "." for s in prose.split(". ") if len(s.strip()) > 20]
    return sentences[:n]


def scripted_researcher(topic: str) -> ScriptedChatModel:
    """Searches once, then reports the first sentences of what it found."""

    def report(req: ModelRequest) -> str:
        found = req.messages[-1].text
        points = "\n".join(f"- {s}" for s in first_sentences(found, 4))
        return f"Findings (scripted researcher, no language model):\n{points}"

    return ScriptedChatModel(
        [ToolCall(name="search_notes", arguments={"query": topic}), report], chunk_size=32
    )


def scripted_writer() -> ScriptedChatModel:
    """Turns the findings in its prompt into a short brief."""

    def brief(req: ModelRequest) -> str:
        lines = [ln[2:] for ln in req.messages[-1].text.splitlines() if ln.startswith("- ")]
        body = " ".join(lines[:3])
        return f"Brief (scripted writer, no language model): {body}"

    return ScriptedChatModel([brief], chunk_size=32)


def progress_view(status: WorkflowStatus | None, workflow_id: str) -> dict[str, Any]:
    """A workflow's state, its steps and its result, for printing."""
    if status is None:
        raise AppError(f"No workflow {workflow_id}.")
    return {
        "state": status.state,
        "steps": [f"{s.name}: {s.state}" for s in status.steps],
        "result": status.result,
        "error": status.error,
    }


def build(topic: str) -> dict[str, Any]:
    app = App()
    notes = RAG(app.use(rag_component, name="notes"), embedder=HashingEmbedder())

    @tool
    async def search_notes(ctx: ActionCtx, query: str) -> str:
        """Search the project notes; returns the most relevant passages."""
        found = await notes.search(ctx, namespace="notes", query=query, limit=3)
        return found.text

    def model(scripted: ChatModel) -> ChatModel:
        if not ONLINE:
            return scripted
        from components.models import OpenAIChatModel

        return OpenAIChatModel(os.environ.get("MULTI_AGENT_MODEL", "gpt-4o-mini"))

    agents = app.use(agent_component, name="agents")
    researcher = Agent(
        agents,
        name="researcher",
        model=model(scripted_researcher(topic)),
        instructions="Search the notes with search_notes and list the key findings.",
        tools=[search_notes],
    )
    writer = Agent(
        agents,
        name="writer",
        model=model(scripted_writer()),
        instructions="Write a three-sentence brief from the findings you are given.",
    )
    manager = WorkflowManager(app.use(workflow_component, name="workflow"))

    # Each agent call is an app action (so the researcher's tool runs as the app and can
    # reach the app's rag instance); the workflow runs them as journaled steps.
    @app.internal_action(name="research")
    async def research(ctx: ActionCtx, thread_id: str, topic: str) -> str:
        found = await researcher.generate_text(
            ctx, thread_id=thread_id, prompt=f"Research: {topic}"
        )
        return found.text

    @app.internal_action(name="write")
    async def write(ctx: ActionCtx, thread_id: str, topic: str, findings: str) -> str:
        prompt = f"Write a brief on {topic!r} from these findings:\n{findings}"
        return (await writer.generate_text(ctx, thread_id=thread_id, prompt=prompt)).text

    @manager.define
    async def research_and_write(step: Any, thread_id: str, topic: str) -> dict[str, str]:
        findings = await step.run_action(research, {"thread_id": thread_id, "topic": topic})
        brief = await step.run_action(
            write, {"thread_id": thread_id, "topic": topic, "findings": findings}
        )
        return {"findings": findings, "brief": brief}

    @app.action
    async def ingest(ctx: ActionCtx) -> int:
        added = 0
        for path in sorted(DOCS.glob("*.md")):
            text = path.read_text(encoding="utf-8")
            added += (await notes.add(ctx, namespace="notes", key=path.name, text=text)).created
        return added

    @app.mutation
    def start(ctx: MutationCtx, topic: str) -> dict[str, str]:
        thread_id = researcher.create_thread(ctx, title=topic)
        workflow_id = manager.start(
            ctx, research_and_write, {"thread_id": thread_id, "topic": topic}
        )
        return {"thread_id": thread_id, "workflow_id": str(workflow_id)}

    @app.query
    def progress(ctx: QueryCtx, workflow_id: str) -> dict[str, Any]:
        return progress_view(manager.status(ctx, workflow_id), workflow_id)

    @app.query
    def transcript(ctx: QueryCtx, thread_id: str) -> list[dict[str, Any]]:
        page = researcher.list_messages(ctx, thread_id=thread_id)
        lines = []
        for m in page.page:
            text = m["text"]
            for call in m.get("tool_calls") or []:
                text += f"calls {call['name']}({call['arguments']})"
            if m["role"] == "tool" and len(text) > 160:
                text = " ".join(text.split())[:157] + "..."
            agent = m.get("agent_name") or "workflow"
            lines.append({"agent": agent, "role": m["role"], "text": text})
        return lines

    return {
        "app": app,
        "ingest": ingest,
        "start": start,
        "progress": progress,
        "transcript": transcript,
        "models": [researcher.model, writer.model],
    }


def run(topic: str) -> None:
    parts = build(topic)
    mode = "OpenAI" if ONLINE else "scripted models (offline)"
    print(f"Topic: {topic!r}\nModels: {mode}\n")
    with parts["app"].sync_client() as client:
        print(f"1. Ingested {client.action(parts['ingest'], {})} notes into the rag namespace")
        started = client.mutation(parts["start"], {"topic": topic})
        print(f"2. Started workflow {started['workflow_id']} on thread {started['thread_id']}")
        print("3. Steps as they complete:")
        seen: set[str] = set()
        for status in client.subscribe(parts["progress"], {"workflow_id": started["workflow_id"]}):
            for line in status["steps"]:
                if line not in seen:
                    seen.add(line)
                    print(f"   {line}")
            if status["state"] not in ("running", "pending"):
                break
        print(f"   workflow: {status['state']}")
        if status["state"] != "success":
            sys.exit(f"The workflow did not succeed: {status['error']}")
        print("\n4. The thread, message by message:")
        for m in client.query(parts["transcript"], {"thread_id": started["thread_id"]}):
            text = m["text"].replace("\n", "\n      ")
            print(f"   [{m['agent']} / {m['role']}] {text}")
        print("\n5. The brief:\n   " + status["result"]["brief"])
    if not ONLINE:
        for model in parts["models"]:
            model.assert_consumed()
    print("\nDone.")


def main() -> None:
    topic = " ".join(sys.argv[1:]) or "how do components stay consistent with the app's writes?"
    with tempfile.TemporaryDirectory(prefix="capsule-agents-") as folder:
        if not os.environ.get("CAPSULE_DB_URL"):
            os.environ["CAPSULE_DB_URL"] = f"sqlite:///{os.path.join(folder, 'agents.db')}"
        run(topic)


if __name__ == "__main__":
    main()
