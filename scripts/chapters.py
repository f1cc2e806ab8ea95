"""Each chapter is written once: its source generates its two notebooks and its side-by-side page fragment.

A chapter's source is `book/NN_slug/<stem>.src.md`, a MyST Markdown notebook that jupytext reads
(https://jupytext.readthedocs.io, format `md:myst`). Every cell goes into both notebooks unless its metadata names
one framework:

    ```{code-cell}                              +++ {"framework": "keras"}
    :framework: torch
                                                Prose that only the Keras notebook has.
    model.train()
    ```

A shared markdown cell that differs between the notebooks in a few lines holds framework blocks. A line
`<!-- torch -->` (or `<!-- keras -->`) starts lines for that notebook only, up to the next marker line;
`<!-- both -->` returns to lines for both. The marker lines never reach a notebook:

    # Evaluating a fine-tuned model            (shared)
    <!-- torch -->
    - write the loop with `zero_grad`/`backward`/`step`;
    <!-- keras -->
    - `compile` and `fit`, recompiling after unfreezing;
    <!-- both -->
    - compare with the helper.                  (shared)

A line holding only a one-word HTML comment is a marker: any word but torch, keras and both is an error, and so is a
block still open at the end of its cell, a `<!-- both -->` with no block open, and a marker in a markdown cell
already marked for one framework. Inside a fenced code block (``` or ~~~) and in code cells the lines are plain text.

In a markdown cell, `@framework@` stands for the notebook's framework, `torch` or `keras`, so that a line differing only
in a label needs no blocks: `:label: ex-evaluation-@framework@-2` becomes `ex-evaluation-torch-2` in the PyTorch
notebook and `ex-evaluation-keras-2` in the Keras one (labels must differ: both notebooks are pages of one book).
`@Framework@` is the name as the book writes it, `PyTorch` or `Keras` (each notebook's title ends in it). A code cell
holding either is an error.
Code that differs stays in cells of its own (`python scripts/twins_to_source.py merge-prose` merges prose pairs).

From `<stem>.src.md` this script writes, next to it:
- `<stem>_torch.ipynb` and `<stem>_keras.ipynb`: the cells of each framework, in source order, without outputs, with
  the notebook metadata of the source's front matter (kernelspec, language_info; `framework_metadata: {keras: ...}`
  overrides it for one notebook). `torch_id` / `keras_id` in a cell's metadata give its id in that notebook; a cell
  without one gets an id derived from its text, so regenerating never changes ids.
- `differences.md`: every run of framework-specific cells, and the blocks of each shared markdown cell (only the
  blocks, inside the exercise or solution they are in), PyTorch | Keras, in sphinx-design tabs of the sync group
  `framework`, under the heading of the notebook section it comes from (read in each notebook's text, so a heading
  inside a block counts). The chapter's `index.md` includes it. Code is shown as code blocks (jupyter-book does not
  execute code inside a tab-set); prose is rendered. Pairs of cells or blocks that differ only in the framework's
  name are counted, not shown.

Before writing, each notebook's code is checked for the other framework (`import torch`, `torch.` in a Keras
notebook; `keras.`, `tf.` in a PyTorch one): a cell marked for the wrong framework, or left shared, fails.

    python scripts/chapters.py            # write every chapter's notebooks and fragment (`make notebooks`)
    python scripts/chapters.py --check    # write nothing; fail if a committed file differs from its source
    python scripts/chapters.py book/02_feature_extraction   # only these chapters
    python scripts/chapters.py --stats    # write nothing; each source's size, cells, lines and prose words kept twice

The generated files are committed (launch links, nbval, the claims ledger and `make lab` read them as they are);
tests/test_chapters.py fails when one differs from what its source generates. Never edit them by hand.
"""

from __future__ import annotations

