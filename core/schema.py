"""Owns the schema: ``Schema``, ``Table``, index declarations, and document validation.

A table's shape is a pydantic model or a mapping of field name to type; every write is
validated against it in strict mode (no coercion) and model defaults are stored. A mapping
field whose type admits ``None`` may be omitted and defaults to ``None``.
"""

from __future__ import annotations

import hashlib
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict

from core.errors import InvalidIdError, InvalidValueError, UserError
from core.ids import Id, IdTable, decode_table_number
from core.values import (
    INT64_MAX,
    INT64_MIN,
    MAX_ARRAY_ELEMENTS,
    MAX_FIELDS,
    check_table_name,
    str_size,
)

MAX_INDEX_FIELDS = 15
MAX_INDEXES_PER_TABLE = 32
RESERVED_INDEXES = ("by_id", "by_creation_time")
_INDEX_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_FIELD_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexSpec:
    """A declared database index: equality/range lookups over ``fields`` in order."""

    name: str
    fields: tuple[str, ...]
    kind: str = "btree"

    def describe(self) -> str:
        """A stable text form, stored in the catalog to notice changed definitions."""
        return f"{self.kind}:{','.join(self.fields)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchIndexSpec:
    """A declared full-text search index over one string field."""

    name: str
    search_field: str
    filter_fields: tuple[str, ...] = ()
    kind: str = "search"

    def describe(self) -> str:
        """A stable text form, stored in the catalog to notice changed definitions."""
        return f"search:{self.search_field}|{','.join(self.filter_fields)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class VectorIndexSpec:
    """A declared vector index over one ``list[float]`` field."""

    name: str
    vector_field: str
    dimensions: int
    filter_fields: tuple[str, ...] = ()
    kind: str = "vector"

    def describe(self) -> str:
        """A stable text form, stored in the catalog to notice changed definitions."""
        return f"vector:{self.vector_field}|{self.dimensions}|{','.join(self.filter_fields)}"


AnyIndexSpec = IndexSpec | SearchIndexSpec | VectorIndexSpec


