"""Each chapter is written once: its source generates its two notebooks and its side-by-side page fragment.

A chapter's source is `book/NN_slug/<stem>.src.md`, a MyST Markdown notebook that jupytext reads
(https://jupytext.readthedocs.io, format `md:myst`). Every cell goes into both notebooks unless its metadata names
one framework:

    ```{code-cell}                              +++ {"framework": "keras"}
    :framework: torch
                                                Prose that only the Keras notebook has.
    model.train()
    ```

From `<stem>.src.md` this script writes, next to it:
- `<stem>_torch.ipynb` and `<stem>_keras.ipynb`: the cells of each framework, in source order, without outputs, with
  the notebook metadata of the source's front matter (kernelspec, language_info; `framework_metadata: {keras: ...}`
  overrides it for one notebook). `torch_id` / `keras_id` in a cell's metadata give its id in that notebook; a cell
  without one gets an id derived from its text, so regenerating never changes ids.
- `differences.md`: every run of framework-specific cells, PyTorch | Keras, in sphinx-design tabs of the sync group
  `framework`, under the heading of the notebook section it comes from. The chapter's `index.md` includes it.
  Code is shown as code blocks (jupyter-book does not execute code inside a tab-set); prose is rendered.

Before writing, each notebook's code is checked for the other framework (`import torch`, `torch.` in a Keras
notebook; `keras.`, `tf.` in a PyTorch one): a cell marked for the wrong framework, or left shared, fails.

    python scripts/chapters.py            # write every chapter's notebooks and fragment (`make notebooks`)
    python scripts/chapters.py --check    # write nothing; fail if a committed file differs from its source
    python scripts/chapters.py book/02_feature_extraction   # only these chapters

The generated files are committed (launch links, nbval, the claims ledger and `make lab` read them as they are);
tests/test_chapters.py fails when one differs from what its source generates. Never edit them by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SUFFIX = ".src.md"
FRAGMENT = "differences.md"
FRAMEWORKS = ("torch", "keras")
LABELS = {"torch": "PyTorch", "keras": "Keras"}
ID_KEYS = {framework: f"{framework}_id" for framework in FRAMEWORKS}
SYNC_GROUP = "framework"
# Names whose use in code means the other framework: imported, or used as a module (`torch.`, `keras.layers`).
FOREIGN = {"torch": {"keras", "tensorflow", "tf", "tf_keras"}, "keras": {"torch", "torchvision", "nn"}}


class SourceError(ValueError):
    """A chapter source that cannot be turned into notebooks; the message names the file, line and fix."""


@dataclass
class Cell:
    kind: str  # "code" or "markdown"
    source: str
    framework: str | None  # None: both notebooks
    ids: dict[str, str]  # framework -> cell id in that notebook (may be empty)
    metadata: dict  # what goes into the notebook cell's metadata
    line: int  # where the cell starts in the source file (1-based)


@dataclass
class Chapter:
    path: Path
    metadata: dict  # notebook metadata shared by both notebooks
    framework_metadata: dict[str, dict]
    cells: list[Cell] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.name.removesuffix(SUFFIX)

    def notebook_path(self, framework: str) -> Path:
        return self.path.with_name(f"{self.stem}_{framework}.ipynb")


# ----------------------------------------------------------------------------- reading a source


def sources(paths: list[str] | None = None) -> list[Path]:
    """The chapter sources: every `book/*/*.src.md`, or those in the given chapter folders or files."""
    if not paths:
        return sorted(BOOK.glob(f"*/*{SUFFIX}"))
    found = []
    for name in paths:
        path = Path(name).resolve()
        found += sorted(path.glob(f"*{SUFFIX}")) if path.is_dir() else [path]
    return found


def read_chapter(path: Path, text: str | None = None) -> Chapter:
    """Parse a chapter source (jupytext MyST) and check its cell markers."""
    import jupytext
    from jupytext.myst import myst_to_notebook

    text = path.read_text(encoding="utf-8") if text is None else text
    try:
        nb = jupytext.reads(text, fmt="md:myst")
    except Exception as error:  # jupytext names the cell and line
        raise SourceError(f"{path}: {error}") from error
    lines = myst_to_notebook(text, add_source_map=True).metadata["source_map"]
    metadata = {k: v for k, v in nb.metadata.items() if k not in ("jupytext", "framework_metadata")}
    per_framework = nb.metadata.get("framework_metadata") or {}
    for name in per_framework:
        if name not in FRAMEWORKS:
            raise SourceError(f"{path}: framework_metadata: {name!r} is not one of {', '.join(FRAMEWORKS)}")
    chapter = Chapter(path, metadata, per_framework)
    text_lines = text.splitlines()
    for index, cell in enumerate(nb.cells):
        chapter.cells.append(_cell(path, cell, _first_line(cell.cell_type, lines[index], text_lines)))
    _check_ids(chapter)
    return chapter


def _first_line(kind: str, mapped: int, text_lines: list[str]) -> int:
    """The 1-based line that starts a cell: a code cell's ```{code-cell} line, a markdown cell's `+++` line (where
    its metadata is) or else its first line of text. `mapped` is jupytext's source map entry for the cell."""
    if kind == "code":
        return mapped
    if mapped > 0 and text_lines[mapped - 1].startswith("+++"):
        return mapped
    while mapped < len(text_lines) and not text_lines[mapped].strip():
        mapped += 1
    return mapped + 1