import argparse
import difflib
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
PLACEHOLDER = "@framework@"  # in a markdown cell: the notebook's framework, "torch" or "keras"
NAME_PLACEHOLDER = "@Framework@"  # in a markdown cell: its name as the book writes it, "PyTorch" or "Keras"
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
    texts: dict[str, str] = field(default_factory=dict)  # framework -> its text, where blocks make them differ
    differences: list[Difference] = field(default_factory=list)  # the blocks of a shared markdown cell

    def text(self, framework: str) -> str:
        """The cell's text in one framework's notebook: its shared lines and that framework's blocks, with
        `@framework@` replaced by the framework's name in a markdown cell."""
        return framework_text(self.texts.get(framework, self.source), framework, self.kind)


def framework_text(text: str, framework: str, kind: str = "markdown") -> str:
    """`text` as it reaches `framework`'s notebook: in a markdown cell, `@framework@` is `torch` or `keras` and
    `@Framework@` is `PyTorch` or `Keras`."""
    if kind != "markdown":
        return text
    return text.replace(PLACEHOLDER, framework).replace(NAME_PLACEHOLDER, LABELS[framework])


@dataclass
class Difference:
    """A stretch of framework blocks in a shared markdown cell, from its first marker to `<!-- both -->`."""

    lines: dict[str, list[str]]  # framework -> its lines here (empty: that notebook has nothing here)
    start: dict[str, int]  # framework -> where they start among the lines of that framework's text (0-based)
    line: int  # the source line of the opening marker


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
        chapter.cells.append(_cell(path, cell, _first_line(cell.cell_type, lines[index], text_lines), text_lines))
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


def _cell(path: Path, cell, line: int, lines: list[str]) -> Cell:
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
    if cell.cell_type == "code" and (PLACEHOLDER in cell.source or NAME_PLACEHOLDER in cell.source):
        raise SourceError(
            f"{where}: {PLACEHOLDER} and {NAME_PLACEHOLDER} stand for the framework in markdown cells only; in code, "
            "put the two versions "
            "in a `:framework: torch` cell and a `:framework: keras` cell"
        )
    made = Cell(cell.cell_type, cell.source, framework, ids, metadata, line)
    if cell.cell_type == "markdown":
        made.texts, made.differences = expand(cell.source, framework, path.name, _text_line(cell.source, line, lines))
    return made


def _text_line(source: str, line: int, lines: list[str]) -> int:
    """The 1-based source line of a markdown cell's first line of text (the cell starts at `line`)."""
    first, n = source.split("\n")[0], line - 1
    while n < len(lines) and lines[n] != first:
        n += 1
    return n + 1 if n < len(lines) else line


# ----------------------------------------------------------------------------- framework blocks in shared prose

MARKER = re.compile(r"^\s*<!--\s*([A-Za-z]+)\s*-->\s*$")  # a line holding only a one-word HTML comment
SHARED = "both"


