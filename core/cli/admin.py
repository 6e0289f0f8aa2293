"""Owns the admin commands: ``capsule functions`` and ``capsule workflows``.

``capsule functions APP`` lists every function (the app's and each mounted component's) with
its kind, visibility and argument schema. ``capsule workflows list | status | cancel |
restart`` works on the workflows of each mounted ``workflow`` component instance, through
that component's exported functions (found by name, so the core does not import the
component), as the app itself would call them; a running server or worker carries out a
cancel or a restart.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from core.app import App
from core.cli.loading import choose_database, load_app
from core.cli.output import print_value
from core.errors import UserError
from core.server.openapi import FunctionDescription, describe_app

WORKFLOW_COMPONENT = "workflow"
"""The name of the component whose instances ``capsule workflows`` works on."""


def add_parsers(commands: Any) -> None:
    """Register ``functions`` and ``workflows``."""
    p = commands.add_parser(
        "functions", help="list every function with its kind, visibility and arguments"
    )
    p.add_argument("target", help="the app, as module:attr (e.g. tasks:app)")
    p.add_argument("--json", action="store_true", help="print full JSON descriptions")
    p.set_defaults(handler=run_functions)

    p = commands.add_parser("workflows", help="list, inspect, cancel or restart workflows")
    actions = p.add_subparsers(dest="workflow_command", required=True, metavar="ACTION")
    for name, help_text in (
        ("list", "list workflows (newest last)"),
        ("status", "a workflow's state, result and steps"),
        ("cancel", "cancel a running workflow"),
        ("restart", "re-run a finished workflow (from a step)"),
    ):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("target", help="the app, as module:attr")
        if name != "list":
            sub.add_argument("id", help="the workflow id")
        else:
            sub.add_argument("--state", help="only workflows in this state (e.g. running)")
            sub.add_argument("--limit", type=int, default=100, help="at most this many (100)")
        if name == "restart":
            sub.add_argument("--from-step", help="a step number or name (default: the start)")
        sub.add_argument(
            "--component", help="the workflow component's mount name (default: every one)"
        )
        sub.add_argument("--db", help="database URL (default: CAPSULE_DB_URL)")
        sub.set_defaults(handler=run_workflows)


# -- functions ------------------------------------------------------------------------------------


def _type_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rpartition("/")[2]
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return f"list[{_type_name(schema['items'])}]"
    return str(schema.get("type", "any"))


def _arguments(d: FunctionDescription) -> str:
    props: dict[str, Any] = d.args.get("properties", {})
    required = set(d.args.get("required", []))
    parts = []
    for name, schema in props.items():
        options = schema.get("anyOf", [schema])
        kind = "|".join(_type_name(option) for option in options)
        parts.append(f"{name}: {kind}" + ("" if name in required else "?"))
    return ", ".join(parts)


def run_functions(args: argparse.Namespace) -> int:
    """Print each function: path, kind, visibility, component, arguments."""
    described = describe_app(load_app(args.target))
    if args.json:
        for d in described:
            row = {
                "path": d.path,
                "kind": d.kind,
                "visibility": d.visibility,
                "component": d.component,
                "doc": d.doc,
                "args": d.args,
                "result": d.result,
                "defs": d.defs,
            }
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if sys.stdout.isatty():
        table = Table("function", "kind", "visibility", "component", "arguments")
        for d in described:
            table.add_row(d.path, d.kind, d.visibility, d.component or "(app)", _arguments(d))
        Console().print(table)
    else:
        for d in described:
            print(f"{d.path}\t{d.kind}\t{d.visibility}\t{d.component}\t{_arguments(d)}")
    return 0


# -- workflows ------------------------------------------------------------------------------------


def workflow_mounts(app: App, only: str | None = None) -> list[str]:
    """The mount names of the app's ``workflow`` component instances.

    Raises:
        UserError: the app mounts none (or none named ``only``).
    """
    found = [
        ns
        for ns, inst in sorted(app.components.instances.items())
        if inst.component.name == WORKFLOW_COMPONENT and "/" not in ns
    ]
    if only is not None:
        if only not in found:
            known = ", ".join(f'"{m}"' for m in found) or "none"
            raise UserError(f'No workflow component is mounted as "{only}"; mounted: {known}.')
        return [only]
    if not found:
        raise UserError(
            "This app mounts no workflow component (app.use(components.workflow.component))."
        )
    return found


def _call(app: App, client: Any, kind: str, mount: str, name: str, fn_args: dict[str, Any]) -> Any:
    ref = getattr(getattr(app.components, mount), name)
    ex = client.runtime.executor
    if kind == "query":
        return ex.query(ref, fn_args, None, caller="")
    return ex.mutation(ref, fn_args, None, caller="")


def _find(app: App, client: Any, mounts: list[str], workflow_id: str) -> str:
    for mount in mounts:
        if _call(
            app, client, "query", mount, "status", {"workflow_id": workflow_id, "steps": False}
        ):
            return mount
    raise UserError(f'No workflow "{workflow_id}" (looked in: {", ".join(mounts)}).')


def _from_step(raw: str | None) -> int | str | None:
    if raw is None:
        return None
    return int(raw) if raw.lstrip("-").isdigit() else raw


def run_workflows(args: argparse.Namespace) -> int:
    """``capsule workflows list | status | cancel | restart``."""
    choose_database(args.db)
    app = load_app(args.target)
    mounts = workflow_mounts(app, args.component)
    with app.sync_client(runtime=False) as client:
        command = args.workflow_command
        if command == "list":
            rows = []
            for mount in mounts:
                page = _call(
                    app,
                    client,
                    "query",
                    mount,
                    "list_workflows",
                    {"state": args.state, "num_items": max(args.limit, 0)},
                )
                rows += [{"component": mount, **wf} for wf in page["page"]]
            _print_workflows(rows)
            return 0
        mount = _find(app, client, mounts, args.id)
        if command == "status":
            print_value(_call(app, client, "query", mount, "status", {"workflow_id": args.id}))
        elif command == "cancel":
            _call(app, client, "mutation", mount, "cancel", {"workflow_id": args.id})
            print(f"canceled workflow {args.id}", file=sys.stderr)
        else:
            step = _from_step(args.from_step)
            _call(
                app,
                client,
                "mutation",
                mount,
                "restart",
                {"workflow_id": args.id, "from_step": step},
            )
            print(f"restarted workflow {args.id}", file=sys.stderr)
    return 0


def _print_workflows(rows: list[dict[str, Any]]) -> None:
    if sys.stdout.isatty():
        table = Table("id", "name", "state", "component", "error")
        for wf in rows:
            table.add_row(wf["id"], wf["name"], wf["state"], wf["component"], wf["error"] or "")
        Console().print(table)
        return
    for wf in rows:
        print(f"{wf['id']}\t{wf['name']}\t{wf['state']}\t{wf['component']}")


__all__ = ["add_parsers", "run_functions", "run_workflows", "workflow_mounts"]
