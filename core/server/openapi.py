"""Owns describing an app: each function's kind, visibility and JSON schemas, and OpenAPI 3.1.

Schemas come from the handlers' type hints through pydantic, in the JSON wire format: an
``Id`` is a string, ``bytes`` is ``{"$bytes": "<base64>"}``. ``openapi(app)`` describes the
HTTP API ``capsule serve`` answers: ``POST /api/query | mutation | action`` take one request
schema per public function (``{"path": <const>, "args": <its arguments>}``, chosen by
``path``), internal and component functions are absent. ``capsule functions`` prints the same
descriptions, internal ones included.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pydantic
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from core.errors import CapsuleError
from core.functions import FunctionKind, FunctionRef

if TYPE_CHECKING:
    from core.app import App

CALL_KINDS = ("query", "mutation", "action")
_REF = "#/components/schemas/{model}"


class WireJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON schema, in Capsule's wire format (ids, bytes), never failing on a type."""

    def bytes_schema(self, schema: core_schema.BytesSchema) -> JsonSchemaValue:
        """``bytes`` travel as ``{"$bytes": "<base64>"}``."""
        return {
            "type": "object",
            "properties": {"$bytes": {"type": "string", "contentEncoding": "base64"}},
            "required": ["$bytes"],
            "additionalProperties": False,
        }

    def function_plain_schema(self, schema: core_schema.PlainValidatorFunctionSchema) -> Any:
        """Ids (plain validators in ``core.ids``) are strings; other plain validators: any."""
        table = (schema.get("metadata") or {}).get("capsule_id_table")
        if table is not None:
            return {"type": "string", "description": f'An id of a document in table "{table}".'}
        function = schema["function"].get("function")
        if getattr(function, "__module__", "") == "core.ids":
            return {"type": "string", "description": "A document id."}
        return {}

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> JsonSchemaValue:
        """A type pydantic cannot describe accepts any value here (it is still validated)."""
        return {}


@dataclass(slots=True, kw_only=True)
class FunctionDescription:
    """One function as ``capsule functions`` and the OpenAPI description show it."""

    path: str
    """Its path, ``"tasks:create"``."""
    kind: str
    """``"query"``, ``"mutation"``, ``"action"`` or ``"http"``."""
    visibility: str
    """``"public"`` (clients may call it) or ``"internal"`` (functions, scheduler, crons)."""
    component: str = ""
    """The mount path of the component instance it belongs to (``""``: the app's own)."""
    doc: str = ""
    """The first paragraph of its docstring."""
    args: dict[str, Any] = field(default_factory=dict)
    """The JSON schema of its arguments object (``$ref`` into ``defs``)."""
    result: dict[str, Any] = field(default_factory=dict)
    """The JSON schema of its return value (``{}`` when it has no return annotation)."""
    defs: dict[str, Any] = field(default_factory=dict)
    """Named schemas the two refer to."""