def expand(source: str, framework: str | None, name: str, first_line: int) -> tuple[dict[str, str], list[Difference]]:
    """Each framework's text of a markdown cell, and its blocks: `<!-- torch -->` or `<!-- keras -->` on a line of its
    own starts lines for that notebook only, up to the next marker line; `<!-- both -->` returns to shared lines.

    Marker lines never reach a notebook; inside a fenced code block (``` or ~~~) they are plain text. `framework` is
    the cell's own marker (blocks are refused in a cell already for one notebook); `name` and `first_line` (the
    source line of the cell's first line) place the errors. Returns ({}, []) for a cell without markers.
    """
    lines = source.split("\n")
    texts: dict[str, list[str]] = {fw: [] for fw in FRAMEWORKS}
    differences: list[Difference] = []
    current: str | None = None  # the framework whose block is open
    for n, (prose, line) in enumerate(_outside_fences(lines)):
        marker = MARKER.match(line) if prose else None
        if marker is None:
            for fw in [current] if current else FRAMEWORKS:
                texts[fw].append(line)
                if current:
                    differences[-1].lines[fw].append(line)
            continue
        word, where = marker.group(1), f"{name}, line {first_line + n}"
        if word not in (*FRAMEWORKS, SHARED):
            raise SourceError(
                f"{where}: unknown marker <!-- {word} -->; expected <!-- torch -->, <!-- keras --> or <!-- both --> "
                "(a line holding only a one-word HTML comment is a framework marker)"
            )
        if framework is not None:
            raise SourceError(
                f"{where}: <!-- {word} --> in a markdown cell marked `framework: {framework}`; framework blocks go "
                "in a shared markdown cell: drop the marker, or drop `framework` from the cell's +++ line"
            )
        if word == SHARED:
            if current is None:
                raise SourceError(
                    f"{where}: <!-- both --> closes a framework block, but none is open; remove it, or open one "
                    "with <!-- torch --> or <!-- keras --> above it"
                )
            current = None
            continue
        if current is None:
            start = {fw: len(texts[fw]) for fw in FRAMEWORKS}
            differences.append(Difference({fw: [] for fw in FRAMEWORKS}, start, first_line + n))
        current = word
    if current is not None:
        raise SourceError(
            f"{name}, line {differences[-1].line}: the framework block opened here is still open (<!-- {current} -->) "
            f"at the end of its cell (line {first_line + len(lines) - 1}); close it with a line <!-- both -->"
        )
    if not differences:
        return {}, []
    return {fw: "\n".join(text) for fw, text in texts.items()}, differences


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
        text = cell.text(framework)
        cell_id = cell.ids.get(framework) or _derived_id(framework, text, used)
        entry = {"cell_type": cell.kind, "id": cell_id, "metadata": cell.metadata, "source": _lines(text)}
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
    """Consecutive framework-specific cells in one notebook section, or the blocks of one shared markdown cell in one
    section: what one tab-set shows."""

    section: str  # the heading of the notebook section they are in
    cells: dict[str, list[Cell]]  # framework -> its cells (for blocks: one markdown cell per block), in order
    blocks: bool = False  # from the framework blocks of a shared markdown cell


def runs(chapter: Chapter) -> list[Run]:
    """Every stretch of framework-specific cells, cut where a section starts, with the section's heading; and the
    framework blocks of each shared markdown cell, with the heading of the section each stretch of them is in.

    Each cell's section is read in its own notebook, from its text there (the headings of the two notebooks are the
    same, and a heading inside a block counts), so a pair of cells that opens a section starts a new tab-set under
    that section's heading, and so does a block that starts with a heading. Framework-specific cells right after a
    cell that ends in blocks join its last tab-set (a paragraph and the code it introduces stay together).
    """
    found: list[Run] = []
    current: Run | None = None
    section = {framework: "" for framework in FRAMEWORKS}
    for cell in chapter.cells:
        frameworks = [cell.framework] if cell.framework else list(FRAMEWORKS)
        if cell.differences:
            current = None
            for difference in cell.differences:
                framework = next((fw for fw in FRAMEWORKS if difference.lines[fw]), FRAMEWORKS[0])
                here = _section_at(cell.text(framework), difference.start[framework] + 1) or section[framework]
                if current is None or here != current.section:
                    current = Run(here, {fw: [] for fw in FRAMEWORKS}, blocks=True)
                    found.append(current)
                for fw in FRAMEWORKS:
                    text = "\n".join(difference.lines[fw]).strip("\n")
                    if text.strip():
                        text = _in_context(cell.text(fw).split("\n")[: difference.start[fw]], text)
                        current.cells[fw].append(Cell("markdown", text, fw, {}, {}, difference.line))
            if not _ends_in_blocks(cell.source):
                current = None  # shared lines follow the last block: the cells after it are another tab-set
        else:
            opening = HEADING.match(cell.source) if cell.kind == "markdown" else None
            here = _title(opening.group(1), opening.group(2)) if opening else section[frameworks[0]]
            if cell.framework is None:
                current = None
            else:
                if current is None or (here != current.section and current.cells[cell.framework]):
                    current = Run(here, {framework: [] for framework in FRAMEWORKS})
                    found.append(current)
                current.cells[cell.framework].append(cell)
                current.blocks = False
        for framework in frameworks:
            headings = _headings(cell.text(framework)) if cell.kind == "markdown" else []
            section[framework] = _title(*headings[-1]) if headings else section[framework]
    return found


