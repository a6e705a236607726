"""The package's structure: its import graph has no cycle (every import a module runs,
at the top or inside a function, points down the graph; those only a type checker
reads do not count), and only image.py touches an image's file object."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

from ourcmd import REPO

PACKAGE = REPO / "qcow2kit"


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: Set[str]) -> Set[str]:
    """The package modules that a module imports when it runs."""
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:  # from . import a, b
                found.update(a.name for a in node.names if a.name in modules)
            elif node.level == 1 or (node.module or "").startswith("qcow2kit."):
                name = (node.module or "").removeprefix("qcow2kit.").split(".")[0]
                if name in modules:
                    found.add(name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "qcow2kit" and len(parts) > 1 and parts[1] in modules:
                    found.add(parts[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> Dict[str, Set[str]]:
    files = {p.stem: p for p in PACKAGE.glob("*.py")}
    modules = set(files) - {"__init__", "__main__"}
    return {name: _imports(ast.parse(path.read_text()), modules) - {name}
            for name, path in files.items() if name in modules}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle through each strongly connected part that has one."""
    found, state = [], {}  # state: 1 on the path, 2 done
    path: List[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20 and graph["cli"]  # the graph was read
    assert cycles(graph) == []


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_only_image_touches_the_file() -> None:
    """Every module reads an image's file through Image (image.py), none through its
    private file object."""
    touching = sorted(p.name for p in PACKAGE.glob("*.py")
                      if p.name != "image.py" and "._file" in p.read_text())
    assert touching == []
