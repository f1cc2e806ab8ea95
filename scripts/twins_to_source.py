"""One-off conversion: a chapter's twin notebooks -> its one source, `book/NN_slug/<stem>.src.md` (scripts/chapters.py).

Kept in the repository as the record of how the sources were made (and for a chapter written as twins elsewhere).
Mechanical, no judgement:
- the two notebooks' cells are aligned with difflib's SequenceMatcher on (cell type, metadata, text);
- cells that match exactly become one shared cell (no `framework` key);
- every other stretch is paired cell by cell: same cell type, in order, preferring the most similar text (a small
  dynamic programme over difflib ratios); a pair is written PyTorch cell first, then its Keras counterpart, each
  marked with `framework`; a cell with no counterpart stays a marked singleton;
- every cell keeps its id in each notebook (`torch_id`, `keras_id`), so regenerating gives the same files;
- near-identical prose is NOT merged here: `merge-prose` does that afterwards, as its own step.

It refuses to write a source that does not regenerate both notebooks byte for byte, and prints per chapter the
source's size, the shared cells, the framework-specific pairs and singletons, and the lines kept twice.

    python scripts/twins_to_source.py book/02_feature_extraction [...]    # write the sources
    python scripts/twins_to_source.py --dry-run book/*_*/                 # only the table

`merge-prose` rewrites existing sources: each PyTorch-only markdown cell directly followed by a Keras-only one with
the same metadata and a line in common becomes one shared cell whose differing lines are framework blocks
(`<!-- torch -->` ... `<!-- keras -->` ... `<!-- both -->`); see `merge_prose`. Code cells stay pairs.

    python scripts/twins_to_source.py merge-prose [--dry-run] [book/07_evaluation ...]   # then `make notebooks`
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import chapters

HEADER = """\
# One source for this chapter's two notebooks: edit it, then run `make notebooks` (scripts/chapters.py); never edit
# the .ipynb files. A cell goes into both notebooks unless its metadata names one framework: `:framework: torch`
# under a code cell's ```{code-cell} line, `+++ {"framework": "keras"}` above a markdown cell. In a shared markdown
# cell, the lines after a line <!-- torch --> (or <!-- keras -->) go into that notebook only, up to the next marker
# line; <!-- both --> returns to shared lines. In a markdown cell, @framework@ is the notebook's framework (torch or
# keras), as in exercise labels, and @Framework@ its name (PyTorch or Keras), as in the title. torch_id / keras_id
# keep each notebook's cell ids; a new cell can leave them out. README, "Writing a chapter", says more.
"""


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _key(cell: dict) -> tuple:
    return cell["cell_type"], json.dumps(cell["metadata"], sort_keys=True), _source(cell)


def pair_up(torch_cells: list[dict], keras_cells: list[dict]) -> list[tuple[dict | None, dict | None]]:
    """Align two stretches of differing cells: pairs of the same type, in order, as similar as possible."""
    n, m = len(torch_cells), len(keras_cells)

    def gain(i: int, j: int) -> float | None:
        """What pairing torch cell i with Keras cell j is worth (None: different types cannot pair)."""
        a, b = torch_cells[i], keras_cells[j]
        if a["cell_type"] != b["cell_type"]:
            return None
        return 1 + difflib.SequenceMatcher(None, _source(a), _source(b), autojunk=False).ratio()

    gains = {(i, j): gain(i, j) for i in range(n) for j in range(m)}
    best = [[0.0] * (m + 1) for _ in range(n + 1)]  # best[i][j]: the most the stretches from i and j can gain
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            paired = gains[i, j]
            best[i][j] = max(best[i + 1][j], best[i][j + 1], -1.0 if paired is None else paired + best[i + 1][j + 1])
    pairs, i, j = [], 0, 0
    while i < n or j < m:
        paired = gains.get((i, j))
        if paired is not None and best[i][j] == paired + best[i + 1][j + 1]:
            pairs.append((torch_cells[i], keras_cells[j]))
            i, j = i + 1, j + 1
        elif i < n and (j == m or best[i][j] == best[i + 1][j]):
            pairs.append((torch_cells[i], None))
            i += 1
        else:
            pairs.append((None, keras_cells[j]))
            j += 1
    return pairs


def merge(torch_nb: dict, keras_nb: dict) -> tuple[list[dict], dict]:
    """The source's cells (nbformat-like dicts with the marker metadata) and counts for the report."""
    a, b = torch_nb["cells"], keras_nb["cells"]
    matcher = difflib.SequenceMatcher(None, [_key(c) for c in a], [_key(c) for c in b], autojunk=False)
    cells, counts = [], {"shared": 0, "pairs": 0, "torch only": 0, "keras only": 0}
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for t, k in zip(a[i1:i2], b[j1:j2]):
                cells.append(_marked(t, None, {"torch": t["id"], "keras": k["id"]}))
                counts["shared"] += 1
            continue
        for t, k in pair_up(a[i1:i2], b[j1:j2]):
            if t and k:
                counts["pairs"] += 1
            elif t or k:
                counts["torch only" if t else "keras only"] += 1
            if t:
                cells.append(_marked(t, "torch", {"torch": t["id"]}))
            if k:
                cells.append(_marked(k, "keras", {"keras": k["id"]}))
    return cells, counts