def _cell(path: Path, cell, line: int) -> Cell:
    where = f"{path.name}, line {line} ({cell.cell_type} cell)"
    if cell.cell_type not in ("code", "markdown"):
        raise SourceError(f"{where}: only code and markdown cells are supported, not {cell.cell_type}")
    metadata = dict(cell.metadata)
    framework = metadata.pop("framework", None)
    if framework is not None and framework not in FRAMEWORKS:
        raise SourceError(
            f"{where}: framework {framework!r} is unknown; expected 'torch' or 'keras' "
            "(leave `framework` out for a cell that both notebooks share)"
        )
    ids = {name: str(metadata.pop(key)) for name, key in ID_KEYS.items() if key in metadata}
    wrong = [ID_KEYS[name] for name in ids if framework not in (None, name)]
    if wrong:
        raise SourceError(f"{where}: a {framework}-only cell cannot carry {', '.join(wrong)}")
    return Cell(cell.cell_type, cell.source, framework, ids, metadata, line)


def _check_ids(chapter: Chapter) -> None:
    for framework in FRAMEWORKS:
        seen: dict[str, int] = {}
        for cell in chapter.cells:
            cell_id = cell.ids.get(framework)
            if cell_id is None:
                continue
            if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", cell_id):
                raise SourceError(
                    f"{chapter.path.name}, line {cell.line}: {ID_KEYS[framework]} {cell_id!r} is not a cell id"
                )
            if cell_id in seen:
                raise SourceError(
                    f"{chapter.path.name}, lines {seen[cell_id]} and {cell.line}: both cells have "
                    f"{ID_KEYS[framework]} {cell_id!r}"
                )
            seen[cell_id] = cell.line


# ----------------------------------------------------------------------------- the two notebooks


def cells_for(chapter: Chapter, framework: str) -> list[Cell]:
    return [cell for cell in chapter.cells if cell.framework in (None, framework)]


