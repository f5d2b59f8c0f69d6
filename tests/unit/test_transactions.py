"""The domain owns the transaction (docs/design.md, "Transactions"), checked on the source.

- Nothing outside ``authserver/domain/`` and ``authserver/storage/`` calls ``.commit()`` or
  ``.flush()``: endpoints, pages, CLI commands and grants leave that to the domain.
- Nothing outside the domain calls a domain function that joins the caller's transaction
  (its docstring says "Joins the caller's transaction").
- A public domain function that commits says so in its docstring ("Commits." or "One
  transaction."), and no docstring says "the caller commits".
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "authserver"
OWNERS = ("domain", "storage")  # the packages that may commit (storage: its own transactions)
JOINS = "Joins the caller's transaction"


def _modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _in(module: str, package: str) -> bool:
    return module == f"authserver.{package}" or module.startswith(f"authserver.{package}.")


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"


def _method_calls(tree: ast.Module, names: tuple[str, ...]) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in names):
            yield node


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(path):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _doc(node: ast.FunctionDef | ast.ClassDef | ast.Module) -> str:
    """The docstring on one line (a phrase may be broken across lines)."""
    return " ".join((ast.get_docstring(node) or "").split())


def _joining_functions() -> set[tuple[str, str]]:
    """(module, function) of every domain function documented as joining a transaction."""
    found = set()
    for module, _, tree in _modules():
        if not _in(module, "domain"):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and JOINS in _doc(node):
                found.add((module, node.name))
    return found


def test_only_the_domain_and_storage_commit() -> None:
    offenders = [
        f"{_where(path, call)}: .{call.func.attr}()"  # type: ignore[attr-defined]
        for module, path, tree in _modules()
        if not any(_in(module, owner) for owner in OWNERS)
        for call in _method_calls(tree, ("commit", "flush"))
    ]
    assert offenders == [], 'only the domain commits (docs/design.md, "Transactions"):\n' \
        + "\n".join(offenders)


def test_nothing_outside_the_domain_joins_its_transactions() -> None:
    joining = _joining_functions()
    assert ("authserver.domain.audit", "record") in joining, "the check finds none"
    offenders = []
    for module, path, tree in _modules():
        if _in(module, "domain"):
            continue
        modules: dict[str, str] = {}  # local name -> domain module
        functions: dict[str, tuple[str, str]] = {}  # local name -> (domain module, function)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, path, node)
                for alias in node.names:
                    local = alias.asname or alias.name
                    if source == "authserver.domain":  # from ..domain import sessions
                        modules[local] = f"{source}.{alias.name}"
                    elif _in(source, "domain"):  # from ..domain.sessions import end_device
                        functions[local] = (source, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _in(alias.name, "domain") and alias.asname:
                        modules[alias.asname] = alias.name
        for node in ast.walk(tree):
            target = None
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                target = (modules[node.value.id], node.attr)
            elif isinstance(node, ast.Name) and node.id in functions:
                target = functions[node.id]
            if target in joining:
                offenders.append(f"{_where(path, node)}: {target[0]}.{target[1]}")
    assert offenders == [], ("these join a domain transaction; call a domain function that "
                             "commits instead:\n" + "\n".join(offenders))


def _commits(function: ast.FunctionDef) -> bool:
    return any(True for _ in _method_calls(ast.Module(body=function.body, type_ignores=[]),
                                           ("commit",)))


def test_domain_docstrings_say_who_commits() -> None:
    problems = []
    for module, path, tree in _modules():
        if not (_in(module, "domain") or _in(module, "storage")):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
                continue
            if "caller commits" in _doc(node):
                problems.append(f"{_where(path, node)}: says \"the caller commits\"")
        if not _in(module, "domain"):
            continue
        for node in tree.body:
            if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
                    and _commits(node)):
                doc = _doc(node)
                if "Commits" not in doc and "One transaction" not in doc:
                    problems.append(f"{_where(path, node)}: {node.name} commits; its "
                                    "docstring should say \"Commits.\"")
    assert problems == [], "\n".join(problems)