def _marked(cell: dict, framework: str | None, ids: dict[str, str]) -> dict:
    metadata = {} if framework is None else {"framework": framework}
    metadata.update({chapters.ID_KEYS[name]: cell_id for name, cell_id in ids.items()})
    metadata.update(cell["metadata"])
    return {"cell_type": cell["cell_type"], "metadata": metadata, "source": _source(cell)}


def source_text(torch_nb: dict, keras_nb: dict, cells: list[dict]) -> str:
    """The MyST text jupytext writes for the merged cells, with a short comment opening its front matter."""
    import jupytext
    import nbformat

    metadata = dict(torch_nb["metadata"])
    keep = ["language_info"]
    if keras_nb["metadata"] != torch_nb["metadata"]:
        metadata["framework_metadata"] = {"keras": keras_nb["metadata"]}
        keep.append("framework_metadata")
    metadata["jupytext"] = {"notebook_metadata_filter": ",".join(keep)}
    nb = nbformat.v4.new_notebook(metadata=metadata)
    for cell in cells:
        make = nbformat.v4.new_code_cell if cell["cell_type"] == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(source=cell["source"], metadata=cell["metadata"]))
    text = jupytext.writes(nb, fmt="md:myst")
    assert text.startswith("---\n")
    return "---\n" + HEADER + text[4:]


def twice(torch_text: str, keras_text: str) -> int:
    """Lines that two texts share (difflib's matching blocks over lines): what is kept twice."""
    a, b = torch_text.splitlines(), keras_text.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks())


def convert(folder: Path, write: bool) -> dict:
    torch_path = next(folder.glob("*_torch.ipynb"))
    stem = torch_path.name.removesuffix("_torch.ipynb")
    keras_path = folder / f"{stem}_keras.ipynb"
    torch_nb, keras_nb = (json.loads(p.read_text(encoding="utf-8")) for p in (torch_path, keras_path))
    cells, counts = merge(torch_nb, keras_nb)
    text = source_text(torch_nb, keras_nb, cells)
    path = folder / f"{stem}{chapters.SUFFIX}"
    chapter = chapters.read_chapter(path, text)
    for framework, original in (("torch", torch_path), ("keras", keras_path)):
        generated = chapters.dumps(chapters.notebook(chapter, framework))
        if generated != original.read_text(encoding="utf-8"):
            raise SystemExit(f"{folder.name}: the source would not regenerate {original.name} byte for byte")
    if write:
        path.write_text(text, encoding="utf-8")
    lines = {fw: "\n".join(_source(c) for c in nb["cells"]) for fw, nb in (("torch", torch_nb), ("keras", keras_nb))}
    only = {fw: "\n".join(c["source"] for c in cells if c["metadata"].get("framework") == fw) for fw in lines}
    runs = len(chapters.runs(chapter))
    return {
        "chapter": folder.name,
        "source lines": len(text.splitlines()),
        **counts,
        "tab-sets": runs,
        "notebook lines": sum(len(t.splitlines()) for t in lines.values()),
        "twice before": twice(lines["torch"], lines["keras"]),
        "twice after": twice(only["torch"], only["keras"]),
    }


# ----------------------------------------------------------------------------- merging near-identical prose

MARKS = {framework: f"<!-- {framework} -->" for framework in chapters.FRAMEWORKS}
BOTH = f"<!-- {chapters.SHARED} -->"
ID_KEYS = set(chapters.ID_KEYS.values())


def _units(text: str) -> list[str]:
    """A markdown text's lines, each fenced code block taken as one unit, so that no marker lands inside one."""
    units: list[str] = []
    fenced: list[str] = []
    for prose, line in chapters._outside_fences(text.split("\n")):
        if not prose:
            fenced.append(line)
            continue
        if fenced:
            units.append("\n".join(fenced))
            fenced = []
        units.append(line)
    if fenced:
        units.append("\n".join(fenced))
    return units