def notebook(chapter: Chapter, framework: str) -> dict:
    """The notebook of one framework, as nbformat 4.5 JSON data (no outputs)."""
    cells, used = [], {cell.ids[framework] for cell in chapter.cells if framework in cell.ids}
    for cell in cells_for(chapter, framework):
        cell_id = cell.ids.get(framework) or _derived_id(framework, cell.source, used)
        entry = {"cell_type": cell.kind, "id": cell_id, "metadata": cell.metadata, "source": _lines(cell.source)}
        if cell.kind == "code":
            entry.update(execution_count=None, outputs=[])
        cells.append(entry)
    metadata = {**chapter.metadata, **chapter.framework_metadata.get(framework, {})}
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def _derived_id(framework: str, source: str, used: set[str]) -> str:
    """A stable id for a cell written without one: from its text (and a counter for repeated text)."""
    for n in range(1000):
        cell_id = hashlib.sha1(f"{framework}\0{n}\0{source}".encode()).hexdigest()[:8]
        if cell_id not in used:
            used.add(cell_id)
            return cell_id
    raise AssertionError("no free cell id")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def dumps(nb: dict) -> str:
    """A notebook as `nbformat.write` writes it (sorted keys, one-space indent, UTF-8 text, final newline)."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False, separators=(",", ": ")) + "\n"


# ----------------------------------------------------------------------------- a cell in the wrong notebook


def foreign_names(code: str, framework: str) -> list[str]:
    """Names of the other framework that `code` imports or uses as a module (`torch.nn`, `import keras`).

    Strings and comments do not count; a line that Python cannot tokenize (an IPython magic) is read as plain text.
    """
    foreign = FOREIGN[framework]
    found: list[str] = []
    try:
        tokens = [
            t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type in (tokenize.NAME, tokenize.OP)
        ]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return sorted({m for m in re.findall(r"\b(\w+)\s*\.", code) if m in foreign})
    for i, token in enumerate(tokens):
        if token.type != tokenize.NAME or token.string not in foreign:
            continue
        before = tokens[i - 1].string if i else ""
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        previous_attribute = before == "."  # `book.torch` is the book's attribute, not the module
        if not previous_attribute and (after == "." or before in ("import", "from") or _imported_from(tokens, i)):
            found.append(token.string)
    return sorted(set(found))


def _imported_from(tokens, i: int) -> bool:
    """`from helpers import torch as book`, `import numpy, torch`: the name is part of an import statement."""
    line = tokens[i].start[0]
    first = next(t for t in tokens if t.start[0] == line)
    return first.string in ("import", "from")


def leaks(chapter: Chapter) -> list[str]:
    """Every code cell that would put one framework's code into the other framework's notebook."""
    problems = []
    for framework in FRAMEWORKS:
        for cell in cells_for(chapter, framework):
            names = foreign_names(cell.source, framework) if cell.kind == "code" else []
            if names:
                marked = f"marked {cell.framework}" if cell.framework else "shared (no framework)"
                problems.append(
                    f"{chapter.path.name}, line {cell.line}: a code cell {marked} uses {', '.join(names)} "
                    f"in the {LABELS[framework]} notebook; mark it `framework: "
                    f"{'keras' if framework == 'torch' else 'torch'}` or remove the {', '.join(names)} code"
                )
    return problems


# ----------------------------------------------------------------------------- the differences, side by side

HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$", re.M)
TITLE_SUFFIX = re.compile(r" — (PyTorch|Keras)$", re.M)
OPENING = "Title, objectives and set-up"


@dataclass
class Run:
    """Consecutive framework-specific cells in one notebook section: what one tab-set shows."""

    section: str  # the heading of the notebook section they are in
    cells: dict[str, list[Cell]]  # framework -> its cells, in order


def runs(chapter: Chapter) -> list[Run]:
    """Every stretch of framework-specific cells, cut where a section starts, with the section's heading.

    Each cell's section is read in its own notebook (the headings of the two notebooks are the same), so a pair of
    cells that opens a section starts a new tab-set under that section's heading.
    """
    found: list[Run] = []
    current: Run | None = None
    section = {framework: "" for framework in FRAMEWORKS}
    for cell in chapter.cells:
        frameworks = [cell.framework] if cell.framework else list(FRAMEWORKS)
        opening = HEADING.match(cell.source) if cell.kind == "markdown" else None
        here = _title(opening.group(1), opening.group(2)) if opening else section[frameworks[0]]
        if cell.framework is None:
            current = None
        else:
            if current is None or (here != current.section and current.cells[cell.framework]):
                current = Run(here, {framework: [] for framework in FRAMEWORKS})
                found.append(current)
            current.cells[cell.framework].append(cell)
        headings = _headings(cell.source) if cell.kind == "markdown" else []
        for framework in frameworks:
            section[framework] = _title(*headings[-1]) if headings else section[framework]
    return found


FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def _outside_fences(text: str) -> list[tuple[bool, str]]:
    """Each line of markdown with whether it is prose (True) or inside a fenced code block."""
    marks, lines = None, []
    for line in text.splitlines():
        fence_mark = FENCE.match(line)
        if fence_mark and (marks is None or fence_mark.group(1).startswith(marks)):
            marks = fence_mark.group(1) if marks is None else None
            lines.append((False, line))
        else:
            lines.append((marks is None, line))
    return lines


def _headings(text: str) -> list[tuple[str, str]]:
    """The (hashes, title) of every heading of a markdown text, not counting `# comments` in code blocks."""
    return [m.groups() for prose, line in _outside_fences(text) if prose and (m := HEADING.match(line))]


def _title(hashes: str, text: str) -> str:
    return OPENING if len(hashes) == 1 else text


def _names_only(text: str) -> str:
    """A cell's text with the framework's name taken out of the title, labels and notebook names."""
    text = re.sub(r"(?<=[-_])(torch|keras)\b|\b(torch|keras)(?=[-_])", "FRAMEWORK", text)
    return TITLE_SUFFIX.sub("", text)


IMPORTS_BOOK = re.compile(r"^from helpers import (torch|keras) as book$", re.M)


def without_name_only_pairs(run: Run) -> tuple[Run, int]:
    """The run without the pairs of cells that differ only in the framework's name, and how many pairs those were."""
    keep = {fw: list(cells) for fw, cells in run.cells.items()}
    pairs = 0
    for cell in run.cells["torch"]:
        if IMPORTS_BOOK.search(cell.source):
            continue  # where each notebook picks its framework: always shown
        twin = next(
            (k for k in keep["keras"] if k.kind == cell.kind and _names_only(k.source) == _names_only(cell.source)),
            None,
        )
        if twin is not None:
            keep["torch"].remove(cell)
            keep["keras"].remove(twin)
            pairs += 1
    return Run(run.section, keep), pairs


