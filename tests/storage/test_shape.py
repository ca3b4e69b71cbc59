"""The storage package's modules import one another without a cycle (type-only
imports included): the S3 writer and the S3 storage share _s3_client instead
of reaching into each other."""

from __future__ import annotations

import ast
from pathlib import Path

import mongosnap.storage

PACKAGE = Path(mongosnap.storage.__file__).parent


def imports(module: Path) -> set[str]:
    """The sibling modules a storage module imports (``from .x import ...``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_storage_modules_import_without_a_cycle() -> None:
    graph = {p.stem: imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done or name not in graph:
            return
        for target in sorted(graph[name]):
            visit(target, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())
    assert "s3" not in graph["_s3_writer"] and "_s3_writer" not in graph["_s3_client"]