def _in_context(before: list[str], text: str) -> str:
    """A block's text inside the `:::{directive}`s still open where it starts (`before`: the lines above it), so that
    a block in an exercise or its solution reads as one in the tab, and the tab's MyST stays valid."""
    openers: list[str] = []
    for prose, line in _outside_fences(before):
        if prose and COLON_OPEN.match(line):
            openers.append(line)
        elif prose and COLON_CLOSE.match(line) and openers:
            openers.pop()
    if not openers:
        return text
    closers = [COLON_OPEN.match(line).group(1) for line in reversed(openers)]
    return "\n".join([*openers, "", text, *closers])


def _ends_in_blocks(source: str) -> bool:
    """Whether a markdown cell's last line is the `<!-- both -->` that closes its last block (nothing shared after)."""
    last = source.rstrip().rsplit("\n", 1)[-1]
    return bool((marker := MARKER.match(last)) and marker.group(1) == SHARED)


def _section_at(text: str, end: int) -> str | None:
    """The section that the first `end` lines of a markdown text end in, if a heading among them starts one."""
    headings = _headings(text.split("\n")[:end])
    return _title(*headings[-1]) if headings else None


FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def _outside_fences(text: str | list[str]) -> list[tuple[bool, str]]:
    """Each line of markdown (a text, or its lines) with whether it is prose (True) or in a fenced code block."""
    marks, lines = None, []
    for line in text.splitlines() if isinstance(text, str) else text:
        fence_mark = FENCE.match(line)
        if fence_mark and (marks is None or fence_mark.group(1).startswith(marks)):
            marks = fence_mark.group(1) if marks is None else None
            lines.append((False, line))
        else:
            lines.append((marks is None, line))
    return lines


def _headings(text: str | list[str]) -> list[tuple[str, str]]:
    """The (hashes, title) of every heading of a markdown text (or lines), not counting `# comments` in code blocks."""
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
    text = re.sub(r"^(:{3,}\{(?:admonition|dropdown)\}.*\n)\n+", r"\1\n", text.strip("\n"), flags=re.M)
    if CLASHES.search(text) or set(DIRECTIVE.findall(text)) - SAFE_DIRECTIVES or not _balanced(text):
        marks = fence(text, "`")
        return f"{marks}markdown\n{text}\n{marks}"
    return "\n".join(
        f"**{TITLE_SUFFIX.sub('', m.group(2))}**" if prose and (m := HEADING.match(line)) else line
        for prose, line in _outside_fences(text)
    )


COLON_OPEN = re.compile(r"^\s*(:{3,})\{[\w-]+\}")
COLON_CLOSE = re.compile(r"^\s*(:{3,})\s*$")


def _balanced(text: str) -> bool:
    """Whether every `:::{directive}` in a text is closed in it, and nothing closes what it did not open: a block cut
    out of a shared cell may hold only one end of an exercise, and would then break the page if rendered."""
    open_marks: list[str] = []
    for prose, line in _outside_fences(text):
        if not prose:
            continue
        if opening := COLON_OPEN.match(line):
            open_marks.append(opening.group(1))
        elif closing := COLON_CLOSE.match(line):
            if not open_marks or open_marks[-1] != closing.group(1):
                return False
            open_marks.pop()
    return not open_marks


def _code(text: str) -> str:
    """A fenced Python block; a cell's closing `;` (Jupyter's "show no value") is dropped, as a .py file has none."""
    if text.endswith(";"):
        text = text[:-1]
    marks = fence(text, "`")
    return f"{marks}python\n{text}\n{marks}"