def fence(text: str, char: str, at_least: int = 3) -> str:
    """A fence longer than any run of `char` at the start of a line in `text`."""
    longest = max((len(m) for m in re.findall(rf"^\s*({re.escape(char)}+)", text, re.M)), default=0)
    return char * max(at_least, longest + 1)


# Prose is rendered in the tab. An exercise becomes an admonition and its solution a dropdown, without their labels
# (the notebook page defines those); prose holding anything else that would clash with the notebook page (a label, a
# gated solution, a labelled equation, a footnote, another directive) is shown as its MyST text instead.
EXERCISE = re.compile(r"^(:{3,})\{exercise\}.*$", re.M)
SOLUTION = re.compile(r"^(:{3,})\{solution\}.*$", re.M)
EXERCISE_OPTION = re.compile(r"^:(label|class|nonumber):.*\n", re.M)
SAFE_DIRECTIVES = {"admonition", "dropdown", "note", "tip", "hint", "important", "seealso", "warning", "caution"}
DIRECTIVE = re.compile(r"^\s*(?::{3,}|`{3,}|~{3,})\{([\w-]+)\}", re.M)
CLASHES = re.compile(r"^\(\S+\)=\s*$|\$\$\s*\(|\[\^", re.M)


def _prose(text: str) -> str:
    text = EXERCISE_OPTION.sub(
        "", SOLUTION.sub(r"\1{dropdown} Solution", EXERCISE.sub(r"\1{admonition} Exercise", text))
    )
    if CLASHES.search(text) or set(DIRECTIVE.findall(text)) - SAFE_DIRECTIVES:
        marks = fence(text, "`")
        return f"{marks}markdown\n{text}\n{marks}"
    return "\n".join(
        f"**{TITLE_SUFFIX.sub('', m.group(2))}**" if prose and (m := HEADING.match(line)) else line
        for prose, line in _outside_fences(text)
    )


def _code(text: str) -> str:
    marks = fence(text, "`")
    return f"{marks}python\n{text}\n{marks}"


