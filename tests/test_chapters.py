"""One source per chapter (scripts/chapters.py): the committed notebooks and fragments are what the sources generate.

Text and JSON only (a few seconds): no notebook runs here.
"""

import functools
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import chapters  # noqa: E402

SOURCES = chapters.sources()
CHAPTER_DIRS = sorted(p for p in (ROOT / "book").glob("[0-9][0-9]_*") if p.is_dir())


@functools.cache
def generated(source: Path) -> dict[Path, str]:
    return chapters.generate(chapters.read_chapter(source))


def test_every_chapter_has_one_source_and_every_chapter_notebook_comes_from_one():
    assert [p.parent for p in SOURCES] == CHAPTER_DIRS, "each chapter folder holds exactly one <stem>.src.md"
    made = {path for source in SOURCES for path in generated(source) if path.suffix == ".ipynb"}
    committed = {p for folder in CHAPTER_DIRS for p in folder.glob("*.ipynb")}
    assert committed == made, f"notebooks without a source: {sorted(p.name for p in committed - made)}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_committed_files_are_what_the_source_generates(source):
    """The two notebooks and differences.md, byte for byte: edit the source and run `make notebooks`."""
    for path, text in generated(source).items():
        assert path.exists(), f"{path.name} is missing: run `make notebooks`"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} differs from what {source.name} generates: edit the source (never the "
            "generated file) and run `make notebooks`"
        )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_generated_twins_have_identical_headings(source):
    chapter = chapters.read_chapter(source)
    heads = {fw: _headings(chapters.notebook(chapter, fw)) for fw in chapters.FRAMEWORKS}
    assert heads["torch"][0] == heads["keras"][0].replace(" — Keras", " — PyTorch")
    assert heads["torch"][1:] == heads["keras"][1:]


@pytest.mark.parametrize("folder", CHAPTER_DIRS, ids=lambda p: p.name)
def test_each_chapter_page_includes_its_differences(folder):
    text = (folder / "index.md").read_text(encoding="utf-8")
    assert f"```{{include}} {chapters.FRAGMENT}\n```" in text, f"{folder.name}/index.md does not include its tabs"
    fragment = (folder / chapters.FRAGMENT).read_text(encoding="utf-8")
    assert fragment.count("{tab-set}") >= 1 and fragment.count(f":sync-group: {chapters.SYNC_GROUP}") == (
        fragment.count("{tab-set}")
    )