def _names(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def index_spec_from_text(name: str, text: str) -> AnyIndexSpec | None:
    """The declaration a catalog's stored ``describe()`` text stands for.

    ``None`` stands for the built-in creation-time order (``"btree:"``). Processes use it to
    maintain indexes the catalog has but their own schema does not declare (a newer version
    of the app added them).

    Raises:
        UserError: the text is not one ``describe()`` writes.
    """
    kind, _, rest = text.partition(":")
    parts = rest.split("|")
    try:
        if kind == "btree" and len(parts) == 1:
            fields = _names(rest)
            return IndexSpec(name=name, fields=fields) if fields else None
        if kind == "search" and len(parts) == 2:
            return SearchIndexSpec(name=name, search_field=parts[0], filter_fields=_names(parts[1]))
        if kind == "vector" and len(parts) == 3:
            return VectorIndexSpec(
                name=name,
                vector_field=parts[0],
                dimensions=int(parts[1]),
                filter_fields=_names(parts[2]),
            )
    except ValueError:
        pass
    raise UserError(f'Index "{name}" has a stored definition {text!r} this version cannot read.')


class Table:
    """A table declaration: its document shape and its indexes."""

    def __init__(self, shape: type[BaseModel] | Mapping[str, Any] | None = None):
        self.shape = shape
        self.indexes: dict[str, AnyIndexSpec] = {}
        self._validator: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
        self._model: type[BaseModel] | None = None
        self._fingerprint: str | None = None
        self._exact: dict[str, type] = {}
        """Fields declared as exactly ``str``, ``int``, ``float`` or ``bool``: a value of that
        very type is what strict validation returns unchanged, so it needs no validator call."""
        self._fields: dict[str, pydantic.TypeAdapter[Any]] = {}
        """Per-field validators of a mapping shape (``validate_fields``), made on first use."""
        self._plain: PlainValidator | None | bool = False
        """``plain_validator``'s compiled form (``None``: the shape has none; ``False``: not
        compiled yet)."""

    # -- declarations ------------------------------------------------------------------------

    def index(self, name: str, fields: list[str] | tuple[str, ...]) -> Table:
        """Declare a database index over ``fields`` (then ``_creation_time`` and ``_id``)."""
        fields = tuple(fields)
        self._check_index_name(name)
        if not fields:
            raise UserError(f'Index "{name}" needs at least one field.')
        if len(fields) > MAX_INDEX_FIELDS:
            raise UserError(
                f'Index "{name}" has {len(fields)} fields; the limit is {MAX_INDEX_FIELDS}.'
            )
        if len(set(fields)) != len(fields):
            raise UserError(f'Index "{name}" names a field twice: {list(fields)}.')
        for f in fields:
            self._check_field(name, f)
        self.indexes[name] = IndexSpec(name=name, fields=fields)
        return self

    def search_index(
        self, name: str, *, search_field: str, filter_fields: list[str] | tuple[str, ...] = ()
    ) -> Table:
        """Declare a full-text (BM25) search index over ``search_field``."""
        self._check_index_name(name)
        for f in (search_field, *filter_fields):
            self._check_field(name, f)
        if len(filter_fields) > 16:
            raise UserError(f'Search index "{name}" has more than 16 filter fields.')
        self.indexes[name] = SearchIndexSpec(
            name=name, search_field=search_field, filter_fields=tuple(filter_fields)
        )
        return self

    def vector_index(
        self,
        name: str,
        *,
        vector_field: str,
        dimensions: int,
        filter_fields: list[str] | tuple[str, ...] = (),
    ) -> Table:
        """Declare a vector index (cosine similarity) over ``vector_field``."""
        self._check_index_name(name)
        for f in (vector_field, *filter_fields):
            self._check_field(name, f)
        if not isinstance(dimensions, int) or not 2 <= dimensions <= 4096:
            raise UserError(
                f'Vector index "{name}": dimensions must be an int from 2 to 4096, '
                f"not {dimensions!r}."
            )
        if len(filter_fields) > 16:
            raise UserError(f'Vector index "{name}" has more than 16 filter fields.')
        self.indexes[name] = VectorIndexSpec(
            name=name,
            vector_field=vector_field,
            dimensions=dimensions,
            filter_fields=tuple(filter_fields),
        )
        return self

    def _check_index_name(self, name: str) -> None:
        if not isinstance(name, str) or not _INDEX_NAME.match(name) or len(name) > 64:
            raise UserError(f"Index name {name!r} is not valid: use [A-Za-z][A-Za-z0-9_]*.")
        if name in RESERVED_INDEXES:
            raise UserError(f'Index name "{name}" is reserved.')
        if name in self.indexes:
            raise UserError(f'Index "{name}" is declared twice.')
        if len(self.indexes) >= MAX_INDEXES_PER_TABLE:
            raise UserError(f"A table may have at most {MAX_INDEXES_PER_TABLE} indexes.")

    @staticmethod
    def _check_field(index: str, path: str) -> None:
        if not isinstance(path, str) or not _FIELD_PATH.match(path):
            raise UserError(
                f'Index "{index}": field {path!r} is not a valid field path '
                '(names like "owner" or "meta.kind"; no leading "_").'
            )

    # -- validation --------------------------------------------------------------------------

    def model(self, table: str) -> type[BaseModel] | None:
        """The pydantic model documents are validated with (``None`` when schemaless)."""
        if self._model is None and self.shape is not None:
            self._model = _build_model(table, self.shape)
        return self._model

    def validate(self, table: str, doc: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Validate a document body against the shape; return it with defaults filled in.

        Raises:
            InvalidValueError: naming the table and the first offending field.
        """
        model = self.model(table)
        if model is None:
            return doc
        try:
            obj = model.__pydantic_validator__.validate_python(doc, strict=True, context=context)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(document)"
            raise InvalidValueError(
                f'Document for table "{table}" is not valid: field "{loc}": {_msg(err["msg"])}.',
                table=table,
                field=loc,
            ) from None
        body: dict[str, Any] = obj.model_dump(mode="python")
        return body

    def plain_validator(self, table: str) -> PlainValidator | None:
        """A one-pass validator of a mapping shape of plain field types, or ``None``.

        See ``PlainValidator``: the fast path of ``validate`` plus ``check_document`` for the
        common shapes (scalars, ids, optional scalars, lists of scalars).
        """
        plain = self._plain
        if plain is False:
            plain = self._plain = _plain_validator(self.shape, self.model(table))
        return plain  # type: ignore[return-value]

    def validate_fields(
        self, table: str, fields: dict[str, Any], context: Any = None
    ) -> dict[str, Any] | None:
        """Validate only some fields of a document (a patch); ``None`` when that cannot be done.

        A mapping shape's fields are independent, so a patch that changes some of them needs
        only those validated (the rest were valid when stored). A pydantic model may validate
        fields together (validators, computed defaults): it returns ``None``, as it does for a
        name the shape does not declare (the whole document is then validated, which names
        the problem).

        Raises:
            InvalidValueError: naming the table and the first offending field.
        """
        model = self.model(table)
        if model is None or not isinstance(self.shape, Mapping):
            return None
        declared = model.model_fields
        out: dict[str, Any] = {}
        exact = self._exact
        for name, value in fields.items():
            if type(value) is exact.get(name):
                out[name] = value
                continue
            adapter = self._fields.get(name)
            if adapter is None:
                info = declared.get(name)
                if info is None:
                    return None
                tp: Any = info.annotation
                if info.metadata:
                    tp = typing.Annotated[(tp, *info.metadata)]
                elif tp in (str, int, float, bool):
                    exact[name] = tp
                adapter = self._fields[name] = pydantic.TypeAdapter(tp)
            try:
                valid = adapter.validate_python(value, strict=True, context=context)
            except pydantic.ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in (name, *err["loc"]))
                raise InvalidValueError(
                    f'Document for table "{table}" is not valid: field "{loc}": '
                    f"{_msg(err['msg'])}.",
                    table=table,
                    field=loc,
                ) from None
            # Plain values come back as they went in; only models and the like need a dump.
            out[name] = (
                valid
                if type(valid) in _PLAIN and valid is value
                else adapter.dump_python(valid, mode="python")
            )
        return out

    def fingerprint(self, table: str) -> str:
        """A stable digest of the shape, stored to notice shape changes between opens."""
        if self._fingerprint is None:
            model = self.model(table)
            if model is None:
                text = "schemaless"
            else:
                text = _describe_model(model, set())
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._fingerprint


_PLAIN = (str, int, float, bool, type(None), bytes)

PlainValidator = Callable[[dict[str, Any], Any], "tuple[dict[str, Any], int] | None"]
"""``(body, context) -> (validated body, size)`` or ``None``: one pass over a document body.

The validated body is what ``Table.validate`` returns (declared fields in declaration order,
omitted optional fields ``None``), and the size is what ``check_document`` counts for those
fields (names and values, without the enclosing object's own 2 bytes). ``None`` means "not
this way": the body has a field this pass does not settle (an undeclared or unusual name, a
value of another type, an int to convert, a string to check further, a bad id...), and the
caller takes the full path, which accepts it or raises the usual error. So the pass never
raises for a bad value, and it accepts only what the full path accepts, as the full path
would store it.
"""

_SCALARS = (bool, int, float, str, bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlainField:
    """A field (or argument) type the one-pass checks settle, as ``plain_field`` reads it."""

    types: tuple[type, ...]
    """The exact types a value other than ``None`` may have."""
    optional: bool
    """``None`` is valid (and the default of an omitted mapping field)."""
    is_id: bool = False
    table: str | None = None
    """An id field's table (``None``: any table)."""
    item: type | None = None
    """A list field's item type."""


def plain_field(tp: Any) -> PlainField | None:
    """How the one-pass checks settle a field type, or ``None`` if they do not.

    They settle ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``Id`` and
    ``Id["table"]``, lists of the scalars, and each of these ``| None``.
    """
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            return None
        optional, tp = True, rest[0]
    if tp is None or tp is type(None):
        return PlainField(types=(), optional=True)
    if tp in _SCALARS:
        return PlainField(types=(tp,), optional=optional)
    if tp is Id:
        return PlainField(types=(str, Id), optional=optional, is_id=True)
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        if base is Id and len(meta) == 1 and type(meta[0]) is IdTable:
            return PlainField(types=(str, Id), optional=optional, is_id=True, table=meta[0].table)
    elif origin is list:
        (item,) = typing.get_args(tp) or (None,)
        if item in _SCALARS:
            return PlainField(types=(list,), optional=optional, item=item)
    return None


def scalar_size(v: Any, t: type) -> int | None:
    """``check_document``'s size of a scalar of exact type ``t``; ``None`` if it refuses it."""
    if t is float:
        return 9
    if t is int:
        return 9 if INT64_MIN <= v <= INT64_MAX else None
    if t is bool:
        return 1
    if t is str:
        n = len(v) if v.isascii() else str_size(v)
        return None if n is None else n + 2
    return len(v) + 2  # bytes


def plain_list(value: list[Any], item: type) -> int | None:
    """``check_document``'s size of a list of ``item``s; ``None`` if it is not one it accepts."""
    if len(value) > MAX_ARRAY_ELEMENTS:
        return None
    size = 2
    for x in value:
        t = type(x)
        if t is not item:
            return None
        n = 9 if t is float else scalar_size(x, t)
        if n is None:
            return None
        size += n
    return size


def plain_id(value: str, table: str | None, context: Any) -> Id | None:
    """What an id field validates to (as ``core.ids`` validates it), or ``None`` if not valid."""
    resolver = context.get("resolve_id") if isinstance(context, dict) else None
    try:
        if resolver is not None:
            return resolver(value, table)  # type: ignore[no-any-return]
        decode_table_number(value)
    except InvalidIdError:
        return None
    return value if type(value) is Id else Id(value)


def _converted(v: Any, f: PlainField, context: Any) -> tuple[Any, int] | None:
    """An id or list field's stored value and size, or ``None``."""
    if f.is_id:
        valid = plain_id(v, f.table, context)
        if valid is None:
            return None
        # The full path stores what an ``Id`` serializes to: a plain ``str`` (of 32 ASCII
        # characters, as every valid id).
        return str(valid), len(valid) + 2
    size = plain_list(v, f.item)  # type: ignore[arg-type]
    return None if size is None else (list(v), size)


def _plain_validator(
    shape: Mapping[str, Any] | type[BaseModel] | None, model: type[BaseModel] | None
) -> PlainValidator | None:
    """Compile the one-pass validator of a mapping shape whose every field type it settles."""
    specs = _plain_specs(shape, model)
    if specs is None:
        return None
    names = list(specs)

    def validate(body: dict[str, Any], context: Any) -> tuple[dict[str, Any], int] | None:
        got: dict[str, Any] = {}
        size = 0
        for key, v in body.items():
            spec = specs.get(key)
            if spec is None or type(key) is not str:
                return None
            key_size, f = spec
            t = type(v)
            if v is None:
                if not f.optional:
                    return None
                n = 1
            elif t not in f.types:
                return None
            elif f.is_id or f.item is not None:
                done = _converted(v, f, context)
                if done is None:
                    return None
                v, n = done
            elif t is str and v.isascii():
                n = len(v) + 2
            else:
                scalar = scalar_size(v, t)
                if scalar is None:
                    return None
                n = scalar
            got[key] = v
            size += key_size + n
        if len(got) == len(names):
            return {name: got[name] for name in names}, size
        return _with_omitted(got, size, specs)

    return validate


def _plain_specs(
    shape: Mapping[str, Any] | type[BaseModel] | None, model: type[BaseModel] | None
) -> dict[str, tuple[int, PlainField]] | None:
    """Each field's (name size, ``PlainField``) in declaration order, or ``None``."""
    if model is None or not isinstance(shape, Mapping) or len(shape) + 2 > MAX_FIELDS:
        return None
    if list(model.model_fields) != list(shape):
        return None
    specs: dict[str, tuple[int, PlainField]] = {}
    for name, tp in shape.items():
        f = plain_field(tp)
        if f is None or not name.isascii() or len(name) > 64:
            return None
        specs[name] = (len(name) + 1, f)
    return specs


def _with_omitted(
    got: dict[str, Any], size: int, specs: dict[str, tuple[int, PlainField]]
) -> tuple[dict[str, Any], int] | None:
    """A body some fields were left out of: ``None`` fills the optional ones."""
    out: dict[str, Any] = {}
    for name, (key_size, f) in specs.items():
        if name in got:
            out[name] = got[name]
        elif f.optional:
            out[name] = None
            size += key_size + 1
        else:
            return None
    return out, size


def _describe_model(model: type[BaseModel], seen: set[type]) -> str:
    """Every field of a model, nested models spelled out, so changing one changes the text."""
    seen = seen | {model}
    return repr(
        sorted(
            (n, _type_text(f.annotation, seen), f.is_required(), _default_text(f))
            for n, f in model.model_fields.items()
        )
    )


def _default_text(f: Any) -> str:
    return "" if f.is_required() else _type_text(f.get_default(call_default_factory=False), set())


def _type_text(tp: Any, seen: set[type]) -> str:
    if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
        return f"{tp.__name__}{_describe_model(tp, seen)}"
    args = typing.get_args(tp)
    if args and typing.get_origin(tp) is not typing.Literal:
        origin = typing.get_origin(tp)
        name = getattr(origin, "__qualname__", None) or repr(origin)
        return f"{name}[{', '.join(_type_text(a, seen) for a in args)}]"
    return re.sub(r" at 0x[0-9a-f]+", "", repr(tp))


def _admits_none(tp: Any) -> bool:
    if tp is None or tp is type(None) or tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_admits_none(a) for a in typing.get_args(tp))
    if origin is typing.Annotated:
        return _admits_none(typing.get_args(tp)[0])
    return False


def _build_model(table: str, shape: type[BaseModel] | Mapping[str, Any]) -> type[BaseModel]:
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        for name in shape.model_fields:
            if name.startswith(("_", "$")):
                raise UserError(f'Table "{table}": field "{name}" may not start with "_" or "$".')
        config = {**shape.model_config, "extra": "forbid"}
        # The subclass lives in the shape's module, so forward references resolve where they were
        # written (pydantic rebuilds the model there on first use).
        namespace = {"model_config": config, "__module__": shape.__module__}
        return type(shape.__name__, (shape,), namespace)
    if not isinstance(shape, Mapping):
        raise UserError(
            f'Table "{table}": the shape must be a pydantic model or a mapping of field to '
            f"type, not {type(shape).__name__}."
        )
    fields: dict[str, Any] = {}
    for name, tp in shape.items():
        if not isinstance(name, str) or name.startswith(("_", "$")):
            raise UserError(f'Table "{table}": field {name!r} may not start with "_" or "$".')
        fields[name] = (tp, None) if _admits_none(tp) else (tp, ...)
    try:
        return pydantic.create_model(
            f"{table}_document", __config__=ConfigDict(extra="forbid"), **fields
        )
    except (pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise UserError(f'Table "{table}": unsupported field type: {exc}') from None


@dataclass(slots=True)
class Schema:
    """The app's (or a component's) tables; ``strict=False`` also allows undeclared tables."""

    tables: dict[str, Table] = field(default_factory=dict)
    strict: bool = True

    def __init__(self, *, strict: bool = True, **tables: Table):
        for name, table in tables.items():
            check_table_name(name)
            if not isinstance(table, Table):
                raise UserError(f'Schema entry "{name}" must be a Table, not {type(table)}.')
        self.tables = dict(tables)
        self.strict = strict


def _msg(text: str) -> str:
    """Pydantic's message without its "Value error, " prefix and final period."""
    return text.removeprefix("Value error, ").rstrip(".")
