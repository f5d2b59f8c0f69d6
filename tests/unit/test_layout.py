"""The layout holds: the modules of ``authserver`` import each other without a cycle, every
blueprint is created in the module that defines its routes, and the app factory registers
every blueprint.

Read from the source with ``ast`` (nothing is imported): only module-level imports count,
not those inside functions (imported when called) or under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "authserver"

# Import cycles known and not broken yet, as (module, module) pairs that may import each
# other. Empty when the layout is as it should be.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: at the top level, or inside a
    top-level ``if``/``try``/``with`` (but not the ``if TYPE_CHECKING:`` branch)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for handler in node.handlers:
                    walk(handler.body)
                walk(node.orelse)
                walk(node.finalbody)
            elif isinstance(node, ast.With):
                walk(node.body)

    walk(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports at module level."""
    trees = modules()
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, tree in trees.items():
        is_package = name == "authserver" or (PACKAGE.parent / name.replace(".", "/")
                                              / "__init__.py").exists()
        package = name if is_package else name.rpartition(".")[0]
        for node in module_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    origin = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    origin = node.module or ""
                # ``from .x import y``: y is a module of the package, or a name in x.
                targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in trees
                           else origin for alias in node.names]
            for target in targets:
                while target and target not in trees:  # ``import a.b.c`` imports a.b.c
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if frozenset((node, target)) in KNOWN_CYCLES:
                continue
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_modules_import_each_other_without_a_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _blueprints_created(tree: ast.Module) -> set[str]:
    """The module-level names assigned ``Blueprint(...)``."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called == "Blueprint":
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


# What adds to a blueprint, called (``bp.after_request(f)``) or as a decorator; the
# shortcuts ``get``, ``post``, ... only as decorators (``claims.get(...)`` is no route).
BLUEPRINT_METHODS = {"route", "add_url_rule", "after_request", "before_request",
                     "app_template_filter", "errorhandler"}
ROUTE_DECORATORS = BLUEPRINT_METHODS | {"get", "post", "put", "patch", "delete"}


def _blueprints_used(tree: ast.Module) -> set[str]:
    """The names this module adds routes or request hooks to (``@bp.get(...)``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else decorator
                if (isinstance(call, ast.Attribute) and call.attr in ROUTE_DECORATORS
                        and isinstance(call.value, ast.Name)):
                    names.add(call.value.id)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in BLUEPRINT_METHODS and isinstance(node.func.value, ast.Name)):
            names.add(node.func.value.id)
    return names


def test_each_blueprint_is_created_where_its_routes_are():
    blueprints = 0
    for name, tree in modules().items():
        created = _blueprints_created(tree)
        blueprints += len(created)
        used = _blueprints_used(tree) - {"app"}  # the app factory and its error handlers
        foreign = used - created
        assert not foreign, f"{name}: routes on a blueprint made elsewhere: {foreign}"
    assert blueprints >= 10


def test_the_app_factory_registers_every_blueprint():
    """Every blueprint is in ``app.BLUEPRINTS``, which ``create_app`` registers."""
    app_module = importlib.import_module("authserver.app")
    registered = {id(blueprint) for blueprint in app_module.BLUEPRINTS}
    for name, tree in modules().items():
        for variable in _blueprints_created(tree):
            blueprint = getattr(importlib.import_module(name), variable)
            assert id(blueprint) in registered, f"{name}.{variable} is not registered"
    factory = next(node for node in modules()["authserver.app"].body
                   if isinstance(node, ast.FunctionDef) and node.name == "create_app")
    loops = [node for node in ast.walk(factory) if isinstance(node, ast.For)
             and isinstance(node.iter, ast.Name) and node.iter.id == "BLUEPRINTS"]
    assert loops and "register_blueprint" in ast.unparse(loops[0])
