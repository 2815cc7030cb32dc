"""The house's layering, read from the source: imports point one way and never in a circle.

Every module of ``aigw_sidecar`` is imported (a module that no longer imports
fails here first), and its imports are read with ``ast``, those inside functions
(and under ``TYPE_CHECKING``) included: an import moved into a function is still
a dependency, and hiding a cycle that way is what these tests are for. The
layers are those of STYLE.md: the transport (``server/``) and the store
(``store/``) both depend on the domain, never the other way round, and only the
composition root (``bootstrap.py``, and ``cli.py`` for the supervisor) knows both.

Known exceptions go in the allow-lists below, each with the file that needs it;
remove the entry when that file is fixed (a test also fails on an entry that
nothing needs any more).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import aigw_sidecar

PACKAGE = "aigw_sidecar"
# The domain: its packages, and the top-level modules at its level.
DOMAIN = ("keys", "admission", "limits", "pricing", "errors", "event_fields")
TRANSPORT = f"{PACKAGE}.server"
STORE = f"{PACKAGE}.store"
# Neither gRPC nor Redis nor their generated messages belong in the domain.
DOMAIN_FORBIDDEN = ("grpc", "grpc_health", "grpc_reflection", "redis", "google.protobuf",
                    f"{PACKAGE}.api", TRANSPORT, STORE)

# (importer, imported) pairs the domain rule allows for now. None today.
KNOWN_DOMAIN_IMPORTS: frozenset[tuple[str, str]] = frozenset()
# (importer, "module:name") private names used across modules for now. None today:
# store/redis_store.py keeps a private _store_errors of its own, which nothing imports
# any more (store/errors.py has the public store_errors()).
KNOWN_PRIVATE_IMPORTS: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # absolute: the module imported, or imported from
    names: tuple[str, ...]  # the names of ``from module import ...``; () for ``import module``
    bound: tuple[str, ...]  # the local names the statement binds


def module_names() -> list[str]:
    found = [PACKAGE]
    found += [info.name for info in pkgutil.walk_packages(aigw_sidecar.__path__, f"{PACKAGE}.")]
    return sorted(found)


MODULES = module_names()
KNOWN_MODULES = frozenset(MODULES)


@cache
def source_of(module: str) -> tuple[ast.Module, bool]:
    """The module's syntax tree, and whether it is a package (its ``__init__.py``)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    path = Path(spec.origin)
    return ast.parse(path.read_text(encoding="utf-8"), str(path)), path.name == "__init__.py"


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    base = parts if source_of(importer)[1] else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    found: list[Import] = []
    for node in ast.walk(source_of(module)[0]):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, (), (alias.asname or alias.name.split(".")[0],))
                      for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(Import(
                _absolute(module, node),
                tuple(alias.name for alias in node.names),
                tuple(alias.asname or alias.name for alias in node.names),
            ))
    return tuple(found)


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(f"{PACKAGE}.")


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in prefixes)


def _generated(module: str) -> bool:
    return module.endswith(("_pb2", "_pb2_grpc"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def imported_modules(imp: Import) -> list[str]:
    """What one statement depends on: ``from pkg import mod`` is ``pkg.mod``, else ``pkg``."""
    submodules = [f"{imp.module}.{name}" for name in imp.names
                  if f"{imp.module}.{name}" in KNOWN_MODULES]
    if not imp.names or len(submodules) < len(imp.names):
        return [*submodules, imp.module]
    return submodules


def depends_on(importers: Iterable[str], prefixes: Iterable[str],
               generated: bool = False) -> set[tuple[str, str]]:
    """(importer, imported) for each import of a module under ``prefixes`` (or a *_pb2)."""
    prefixes = tuple(prefixes)
    found = set()
    for module in importers:
        for imp in imports_of(module):
            for target in imported_modules(imp):
                if _within(target, prefixes) or (generated and _generated(target)):
                    found.add((module, target))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                on_stack.discard(top)
                component.append(top)
            on_stack.discard(node)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _in_domain(module: str) -> bool:
    return _within(module, (f"{PACKAGE}.{name}" for name in DOMAIN))


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_no_module_of_the_package_imports_itself_in_a_circle() -> None:
    # Explicit imports only: ``import a.b`` also runs ``a/__init__``, but a package that
    # re-exports its modules (httpx's shape) is no cycle unless one of them imports the
    # package back, and that import is explicit.
    graph = {
        module: {target for imp in imports_of(module) for target in imported_modules(imp)
                 if _ours(target) and target != module}
        for module in MODULES
    }
    assert _cycles(graph) == []


def test_the_domain_imports_neither_grpc_nor_redis_nor_the_transport_nor_the_store() -> None:
    domain = [m for m in MODULES if _in_domain(m)]
    assert depends_on(domain, DOMAIN_FORBIDDEN, generated=True) == KNOWN_DOMAIN_IMPORTS


def test_the_store_imports_nothing_from_the_transport() -> None:
    store = [m for m in MODULES if _within(m, [STORE])]
    assert depends_on(store, [TRANSPORT]) == set()


def test_the_transport_imports_nothing_from_the_store() -> None:
    # Only the composition root wires a store into the servicers (bootstrap.py).
    transport = [m for m in MODULES if _within(m, [TRANSPORT])]
    assert depends_on(transport, [STORE]) == set()


def test_the_supervisor_imports_nothing_from_the_transport_nor_the_cli() -> None:
    # cli.py hands it the metrics endpoint it serves (supervisor.WorkerMetrics).
    assert depends_on([f"{PACKAGE}.supervisor"], [TRANSPORT, f"{PACKAGE}.cli"]) == set()


def _private_uses(module: str) -> Iterator[str]:
    """Every private name of another module of the package this module uses."""
    aliases: dict[str, str] = {}  # local name -> our module it stands for
    for imp in imports_of(module):
        if not _ours(imp.module):
            continue
        if any(_private(part) for part in imp.module.split(".")):
            yield imp.module
        if not imp.names:
            if imp.bound[0] != PACKAGE:  # ``import aigw_sidecar.x as y``
                aliases[imp.bound[0]] = imp.module
            continue
        for name, bound in zip(imp.names, imp.bound, strict=True):
            if _private(name):
                yield f"{imp.module}:{name}"
            elif f"{imp.module}.{name}" in KNOWN_MODULES:
                aliases[bound] = f"{imp.module}.{name}"
    for node in ast.walk(source_of(module)[0]):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            yield f"{aliases[node.value.id]}:{node.attr}"


def test_no_private_name_is_used_by_another_module() -> None:
    found = {(module, use) for module in MODULES if not _generated(module)
             for use in _private_uses(module)}
    assert found == KNOWN_PRIVATE_IMPORTS