def tab_set(run: Run, other_missing: str) -> str:
    """One sphinx-design tab-set, PyTorch | Keras, synced across the book (`:sync-group: framework`)."""
    bodies = {}
    for framework, cells in run.cells.items():
        parts = [_code(c.source) if c.kind == "code" else _prose(c.source) for c in cells]
        if parts and cells[0].kind == "markdown" and HEADING.match(cells[0].source):
            parts[0] = _prose(HEADING.sub("", cells[0].source, count=1).lstrip("\n"))  # the heading is above the tabs
        parts = [part for part in parts if part.strip()]
        other = LABELS["keras" if framework == "torch" else "torch"]
        bodies[framework] = "\n\n".join(parts) or other_missing.format(this=LABELS[framework], other=other)
    item = fence("\n".join(bodies.values()), ":", 4)
    outer = ":" * (len(item) + 1)
    lines = [f"{outer}{{tab-set}}", f":sync-group: {SYNC_GROUP}", ""]
    for framework, body in bodies.items():
        lines += [f"{item}{{tab-item}} {LABELS[framework]}", f":sync: {framework}", "", body, item, ""]
    return "\n".join(lines + [outer])


def fragment(chapter: Chapter) -> str:
    """The page fragment of a chapter: its differences, section by section, in synced tabs."""
    torch_nb, keras_nb = (chapter.notebook_path(fw).stem for fw in FRAMEWORKS)
    parts = [
        f"<!-- Generated by scripts/chapters.py from {chapter.path.name}: edit that file, then `make notebooks`. -->",
        "",
        "## PyTorch and Keras, side by side",
        "",
        f"Every cell in which {{doc}}`{torch_nb}` and {{doc}}`{keras_nb}` differ, section by section; the two "
        "notebooks share everything else. Choosing a framework on one tab switches every tab of the book.",
    ]
    section = None
    hidden = 0
    for run in runs(chapter):
        run, pairs = without_name_only_pairs(run)
        hidden += pairs
        if not any(run.cells.values()):
            continue
        if run.section != section:
            parts += ["", f"### {run.section}"]
            section = run.section
        parts += ["", tab_set(run, "*The {this} notebook has nothing here; the {other} notebook needs these cells.*")]
    if hidden:
        parts += [
            "",
            f"Not shown: {hidden} pair{'s' if hidden > 1 else ''} of cells that differ only in the framework's name "
            "(the title, exercise labels, notebook names).",
        ]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- the command line


def generate(chapter: Chapter) -> dict[Path, str]:
    """Every file a chapter source generates, with its text. Raises SourceError on a cell in the wrong notebook."""
    problems = leaks(chapter)
    if problems:
        raise SourceError("\n".join(problems))
    files = {chapter.notebook_path(fw): dumps(notebook(chapter, fw)) for fw in FRAMEWORKS}
    files[chapter.path.with_name(FRAGMENT)] = fragment(chapter)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", help="chapter folders or sources (default: every chapter)")
    parser.add_argument("--check", action="store_true", help="write nothing; fail if a generated file differs")
    args = parser.parse_args(argv)
    paths = sources(args.chapters)
    if not paths:
        print(f"no chapter sources (*{SUFFIX}) found", file=sys.stderr)
        return 1
    failed, stale, written = [], [], 0
    for path in paths:
        try:
            files = generate(read_chapter(path))
        except SourceError as error:
            failed.append(str(error))
            continue
        for target, text in files.items():
            current = target.read_text(encoding="utf-8") if target.exists() else None
            if current == text:
                continue
            if args.check:
                stale.append(str(target.relative_to(ROOT) if target.is_relative_to(ROOT) else target))
            else:
                target.write_text(text, encoding="utf-8")
                written += 1
    for message in failed:
        print(message, file=sys.stderr)
    if stale:
        print("differ from their chapter source (run `make notebooks`; never edit them by hand):", file=sys.stderr)
        print("\n".join(f"  {name}" for name in stale), file=sys.stderr)
    if not args.check:
        print(f"{len(paths)} chapter sources, {written} files written")
    return 1 if failed or stale else 0


if __name__ == "__main__":
    sys.exit(main())