def with_blocks(torch_text: str, keras_text: str) -> str | None:
    """One markdown text that expands to `torch_text` in the PyTorch notebook and to `keras_text` in the Keras one:
    the lines they share (difflib's alignment of their lines, a fenced code block counting as one line), and
    `<!-- torch -->` ... `<!-- keras -->` ... `<!-- both -->` around each stretch where they differ. Shared blank lines
    between two such stretches go into both blocks, so a paragraph break never splits a difference in two.
    None when the texts share no non-blank line (two different cells, not one cell with a difference)."""
    a, b = _units(torch_text), _units(keras_text)
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    stretches: list[tuple[bool, list[str], list[str]]] = []  # (shared?, PyTorch lines, Keras lines)
    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        blank_between = tag == "equal" and not "".join(a[i1:i2]).strip() and 0 < n < len(opcodes) - 1
        if tag == "equal" and not blank_between:
            stretches.append((True, a[i1:i2], b[j1:j2]))
        elif stretches and not stretches[-1][0]:
            stretches[-1][1].extend(a[i1:i2])
            stretches[-1][2].extend(b[j1:j2])
        else:
            stretches.append((False, list(a[i1:i2]), list(b[j1:j2])))
    if not any(shared and "".join(lines).strip() for shared, lines, _ in stretches):
        return None
    lines: list[str] = []
    for shared, torch_lines, keras_lines in stretches:
        if shared:
            lines += torch_lines
            continue
        lines += [MARKS["torch"], *torch_lines] if torch_lines else []
        lines += [MARKS["keras"], *keras_lines] if keras_lines else []
        lines.append(BOTH)
    return "\n".join(lines)


# An exercise label that names the framework (`ex-evaluation-torch-2`): both notebooks are pages of one book, so their
# labels differ, and `@framework@` (chapters.PLACEHOLDER) lets one shared line stand for both.
LABEL = re.compile(r"\b(ex-[\w-]+?-)(torch|keras)(-\d+)\b")


# A notebook's title, which ends in its framework's name: `# Feature extraction — PyTorch`.
TITLE = re.compile(r"^(# .+ — )(PyTorch|Keras)$", re.M)


def templated(text: str, framework: str) -> str:
    """`text` (from `framework`'s notebook) with each exercise label that names `framework` written with @framework@,
    and a title ending in its name with @Framework@."""
    text = LABEL.sub(lambda m: m[0] if m[2] != framework else m[1] + chapters.PLACEHOLDER + m[3], text)
    name = chapters.LABELS[framework]
    return TITLE.sub(lambda m: m[0] if m[2] != name else m[1] + chapters.NAME_PLACEHOLDER, text)


def one_text(torch_text: str, keras_text: str) -> str | None:
    """One shared markdown text for two notebooks' texts: labels written with @framework@, and framework blocks
    where the texts still differ (`with_blocks`). None when they share no non-blank line."""
    a, b = templated(torch_text, "torch"), templated(keras_text, "keras")
    return a if a == b else with_blocks(a, b)


def reaches(text: str, framework: str) -> str:
    """What a shared markdown cell with this text gives in `framework`'s notebook (blocks, then @framework@)."""
    texts, _ = chapters.expand(text, None, "cell", 1)
    return chapters.framework_text(texts.get(framework, text), framework)


def _other_metadata(cell) -> dict:
    return {key: value for key, value in cell.metadata.items() if key != "framework" and key not in ID_KEYS}


def _round_trips(text: str, metadata: dict) -> bool:
    """Whether jupytext writes and reads a markdown cell with this text and metadata back unchanged."""
    import jupytext
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells += [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell(text, metadata=metadata)]
    back = jupytext.reads(jupytext.writes(nb, fmt="md:myst"), fmt="md:myst").cells
    return len(back) == 2 and back[1].source == text and dict(back[1].metadata) == metadata