def _headings(nb: dict) -> list[str]:
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return [line.strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


# ----------------------------------------------------------------------------- toy sources

HEADER = """\
---
kernelspec:
  display_name: Python 3
  language: python
  name: python3
language_info:
  name: python
---

+++ {"framework": "torch", "torch_id": "title-t"}

# Toy — PyTorch

+++ {"framework": "keras", "keras_id": "title-k"}

# Toy — Keras

```{code-cell}
:framework: torch

from helpers import torch as book
```

```{code-cell}
:framework: keras

from helpers import keras as book
```

## Training

Shared prose.
"""


def toy(tmp_path: Path, body: str, name: str = "toy") -> Path:
    path = tmp_path / f"{name}{chapters.SUFFIX}"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_a_toy_source_gives_each_notebook_its_cells(tmp_path):
    body = """
```{code-cell}
:framework: torch

import torch

model.train()
```

```{code-cell}
:framework: keras

model.compile("adam")
```

```{code-cell}
:torch_id: shared-t
:keras_id: shared-k

print("both")
```
"""
    chapter = chapters.read_chapter(toy(tmp_path, body))
    torch_nb, keras_nb = (chapters.notebook(chapter, fw) for fw in chapters.FRAMEWORKS)
    code = {
        fw: ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        for fw, nb in (("torch", torch_nb), ("keras", keras_nb))
    }
    assert code["torch"][1:] == ["import torch\n\nmodel.train()", 'print("both")']
    assert code["keras"][1:] == ['model.compile("adam")', 'print("both")']
    assert torch_nb["cells"][-1]["id"] == "shared-t" and keras_nb["cells"][-1]["id"] == "shared-k"
    assert (
        torch_nb["metadata"]
        == keras_nb["metadata"]
        == {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        }
    )
    assert all(c["metadata"] == {} for c in torch_nb["cells"] + keras_nb["cells"]), "markers stay in the source"
    again = chapters.notebook(chapters.read_chapter(toy(tmp_path, body)), "torch")
    assert [c["id"] for c in again["cells"]] == [c["id"] for c in torch_nb["cells"]], "derived ids are stable"
    assert len({c["id"] for c in torch_nb["cells"]}) == len(torch_nb["cells"])
    json.loads(chapters.dumps(torch_nb))


@pytest.mark.parametrize(
    ("marker", "code", "caught"),
    [
        ("keras", "import torch\n\nx = torch.ones(2)", "torch"),
        ("keras", "from torch import nn\n\nlayer = nn.Linear(2, 2)", "nn, torch"),
        ("keras", "from helpers import torch as book", "torch"),
        ("torch", "layer = keras.layers.Dense(2)", "keras"),
        ("torch", "x = tf.constant(1.0)", "tf"),
        (None, "model = torchvision.models.resnet18()", "torchvision"),  # shared: lands in the Keras notebook
    ],
)
def test_a_cell_in_the_wrong_notebook_is_caught(tmp_path, marker, code, caught):
    options = f":framework: {marker}\n" if marker else ""
    body = f"\n```{{code-cell}}\n{options}\n{code}\n```\n"
    chapter = chapters.read_chapter(toy(tmp_path, body))
    problems = chapters.leaks(chapter)
    assert len(problems) == 1 and f"uses {caught} in the" in problems[0], problems
    assert "line 34" in problems[0], "the message points at the cell in the source"
    with pytest.raises(chapters.SourceError, match="mark it `framework: "):
        chapters.generate(chapter)


def test_the_other_framework_in_strings_comments_and_attributes_is_not_a_leak(tmp_path):
    body = """
```{code-cell}
:framework: keras

# unlike torch.no_grad(), Keras needs no context here
print("torch.compile has no Keras twin")
counts = book.torch_style_counts(model)
```
"""
    assert chapters.leaks(chapters.read_chapter(toy(tmp_path, body))) == []


@pytest.mark.parametrize(
    "body",
    [
        "\n```{code-cell}\n:framework: pytorch\n\nx = 1\n```\n",
        '\n+++ {"framework": "tensorflow"}\n\nProse for TensorFlow.\n',
    ],
)
def test_an_unknown_framework_gives_one_clear_error(tmp_path, body):
    with pytest.raises(chapters.SourceError) as error:
        chapters.read_chapter(toy(tmp_path, body))
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "expected 'torch' or 'keras'" in message and "line 34" in message


def test_a_cell_cannot_carry_the_other_notebooks_id(tmp_path):
    body = "\n```{code-cell}\n:framework: keras\n:torch_id: abc\n\nx = 1\n```\n"
    with pytest.raises(chapters.SourceError, match="keras-only cell cannot carry torch_id"):
        chapters.read_chapter(toy(tmp_path, body))


def test_duplicate_ids_are_refused(tmp_path):
    cell = "\n```{{code-cell}}\n:keras_id: same\n:torch_id: {}\n\nx = 1\n```\n"
    body = cell.format("a") + cell.format("b")
    with pytest.raises(chapters.SourceError, match="both cells have keras_id 'same'"):
        chapters.read_chapter(toy(tmp_path, body))


def test_the_fragment_shows_each_difference_in_synced_tabs_under_its_section(tmp_path):
    body = """
```{code-cell}
:framework: torch

model.train()
```

```{code-cell}
:framework: keras

model.compile("adam")
```

+++ {"framework": "torch"}

:::{exercise}
:label: ex-toy-torch-1

Same exercise.
:::

+++ {"framework": "keras"}

:::{exercise}
:label: ex-toy-keras-1

Same exercise.
:::

+++

## Export

+++ {"framework": "torch"}

Only PyTorch says this.
"""
    text = chapters.fragment(chapters.read_chapter(toy(tmp_path, body)))
    sections = re.findall(r"^### (.+)$", text, re.M)
    assert sections == [chapters.OPENING, "Training", "Export"]
    assert text.count("{tab-set}") == 3 and text.count(":sync-group: framework") == 3
    assert text.count("{tab-item} PyTorch\n:sync: torch") == 3 and text.count("{tab-item} Keras\n:sync: keras") == 3
    training = text.split("### Training")[1].split("### Export")[0]
    assert "```python\nmodel.train()\n```" in training and '```python\nmodel.compile("adam")\n```' in training
    assert "ex-toy" not in text, "exercises that differ only in their label are not shown"
    assert "Not shown: 2 pairs" in text  # the title and the exercise
    assert "*The Keras notebook has nothing here; the PyTorch notebook needs these cells.*" in text
    assert "{code-cell}" not in text, "nothing in the fragment is executed"


def test_check_mode_fails_on_a_hand_edited_notebook(tmp_path, capsys):
    folder = tmp_path / "01_toy"
    folder.mkdir()
    toy(folder, "\nPlain prose.\n")
    assert chapters.main([str(folder)]) == 0
    assert chapters.main(["--check", str(folder)]) == 0
    notebook = folder / "toy_keras.ipynb"
    notebook.write_text(notebook.read_text(encoding="utf-8").replace("Plain prose.", "Edited by hand."))
    assert chapters.main(["--check", str(folder)]) == 1
    assert "toy_keras.ipynb" in capsys.readouterr().err


def test_a_comment_in_a_code_block_of_prose_is_not_a_heading(tmp_path):
    body = """
+++ {"framework": "torch"}

Written out:

```python
# not a heading
x = 1
```

+++ {"framework": "keras"}

Written out in Keras.
"""
    text = chapters.fragment(chapters.read_chapter(toy(tmp_path, body)))
    assert re.findall(r"^### (.+)$", text, re.M) == [chapters.OPENING, "Training"]
    assert "```python\n# not a heading\nx = 1\n```" in text


# ----------------------------------------------------------------------------- framework blocks in shared prose

BLOCKS = """
+++ {"torch_id": "intro-t", "keras_id": "intro-k"}

**Objectives**
- load the data;
<!-- torch -->
- write the loop with `zero_grad`/`backward`/`step`;
<!-- keras -->
- `compile` and `fit`;
- recompile after unfreezing;
<!-- both -->
- compare with the helper.

<!-- keras -->
Keras also traces the step.

<!-- both -->
```python
<!-- torch -->
print("a fenced marker is text")
```
"""


def _markdown(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def test_blocks_in_a_shared_markdown_cell_go_to_their_notebook_only(tmp_path):
    chapter = chapters.read_chapter(toy(tmp_path, BLOCKS))
    texts = {fw: _markdown(chapters.notebook(chapter, fw))[-1] for fw in chapters.FRAMEWORKS}
    fenced = '```python\n<!-- torch -->\nprint("a fenced marker is text")\n```'
    assert texts["torch"] == (
        "**Objectives**\n- load the data;\n- write the loop with `zero_grad`/`backward`/`step`;\n"
        "- compare with the helper.\n\n" + fenced
    )
    assert texts["keras"] == (
        "**Objectives**\n- load the data;\n- `compile` and `fit`;\n- recompile after unfreezing;\n"
        "- compare with the helper.\n\nKeras also traces the step.\n\n" + fenced
    )
    cell = chapter.cells[-1]
    assert cell.framework is None and len(cell.differences) == 2
    assert cell.differences[0].line == 38, "a block knows the source line of its first marker"
    assert [c["id"] for c in chapters.notebook(chapter, "keras")["cells"]][-1] == "intro-k"
    assert chapters.kept_twice(chapter) == 0, "no line is in both a PyTorch-only and a Keras-only part"


@pytest.mark.parametrize(
    ("body", "line", "wrong", "fix"),
    [
        (
            "\nShared.\n<!-- torch -->\nOnly PyTorch.\n",
            35,
            "still open (<!-- torch -->) at the end of its cell (line 36)",
            "close it with a line <!-- both -->",
        ),
        (
            "\nShared.\n<!-- pytorch -->\nOnly PyTorch.\n<!-- both -->\n",
            35,
            "unknown marker <!-- pytorch -->",
            "expected <!-- torch -->, <!-- keras --> or <!-- both -->",
        ),
        (
            "\nShared.\n<!-- both -->\n",
            35,
            "<!-- both --> closes a framework block, but none is open",
            "remove it",
        ),
        (
            '\n+++ {"framework": "keras"}\n\nKeras.\n<!-- torch -->\nPyTorch.\n<!-- both -->\n',
            37,
            "in a markdown cell marked `framework: keras`",
            "drop `framework` from the cell's +++ line",
        ),
    ],
    ids=["left-open", "unknown-marker", "both-without-block", "block-in-a-marked-cell"],
)
def test_a_wrong_framework_block_gives_one_clear_error(tmp_path, body, line, wrong, fix):
    with pytest.raises(chapters.SourceError) as error:
        chapters.read_chapter(toy(tmp_path, body))
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"toy{chapters.SUFFIX}, line {line}: "), message
    assert wrong in message and fix in message, message


def test_markers_in_a_code_cell_or_a_fenced_block_are_text(tmp_path):
    body = '\n```{code-cell}\nhtml = """\n<!-- torch -->\n"""\n```\n\n~~~\n<!-- pytorch -->\n~~~\n'
    chapter = chapters.read_chapter(toy(tmp_path, body))
    for framework in chapters.FRAMEWORKS:
        nb = chapters.notebook(chapter, framework)
        assert "".join(nb["cells"][-2]["source"]) == 'html = """\n<!-- torch -->\n"""'
        assert _markdown(nb)[-1] == "~~~\n<!-- pytorch -->\n~~~"
    assert not any(cell.differences for cell in chapter.cells)


def test_the_fragment_shows_only_the_differing_blocks(tmp_path):
    body = """
## Export

+++ {"torch_id": "ex-t", "keras_id": "ex-k"}

<!-- torch -->
Save with `torch.save`.
<!-- keras -->
Save with `model.save`.
<!-- both -->
Both notebooks then reload the file.

### Reloading

Reload it.
<!-- torch -->
See `notebook_torch`.
<!-- keras -->
See `notebook_keras`.
<!-- both -->

:::{exercise}
<!-- torch -->
:label: ex-toy-torch-1
<!-- keras -->
:label: ex-toy-keras-1
<!-- both -->

Same question.
:::

:::{solution} ex-toy-torch-1
:class: dropdown

<!-- torch -->
Call `torch.load`.
<!-- keras -->
Call `keras.saving.load_model`.
<!-- both -->
:::
"""
    text = chapters.fragment(chapters.read_chapter(toy(tmp_path, body)))
    export = text.split("### Export")[1].split("### Reloading")[0]
    assert "Save with `torch.save`." in export and "Save with `model.save`." in export
    assert "reload the file" not in text, "shared lines stay out of the tabs"
    assert re.findall(r"^### (.+)$", text, re.M) == [chapters.OPENING, "Export", "Reloading"]
    reloading = text.split("### Reloading")[1]
    assert "notebook_torch" not in text and "ex-toy" not in text and "Same question" not in text
    assert "Not shown: 3 pairs" in text  # the title cells, the notebook names, the exercise label
    assert ":::{dropdown} Solution\n\nCall `torch.load`.\n:::" in reloading, "a block in a solution stays in one"
    assert reloading.count("{tab-set}") == 1


def _pair_source(tmp_path: Path, keras_metadata: str = "") -> Path:
    body = f"""
+++ {{"framework": "torch", "torch_id": "p-t"}}

## Saving

Write the weights with `torch.save`.

Then reload them.

+++ {{"framework": "keras", "keras_id": "p-k"{keras_metadata}}}

## Saving

Write the weights with `model.save_weights`.

Then reload them.
"""
    return toy(tmp_path, body)


def test_merging_prose_gives_one_cell_and_the_same_notebooks(tmp_path):
    import twins_to_source

    path = _pair_source(tmp_path)
    chapter = chapters.read_chapter(path)
    before = {fw: chapters.dumps(chapters.notebook(chapter, fw)) for fw in chapters.FRAMEWORKS}
    assert chapters.kept_twice(chapter) == 4  # `## Saving`, two blank lines, `Then reload them.`
    report = twins_to_source.merge_prose(path)
    assert report["merged"] == 2 and report["refused"] == []  # and the title pair: one cell, `# Toy — @Framework@`
    text = path.read_text(encoding="utf-8")
    assert (
        '+++ {"torch_id": "p-t", "keras_id": "p-k"}\n\n## Saving\n\n<!-- torch -->\n'
        "Write the weights with `torch.save`.\n<!-- keras -->\nWrite the weights with `model.save_weights`.\n"
        "<!-- both -->\n\nThen reload them.\n"
    ) in text
    assert "<!-- torch -->" in text.split("jupytext:")[0], "the front matter's comment explains the blocks"
    after = chapters.read_chapter(path)
    assert {fw: chapters.dumps(chapters.notebook(after, fw)) for fw in chapters.FRAMEWORKS} == before
    assert chapters.kept_twice(after) == 0
    assert twins_to_source.merge_prose(path)["merged"] == 0


def test_merging_prose_leaves_a_pair_with_different_metadata(tmp_path):
    import twins_to_source

    path = _pair_source(tmp_path, keras_metadata=', "tags": ["hide"]')
    report = twins_to_source.merge_prose(path)
    assert report["merged"] == 1 and len(report["refused"]) == 1 and "metadata differs" in report["refused"][0]
    assert "Write the weights with `torch.save`.\n\nThen reload them." in path.read_text(encoding="utf-8")


def test_with_blocks_keeps_blank_lines_and_final_newlines():
    import twins_to_source

    for a, b in [
        ("A\n\nB\n\nC", "A\n\nX\n\nY\n\nC"),
        ("A\nB\n", "A\nC"),
        ("\n\nA\nB", "\nA\nC\n"),
        ("A\n```\nx\n```", "A\n```\ny\n```"),
    ]:
        merged = twins_to_source.with_blocks(a, b)
        assert chapters.expand(merged, None, "toy", 1)[0] == {"torch": a, "keras": b}, merged
    assert twins_to_source.with_blocks("A\n```\nx\n```", "A\n```\ny\n```").count("<!--") == 3, "fences stay whole"
    assert twins_to_source.with_blocks("Only PyTorch.", "Only Keras.") is None


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_no_prose_pair_is_left_that_merge_prose_would_merge(source):
    """Run `python scripts/twins_to_source.py merge-prose`: near-identical prose is one cell with blocks."""
    import twins_to_source

    cells = chapters.read_chapter(source).cells
    for first, second in zip(cells, cells[1:]):
        if first.kind == second.kind == "markdown" and (first.framework, second.framework) == chapters.FRAMEWORKS:
            mergeable = first.metadata == second.metadata and twins_to_source.one_text(first.source, second.source)
            assert not mergeable, f"{source.name}, line {first.line}: merge this pair (merge-prose)"
        if first.kind == "markdown" and first.framework is None and first.texts:
            folded = twins_to_source.one_text(first.texts["torch"], first.texts["keras"])
            assert folded in (None, first.source), (
                f"{source.name}, line {first.line}: its blocks differ only in exercise labels; write them with "
                f"{chapters.PLACEHOLDER} (merge-prose)"
            )


def test_the_placeholder_names_each_notebooks_framework_in_markdown_only(tmp_path):
    body = f"""
+++ {{"torch_id": "m-t", "keras_id": "m-k"}}

# Toy — {chapters.NAME_PLACEHOLDER}

:::{{exercise}}
:label: ex-toy-{chapters.PLACEHOLDER}-1

Try it.
:::
"""
    chapter = chapters.read_chapter(toy(tmp_path, body))
    texts = {fw: "".join(chapters.notebook(chapter, fw)["cells"][-1]["source"]) for fw in chapters.FRAMEWORKS}
    assert ":label: ex-toy-torch-1" in texts["torch"] and ":label: ex-toy-keras-1" in texts["keras"]
    assert texts["torch"].startswith("# Toy — PyTorch\n") and texts["keras"].startswith("# Toy — Keras\n")
    assert chapters.PLACEHOLDER not in texts["torch"] + texts["keras"]
    code = f"\n```{{code-cell}}\nname = '{chapters.PLACEHOLDER}'\n```\n"
    with pytest.raises(chapters.SourceError, match="in markdown cells only"):
        chapters.read_chapter(toy(tmp_path, code, name="code"))


def test_merging_folds_label_only_blocks_and_pairs_into_the_placeholder(tmp_path):
    import twins_to_source

    body = """
+++ {"torch_id": "e-t", "keras_id": "e-k"}

:::{exercise}
<!-- torch -->
:label: ex-toy-torch-1
<!-- keras -->
:label: ex-toy-keras-1
<!-- both -->

Try it.
:::

+++ {"framework": "torch", "torch_id": "s-t"}

```{solution-start} ex-toy-torch-1
:class: dropdown
```

+++ {"framework": "keras", "keras_id": "s-k"}

```{solution-start} ex-toy-keras-1
:class: dropdown
```
"""
    path = toy(tmp_path, body)
    before = {fw: chapters.dumps(chapters.notebook(chapters.read_chapter(path), fw)) for fw in chapters.FRAMEWORKS}
    report = twins_to_source.merge_prose(path)
    assert (report["merged"], report["folded"], report["refused"]) == (2, 1, [])  # the toy's title pair, too
    text = path.read_text(encoding="utf-8")
    cells = text.split("---", 2)[2]  # after the front matter, whose comment names both
    assert "<!-- torch -->" not in cells and cells.count(chapters.PLACEHOLDER) == 2
    after = chapters.read_chapter(path)
    assert {fw: chapters.dumps(chapters.notebook(after, fw)) for fw in chapters.FRAMEWORKS} == before
    assert twins_to_source.templated("see ex-toy-keras-2 and ex-toy-torch-2", "torch") == (
        f"see ex-toy-keras-2 and ex-toy-{chapters.PLACEHOLDER}-2"
    )
    assert twins_to_source.templated("# Toy — Keras\nIn PyTorch — Keras", "keras") == (
        f"# Toy — {chapters.NAME_PLACEHOLDER}\nIn PyTorch — Keras"
    ), "only a title's name is templated"
