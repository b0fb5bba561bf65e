"""The layout rules of docs/architecture.md, read from the source: imports point down the stack of rooms,
no module imports another's private names, and an import of the package inside a function says why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "restore"

# Bottom to top; a room may import the rooms before it (and itself).
FOUNDATION = ("errors", "fileio", "options", "plugins", "distributed", "transfer", "openclip_files", "__version__")
ROOMS = ["foundation", "clip", "data", "methods", "analysis", "results", "engine", "scale", "front"]
FRONT = ("api", "cli", "__main__", "__init__", "world")
# Upward imports made on purpose, inside a function with a comment (docs/architecture.md "Exceptions").
EXCEPTIONS = {
    ("results/diff.py", "engine"),
    ("results/grouping.py", "engine"),
}


def _room(module: str) -> str:
    """The room of a dotted module name inside the package (``restore.engine.plan`` -> ``engine``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "foundation"  # `import restore`: the package's location or version
    head = parts[1]
    if head in FOUNDATION:
        return "foundation"
    if head in FRONT or parts[-1].endswith("_commands"):
        return "front"
    return head


def _room_of_file(path: Path) -> str:
    rel = path.relative_to(SRC)
    if rel.name.endswith("_commands.py"):
        return "front"  # a room's command-line face is part of the CLI
    return _room("restore." + ".".join(rel.with_suffix("").parts))


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str, list[str], bool]]:
    """(node, module, imported names, inside a function) of every import of the package."""
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.module and child.module.split(".")[0] == "restore":
                names = [a.name for a in child.names]
                if child.module == "restore":  # from restore import distributed
                    out.extend((child, f"restore.{n}", [], in_function) for n in names)
                else:
                    out.append((child, child.module, names, in_function))
            elif isinstance(child, ast.Import):
                out.extend((child, a.name, [], in_function) for a in child.names if a.name.startswith("restore"))
            visit(child, inner)

    visit(tree, False)
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def _said(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the import, or above the block of imports it stands in."""
    if "#" in lines[node.lineno - 1] or "#" in lines[node.end_lineno - 1]:
        return True
    i = node.lineno - 2
    while i >= 0 and (lines[i].strip().startswith(("from ", "import ", ")")) or lines[i].rstrip().endswith(",")):
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down_the_rooms_and_say_why_when_inside_a_function(path):
    text = path.read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    own = _room_of_file(path)
    typing_only = _type_checking_only(tree)
    rel = path.relative_to(SRC).as_posix()
    for node, module, names, in_function in _imports(tree):
        if node.lineno in typing_only:
            continue
        target = _room(module)
        where = f"{rel}:{node.lineno} imports {module}"
        if own != "front" and target != own and (rel, target) not in EXCEPTIONS:
            assert ROOMS.index(target) < ROOMS.index(own), f"{where}: {own} may not import {target} (points up)"
        for name in names:
            module_file = SRC.joinpath(*module.split(".")[1:])
            is_submodule = module_file.with_name(module_file.name).is_dir() and (module_file / f"{name}.py").exists()
            assert not name.startswith("_") or is_submodule or name == "__version__", f"{where}: private {name}"
        if in_function:
            assert _said(lines, node), (
                f"{where} inside a function without a comment saying why (slow, optional, a cycle)"
            )


def test_the_rules_see_what_they_check():
    """The checker itself: an upward import, a private name and a silent function-level import are found."""
    tree = ast.parse(
        "from restore.engine.plan import plan_run\n"
        "from restore.methods.base import _REGISTRY\n"
        "def f():\n    from restore.scale.sweep import run_sweep\n"
    )
    found = _imports(tree)
    assert [(m, n, inner) for _, m, n, inner in found] == [
        ("restore.engine.plan", ["plan_run"], False),
        ("restore.methods.base", ["_REGISTRY"], False),
        ("restore.scale.sweep", ["run_sweep"], True),
    ]
    assert ROOMS.index(_room("restore.engine.plan")) > ROOMS.index("methods")
    assert _room("restore.distributed") == "foundation" and _room("restore.data.dataset_commands") == "front"
