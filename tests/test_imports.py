"""The import graph of `helpers`, read from the source with `ast` (nothing is imported, so no framework loads).

Every `import helpers...` and `from helpers... import ...` counts, absolute or relative, at the top of a module or
inside a function (a late import is marked "late" in the messages; it still runs, so it still counts). Held here:
- no import cycle between modules;
- no module uses another module's private name (`from helpers.x import _y`, or `x._y` on a module it imported);
- no base layer (helpers/chapters.py, `BASE_LAYERS`) imports a chapter's module: chapters build on the base, not
  the reverse. `training.py` in each wing is a base layer.
Today's exceptions are listed below (issue 20, part 4, says how they go). Each list only shrinks: a new cycle,
private import or base-to-chapter import fails, and so does a listed one that has gone (delete its line).
Imports made by name at run time (`importlib.import_module`) are not seen.
"""

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.chapters import BASE_LAYERS, BASE_PACKAGES, module_path

ROOT = Path(__file__).resolve().parent.parent

# Edges that lie on a cycle, importer -> imported (none left: the builder of EfficientNet-Lite0 that torch/models.py
# needs left torch/backbones.py, which imports models, for its own module).
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()

# (importer, module, private name): none left (issue 20 made the shared names public, mostly in each wing's core;
# chapter 20's text-tower helpers use text_classification's text_backbone, token_arrays and token_tensors).
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()

# Base layer -> the chapter modules it imports.
KNOWN_BASE_TO_CHAPTER: dict[str, set[str]] = {}  # none left: training imports core, not chapters 3 and 16


@dataclass(frozen=True)
class Import:
    target: str  # a module of helpers
    line: int
    late: bool  # inside a function


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_dotted(p): p for p in sorted((ROOT / "helpers").rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _base_of(importer: str, node: ast.ImportFrom) -> str | None:
    """The module a `from X import ...` reads from, relative imports resolved."""
    if not node.level:
        return node.module
    parts = importer.split(".") if importer in PACKAGES else importer.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


@functools.cache
def _parse(module: str) -> tuple[list[Import], list[tuple[str, str, int]]]:
    """A module's imports of helpers modules, and its uses of other modules' private names (module, name, line)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    late = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for inner in ast.walk(node)
        if inner is not node
    }
    imports, private, aliases = [], [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    imports.append(Import(alias.name, node.lineno, id(node) in late))
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (base := _base_of(module, node)) in MODULES:
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:
                    imports.append(Import(submodule, node.lineno, id(node) in late))
                    aliases[alias.asname or alias.name] = submodule
                else:
                    imports.append(Import(base, node.lineno, id(node) in late))
                    private.append((base, alias.name, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            private.append((aliases[node.value.id], node.attr, node.lineno))
    private = [(m, name, line) for m, name, line in private if m != module and _is_private(name)]
    return [i for i in imports if i.target != module], private


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _graph() -> dict[str, set[str]]:
    return {module: {i.target for i in _parse(module)[0]} for module in MODULES}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _cycle_edges() -> set[tuple[str, str]]:
    """Every import a -> b that lies on a cycle (a is reachable again from b)."""
    graph = _graph()
    return {(a, b) for a in graph for b in graph[a] if a in _reachable(graph, b)}


def _describe(a: str, b: str) -> str:
    where = [f"line {i.line}" + (" (late)" if i.late else "") for i in _parse(a)[0] if i.target == b]
    return f"{MODULES[a].relative_to(ROOT)} imports {b} at {', '.join(where)}"


def _private_uses() -> set[tuple[str, str, str]]:
    return {(module, target, name) for module in MODULES for target, name, _ in _parse(module)[1]}


BASE = {_dotted(ROOT / module_path(level, stem)) for level, stems in BASE_LAYERS.items() for stem in stems}
BASE |= {_dotted(p) for stem in BASE_PACKAGES for p in (ROOT / "helpers" / stem).rglob("*.py")}  # and their modules


def _base_to_chapter(base: str) -> set[str]:
    """The chapter modules (anything that is not a base layer) that a base layer imports; packages re-export theirs."""
    if base in PACKAGES:
        return set()
    return {i.target for i in _parse(base)[0]} - BASE


# ----------------------------------------------------------------------------- the parser sees what is there


def test_the_graph_finds_every_module_and_its_imports():
    assert {"helpers", "helpers.torch", "helpers.keras", "helpers.torch.training", "helpers.keras.models"} <= set(
        MODULES
    )
    assert {"helpers.torch.training", "helpers.torch.models"} <= _graph()["helpers.torch"]
    late = [i for i in _parse("helpers.plots")[0] if i.late]
    assert "helpers.metrics" in {i.target for i in late}, "an import inside a function counts"
    assert BASE <= set(MODULES), sorted(BASE - set(MODULES))


def test_relative_imports_resolve_like_absolute_ones():
    node = ast.parse("from ..checks import count\nfrom . import training").body
    assert _base_of("helpers.torch.models", node[0]) == "helpers.checks"
    assert _base_of("helpers.torch.models", node[1]) == "helpers.torch"
    assert _base_of("helpers.torch", node[1]) == "helpers.torch"


# ----------------------------------------------------------------------------- cycles


def test_no_new_import_cycle():
    new = _cycle_edges() - KNOWN_CYCLE_EDGES
    assert not new, "new import cycle(s): " + "; ".join(_describe(a, b) for a, b in sorted(new))


def test_the_known_cycles_only_shrink():
    gone = KNOWN_CYCLE_EDGES - _cycle_edges()
    assert not gone, f"no longer on a cycle: delete {sorted(gone)} from KNOWN_CYCLE_EDGES"


# ----------------------------------------------------------------------------- private names


def test_no_new_import_of_a_private_name():
    new = _private_uses() - KNOWN_PRIVATE
    assert not new, (
        "a module uses another module's private name (make it public, or move it into the module that uses it): "
        + "; ".join(f"{a} uses {b}.{name}" for a, b, name in sorted(new))
    )


def test_the_known_private_imports_only_shrink():
    gone = KNOWN_PRIVATE - _private_uses()
    assert not gone, f"gone: delete {sorted(gone)} from KNOWN_PRIVATE"


# ----------------------------------------------------------------------------- base layers and chapters


@pytest.mark.parametrize("base", sorted(BASE - PACKAGES))
def test_a_base_layer_imports_no_chapter_module(base):
    """Among them helpers.torch.training and helpers.keras.training (`pytest -k training`)."""
    found, known = _base_to_chapter(base), KNOWN_BASE_TO_CHAPTER.get(base, set())
    assert not found - known, "; ".join(_describe(base, target) for target in sorted(found - known))
    assert not known - found, f"{base} no longer imports {sorted(known - found)}: delete from KNOWN_BASE_TO_CHAPTER"


def test_the_known_base_imports_name_base_layers():
    assert set(KNOWN_BASE_TO_CHAPTER) <= BASE - PACKAGES