def _summary(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _schema(build: typing.Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        found = build()
    except (
        CapsuleError,  # unresolvable hints: calling the function says so; describing it does not
        pydantic.PydanticUserError,
        pydantic.PydanticSchemaGenerationError,
        TypeError,
    ):
        return {}, {}
    defs = found.pop("$defs", {})
    return found, defs


def describe(ref: FunctionRef[Any, Any], *, component: str = "") -> FunctionDescription:
    """The description of one function: kind, visibility and its schemas."""
    args: dict[str, Any] = {}
    result: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    if ref.kind is not FunctionKind.HTTP:
        args, defs = _schema(
            lambda: ref.args_model.model_json_schema(
                ref_template=_REF, schema_generator=WireJsonSchema
            )
        )
        args.pop("title", None)
        try:
            hint = typing.get_type_hints(ref.handler, include_extras=True).get("return")
        except Exception:
            hint = None
        if hint is not None:
            result, more = _schema(
                lambda: pydantic.TypeAdapter(hint).json_schema(
                    ref_template=_REF, schema_generator=WireJsonSchema
                )
            )
            defs.update(more)
    return FunctionDescription(
        path=ref.path,
        kind=ref.kind.value,
        # An HTTP route is reachable by anyone at /http/<path>, whatever the flag says.
        visibility="internal" if ref.internal and ref.kind is not FunctionKind.HTTP else "public",
        component=component,
        doc=_summary(ref.__doc__),
        args=args,
        result=result,
        defs=defs,
    )


def describe_app(app: App, *, components: bool = True) -> list[FunctionDescription]:
    """Every function of the app (and of each mounted component instance), sorted by path."""
    out = [describe(ref) for ref in app.registry.functions.values()]
    out += [describe(ref) for _, _, ref in app.http_routes]
    if components:
        for namespace, instance in sorted(app.components.instances.items()):
            out += [
                describe(ref, component=namespace)
                for ref in instance.component.registry.functions.values()
            ]
    return sorted(out, key=lambda d: (d.component, d.path, d.kind))


def _name(path: str, suffix: str, taken: dict[str, Any]) -> str:
    """A component schema name (``[A-Za-z0-9._-]``) for a function path, unique in ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]", ".", path) + "." + suffix
    name, n = base, 2
    while name in taken:
        name, n = f"{base}{n}", n + 1
    return name


_ERROR = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "A stable error code, e.g. invalid_argument."},
        "message": {"type": "string"},
        "data": {"description": "An AppError's data (422), else null."},
    },
    "required": ["code", "message"],
}
_ERRORS = {
    "400": "Bad arguments (or a function of another kind).",
    "401": "Missing or invalid credentials.",
    "403": "Not allowed.",
    "404": "No public function at this path.",
    "409": "The mutation conflicted on every retry.",
    "422": "The function raised an AppError; its data is in the body.",
    "500": "A bug in the function or the server.",
}


def _version() -> str:
    try:
        return metadata.version("capsule")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a plain checkout
        return "0"


def _call_operation(
    kind: str, functions: list[FunctionDescription], schemas: dict[str, Any]
) -> Any:
    requests: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    mapping: dict[str, str] = {}
    for d in functions:
        schemas.update({k: v for k, v in d.defs.items() if k not in schemas})
        args_name = _name(d.path, "args", schemas)
        schemas[args_name] = {"title": f"{d.path} arguments", **d.args}
        call_name = _name(d.path, "call", schemas)
        schemas[call_name] = {
            "title": f"{kind} {d.path}",
            "description": d.doc or f"Call {kind} {d.path}.",
            "type": "object",
            "properties": {
                "path": {"const": d.path},
                "args": {"$ref": _REF.format(model=args_name)},
            },
            "required": ["path"],
            "additionalProperties": False,
        }
        result_name = _name(d.path, "result", schemas)
        schemas[result_name] = {"title": f"{d.path} result", **d.result}
        requests.append({"$ref": _REF.format(model=call_name)})
        results.append({"$ref": _REF.format(model=result_name)})
        mapping[d.path] = _REF.format(model=call_name)
    paths = ", ".join(f"`{d.path}`" for d in functions)
    return {
        "post": {
            "operationId": kind,
            "summary": f"Run a public {kind}",
            "description": f"`path` names the {kind}: {paths}.",
            "tags": [kind],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": requests,
                            "discriminator": {"propertyName": "path", "mapping": mapping},
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "The function's value, in the JSON wire format.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"value": {"anyOf": results}},
                                "required": ["value"],
                            }
                        }
                    },
                },
                **{
                    status: {
                        "description": text,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
                    for status, text in _ERRORS.items()
                },
            },
        }
    }


def _http_route(path: str, method: str, d: FunctionDescription) -> tuple[str, str, Any]:
    template = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", f"/http{path}")
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", template)
    ]
    operation: dict[str, Any] = {
        "operationId": f"http {method} {path}",
        "summary": d.doc or f"HTTP route {method} {path}",
        "tags": ["http"],
        "responses": {"default": {"description": "Whatever the route answers."}},
    }
    if params:
        operation["parameters"] = params
    return template, method.lower(), operation


def openapi(app: App, *, title: str = "Capsule app") -> dict[str, Any]:
    """The OpenAPI 3.1 description of the HTTP API ``capsule serve`` runs for ``app``."""
    public = [
        d
        for d in describe_app(app, components=False)
        if d.visibility == "public" and d.kind in CALL_KINDS
    ]
    schemas: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, Any] = {}
    for kind in CALL_KINDS:
        of_kind = [d for d in public if d.kind == kind]
        if of_kind:
            paths[f"/api/{kind}"] = _call_operation(kind, of_kind, schemas)
    if any(d.kind == "query" for d in public):
        paths["/api/subscribe"] = {
            "get": {
                "operationId": "subscribe",
                "summary": "Follow a public query's result (Server-Sent Events)",
                "tags": ["query"],
                "parameters": [
                    {"name": "path", "in": "query", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "args",
                        "in": "query",
                        "required": False,
                        "description": "The arguments as a JSON object.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "One `data:` event per new result.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
            }
        }
    for path, method, ref in app.http_routes:
        template, verb, operation = _http_route(path, method, describe(ref))
        paths.setdefault(template, {})[verb] = operation
    paths["/_health"] = {
        "get": {
            "operationId": "health",
            "summary": "Whether the server and its database answer",
            "tags": ["server"],
            "responses": {
                "200": {"description": 'Healthy: `{"status": "ok"}`.'},
                "503": {"description": "The database does not answer."},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": _version(),
            "description": "Public functions of a Capsule app. Values use Capsule's JSON wire "
            'format: bytes as {"$bytes": base64}, integers beyond 2**53 as {"$integer": '
            '"<decimal>"}. Send a JWT as "Authorization: Bearer <token>" when the server '
            "verifies identities.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{}, {"bearer": []}],
    }


__all__ = ["FunctionDescription", "WireJsonSchema", "describe", "describe_app", "openapi"]