def tab_set(run: Run, other_missing: str) -> str:
    """One sphinx-design tab-set, PyTorch | Keras, synced across the book (`:sync-group: framework`)."""
    bodies = {}
    for framework, cells in run.cells.items():
        texts = [c.text(framework) for c in cells]
        parts = [_code(t) if c.kind == "code" else _prose(t) for c, t in zip(cells, texts)]
        if parts and cells[0].kind == "markdown" and HEADING.match(texts[0]):
            parts[0] = _prose(HEADING.sub("", texts[0], count=1).lstrip("\n"))  # the heading is above the tabs
        parts = [part for part in parts if part.strip()]
        other = LABELS["keras" if framework == "torch" else "torch"]
        if run.blocks:
            other_missing = "*The {this} notebook has nothing here; the {other} notebook has these lines.*"
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
            f"Not shown: {hidden} pair{'s' if hidden > 1 else ''} of cells or passages that differ only in the "
            "framework's name (the title, exercise labels, notebook names).",
        ]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- how much is still written twice


def kept_twice(chapter: Chapter) -> int:
    """The lines kept twice: how many lines of the chapter's PyTorch-only text difflib matches (SequenceMatcher over
    whole lines, autojunk off, blank lines included) in its Keras-only text. A framework's only-text is, in source
    order, the lines of every cell marked for it and of every block for it in a shared markdown cell."""
    only: dict[str, list[str]] = {fw: [] for fw in FRAMEWORKS}
    for cell in chapter.cells:
        if cell.framework:
            only[cell.framework] += cell.source.split("\n")
        for difference in cell.differences:
            for fw in FRAMEWORKS:
                only[fw] += difference.lines[fw]
    matcher = difflib.SequenceMatcher(None, only["torch"], only["keras"], autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks())


def prose_words_kept_twice(chapter: Chapter) -> int:
    """The prose words kept twice: how many words of the PyTorch-only markdown (one-framework markdown cells and
    the blocks of shared ones) difflib matches, word for word, in the Keras-only markdown. Unlike `kept_twice`, a
    paragraph that both frameworks say in slightly different words counts here."""
    only: dict[str, list[str]] = {fw: [] for fw in FRAMEWORKS}
    for cell in chapter.cells:
        if cell.framework and cell.kind == "markdown":
            only[cell.framework] += cell.source.split()
        for difference in cell.differences:
            for fw in FRAMEWORKS:
                only[fw] += " ".join(difference.lines[fw]).split()
    matcher = difflib.SequenceMatcher(None, only["torch"], only["keras"], autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks())


def statistics(path: Path) -> dict[str, int | str]:
    """One chapter source's size and how much of it is framework-specific (`chapters.py --stats`)."""
    import jupytext

    text = path.read_text(encoding="utf-8")
    chapter = read_chapter(path, text)
    nb = jupytext.reads(text, fmt="md:myst")
    with_ids = len(jupytext.writes(nb, fmt="md:myst").splitlines())
    for cell in nb.cells:
        for key in ID_KEYS.values():
            cell.metadata.pop(key, None)
    without_ids = len(jupytext.writes(nb, fmt="md:myst").splitlines())
    cells = chapter.cells
    return {
        "chapter": path.parent.name,
        "source lines": len(text.splitlines()),
        "without id lines": len(text.splitlines()) - (with_ids - without_ids),
        "shared cells": sum(cell.framework is None for cell in cells),
        "code pairs": sum(
            a.kind == b.kind == "code" and (a.framework, b.framework) == FRAMEWORKS for a, b in zip(cells, cells[1:])
        ),
        "one-framework markdown cells": sum(cell.kind == "markdown" and cell.framework is not None for cell in cells),
        "markdown cells with blocks": sum(bool(cell.differences) for cell in cells),
        "lines kept twice": kept_twice(chapter),
        "prose words kept twice": prose_words_kept_twice(chapter),
    }


def statistics_table(paths: list[Path]) -> str:
    rows = [statistics(path) for path in paths]
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    lines.append("| total | " + " | ".join(str(sum(row[c] for row in rows)) for c in columns[1:]) + " |")
    return "\n".join(lines)


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
    parser.add_argument("--stats", action="store_true", help="write nothing; print each source's statistics")
    args = parser.parse_args(argv)
    paths = sources(args.chapters)
    if not paths:
        print(f"no chapter sources (*{SUFFIX}) found", file=sys.stderr)
        return 1
    if args.stats:
        print(statistics_table(paths))
        return 0
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