def merge_prose(path: Path, write: bool = True) -> dict:
    """Merge each PyTorch-only markdown cell directly followed by a Keras-only one into one shared cell with blocks.

    A pair is merged when both cells have the same metadata apart from `framework` and their ids, and their lines
    share at least one non-blank line (`with_blocks`); the merged cell keeps both ids (`torch_id`, `keras_id`). A pair
    is refused (left as it is) when its blocks would not expand to the two texts exactly, or jupytext would not write
    and read the cell back unchanged; the whole chapter is refused when its notebooks would not regenerate byte for
    byte. Code cells are never merged: a pair of code cells is what the tabs are for. The source's front-matter
    comment is rewritten (HEADER) either way.
    """
    import jupytext
    import nbformat

    text = path.read_text(encoding="utf-8")
    old = chapters.read_chapter(path, text)
    expected = {fw: chapters.dumps(chapters.notebook(old, fw)) for fw in chapters.FRAMEWORKS}
    nb = jupytext.reads(text, fmt="md:myst")
    cells, report = [], {"chapter": path.parent.name, "merged": 0, "folded": 0, "nothing shared": 0, "refused": []}
    i = 0
    while i < len(nb.cells):
        first, second = nb.cells[i], nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        is_pair = (
            second is not None
            and first.cell_type == second.cell_type == "markdown"
            and (first.metadata.get("framework"), second.metadata.get("framework")) == chapters.FRAMEWORKS
        )
        if not is_pair:
            cells.append(_folded(first, report))
            i += 1
            continue
        where = f"{path.name}: the pair at line {old.cells[i].line}"
        merged = one_text(first.source, second.source)
        metadata = {
            key: cell.metadata[key] for key, cell in (("torch_id", first), ("keras_id", second)) if key in cell.metadata
        }
        metadata.update(_other_metadata(first))
        problem = None
        if _other_metadata(first) != _other_metadata(second):
            problem = "their metadata differs"
        elif merged is None:
            report["nothing shared"] += 1
        elif any(
            reaches(merged, fw) != chapters.framework_text(c.source, fw)
            for fw, c in (("torch", first), ("keras", second))
        ):
            problem = "its blocks would not expand to the two texts"
        elif not _round_trips(merged, metadata):
            problem = "jupytext would not read the merged cell back unchanged"
        if problem or merged is None:
            if problem:
                report["refused"].append(f"{where}: {problem}")
            cells.append(first)
            i += 1
            continue
        cells.append(nbformat.v4.new_markdown_cell(merged, metadata=metadata))
        report["merged"] += 1
        i += 2
    nb.cells = cells
    kept = [key for key in nb.metadata if key not in ("jupytext", "kernelspec")]  # jupytext drops the others
    nb.metadata.setdefault("jupytext", {}).setdefault("notebook_metadata_filter", ",".join(kept))
    written = jupytext.writes(nb, fmt="md:myst")
    assert written.startswith("---\n")
    new_text = "---\n" + HEADER + written[4:]
    new = chapters.read_chapter(path, new_text)
    for framework in chapters.FRAMEWORKS:
        if chapters.dumps(chapters.notebook(new, framework)) != expected[framework]:
            raise SystemExit(f"{path}: merged, the source would not regenerate its {framework} notebook byte for byte")
    if write and new_text != text:
        path.write_text(new_text, encoding="utf-8")
    return report


def _folded(cell, report: dict):
    """A shared markdown cell whose blocks differ only in exercise labels, rewritten with @framework@ and fewer blocks
    (the cell itself when nothing changes, or when the rewrite would not give the same two texts)."""
    if cell.cell_type != "markdown" or "framework" in cell.metadata or "<!--" not in cell.source:
        return cell
    texts, _ = chapters.expand(cell.source, None, "cell", 1)
    if not texts:
        return cell
    text = one_text(texts["torch"], texts["keras"])
    if text is None or text == cell.source:
        return cell
    if any(reaches(text, fw) != reaches(cell.source, fw) for fw in chapters.FRAMEWORKS) or not _round_trips(
        text, dict(cell.metadata)
    ):
        return cell
    import nbformat

    report["folded"] += 1
    return nbformat.v4.new_markdown_cell(text, metadata=dict(cell.metadata))


def merge_prose_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="twins_to_source.py merge-prose",
        description="Merge near-identical PyTorch/Keras markdown pairs of chapter sources into shared cells with "
        "framework blocks (merge_prose). Then run `make notebooks` for the fragments.",
    )
    parser.add_argument("chapters", nargs="*", help="chapter folders or sources (default: every chapter)")
    parser.add_argument("--dry-run", action="store_true", help="report, write nothing")
    args = parser.parse_args(argv)
    for path in chapters.sources(args.chapters):
        report = merge_prose(path, write=not args.dry_run)
        print(
            f"{report['chapter']}: {report['merged']} pairs merged, {report['folded']} cells' label blocks folded, "
            f"{report['nothing shared']} share no line"
        )
        for line in report["refused"]:
            print(f"  refused: {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge-prose"]:
        return merge_prose_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    args = parser.parse_args(argv)
    rows = [convert(folder, write=not args.dry_run) for folder in args.folders]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    totals = {c: sum(row[c] for row in rows) for c in columns[1:]}
    print("| total | " + " | ".join(str(totals[c]) for c in columns[1:]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
