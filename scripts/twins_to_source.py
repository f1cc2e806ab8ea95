"""One-off conversion: a chapter's twin notebooks -> its one source, `book/NN_slug/<stem>.src.md` (scripts/chapters.py).

Kept in the repository as the record of how the sources were made (and for a chapter written as twins elsewhere).
Mechanical, no judgement:
- the two notebooks' cells are aligned with difflib's SequenceMatcher on (cell type, metadata, text);
- cells that match exactly become one shared cell (no `framework` key);
- every other stretch is paired cell by cell: same cell type, in order, preferring the most similar text (a small
  dynamic programme over difflib ratios); a pair is written PyTorch cell first, then its Keras counterpart, each
  marked with `framework`; a cell with no counterpart stays a marked singleton;
- every cell keeps its id in each notebook (`torch_id`, `keras_id`), so regenerating gives the same files;
- near-identical prose is NOT merged: that is a separate, hand-made step.

It refuses to write a source that does not regenerate both notebooks byte for byte, and prints per chapter the
source's size, the shared cells, the framework-specific pairs and singletons, and the lines kept twice.

    python scripts/twins_to_source.py book/02_feature_extraction [...]    # write the sources
    python scripts/twins_to_source.py --dry-run book/*_*/                 # only the table
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

import chapters

HEADER = """\
# One source for this chapter's two notebooks: edit it, then run `make notebooks` (scripts/chapters.py); never edit
# the .ipynb files. A cell goes into both notebooks unless its metadata names one framework: `:framework: torch`
# under a code cell's ```{code-cell} line, `+++ {"framework": "keras"}` above a markdown cell. torch_id / keras_id
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


def main(argv: list[str] | None = None) -> int:
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
