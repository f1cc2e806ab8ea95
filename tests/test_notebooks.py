"""Structure of the book: twin notebooks, the notebook skeleton, clean sources, the table of contents."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CHAPTERS = sorted(p for p in BOOK.glob("[0-9][0-9]_*") if p.is_dir())
CHAPTER_NOTEBOOKS = [nb for chapter in CHAPTERS for nb in sorted(chapter.glob("*.ipynb"))]
SUFFIX = {"torch": " — PyTorch", "keras": " — Keras"}


def cells(path, kind=None):
    found = json.loads(path.read_text())["cells"]
    return [c for c in found if kind is None or c["cell_type"] == kind]


def source(cell):
    return "".join(cell["source"])


def headings(path):
    lines = [line for cell in cells(path, "markdown") for line in source(cell).splitlines()]
    return [line.strip() for line in lines if re.match(r"#{1,6} ", line)]


def test_the_book_has_chapters():
    assert CHAPTERS and len(CHAPTER_NOTEBOOKS) == 2 * len(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_has_twin_notebooks_with_identical_headings_and_a_neutral_page(chapter):
    assert (chapter / "index.md").is_file(), "every chapter needs a short framework-neutral page"
    torch_nbs = sorted(chapter.glob("*_torch.ipynb"))
    assert torch_nbs, f"{chapter.name} has no PyTorch notebook"
    for torch_nb in torch_nbs:
        keras_nb = torch_nb.with_name(torch_nb.name.replace("_torch", "_keras"))
        assert keras_nb.is_file(), f"{keras_nb.name} is missing"
        torch_h, keras_h = headings(torch_nb), headings(keras_nb)
        assert torch_h[0].endswith(SUFFIX["torch"]) and keras_h[0].endswith(SUFFIX["keras"])
        assert torch_h[0].removesuffix(SUFFIX["torch"]) == keras_h[0].removesuffix(SUFFIX["keras"])
        assert torch_h[1:] == keras_h[1:], f"headings of {torch_nb.name} and {keras_nb.name} differ"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_page_sums_up_in_chinese(chapter):
    """The neutral page ends with `## 本章要点`: what the chapter teaches and showed, for Chinese-speaking readers."""
    text = (chapter / "index.md").read_text(encoding="utf-8")
    found = re.search(r"^## 本章要点[ \t]*\n(.*?)(?=^#{1,2} |\Z)", text, re.M | re.S)
    assert found, f"{chapter.name}/index.md has no '## 本章要点' section"
    cjk = re.findall(r"[\u4e00-\u9fff]", found.group(1))
    assert len(cjk) >= 40, f"{chapter.name}/index.md: '## 本章要点' has {len(cjk)} Chinese characters, want at least 40"


@pytest.mark.parametrize("notebook", CHAPTER_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_skeleton(notebook):
    first = source(cells(notebook, "markdown")[0])
    assert first.startswith("# "), "the first cell opens with the title"
    assert re.search(r"^\*[^*].+\*$", first, re.M), "a one-line description in italics follows the title"
    for field in ("**Objectives**", "**Prerequisites**", "**Runtime**"):
        assert field in first, f"header lacks {field}"
    first_code = source(cells(notebook, "code")[0])
    assert f'config.header("{notebook.stem}"' in first_code, "the first code cell prints profile, runtimes, versions"
    assert "book.seed(" in first_code
    heads = headings(notebook)
    assert "## Summary" in heads and "## Exercises" in heads and heads.index("## Summary") < heads.index("## Exercises")
    after = "".join(source(c) for c in cells(notebook)[_index_of(notebook, "## Exercises") :])
    assert after.count(":::{exercise}") >= 3 and after.count("{solution") >= after.count(":::{exercise}")
    checked = [c for c in cells(notebook, "code")[-3:] if re.search(r"\bassert\b|\bclaim\(", source(c))]
    assert checked, "at least one exercise is auto-checked by an assert or a claim"


@pytest.mark.parametrize("notebook", CHAPTER_NOTEBOOKS, ids=lambda p: p.name)
def test_solutions_are_hidden_and_a_gated_solution_asserts(notebook):
    """Every solution sits behind a toggle; a gated solution's code cells (executed by nbval) assert."""
    found = cells(notebook)
    text = "".join(source(c) for c in found if c["cell_type"] == "markdown")
    for directive in re.findall(r"^(?::::\{solution\}|```\{solution-start\}).*\n(?::\w.*\n)*", text, re.M):
        assert ":class: dropdown" in directive, f"{notebook.name}: solution not hidden: {directive.splitlines()[0]}"
    starts = [i for i, c in enumerate(found) if c["cell_type"] == "markdown" and "{solution-start}" in source(c)]
    assert starts, f"{notebook.name} has no gated (solution-start/solution-end) solution"
    for start in starts:
        end = next(i for i in range(start, len(found)) if "{solution-end}" in source(found[i]))
        gated = [source(c) for c in found[start + 1 : end] if c["cell_type"] == "code"]
        checks = [code for code in gated if re.search(r"\bassert\b|\bclaim\(", code)]
        assert checks, f"{notebook.name}: gated solution has neither an assert nor a claim"


@pytest.mark.parametrize("notebook", CHAPTER_NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_uses_exactly_one_framework(notebook):
    code = "\n".join(source(c) for c in cells(notebook, "code"))
    framework = "torch" if notebook.stem.endswith("_torch") else "keras"
    assert f"from helpers import {framework} as book" in code
    forbidden = ("keras", "tensorflow") if framework == "torch" else ("torch", "torchvision")
    for name in forbidden:
        assert not re.search(rf"^\s*(import|from) {name}\b", code, re.M), f"{notebook.name} imports {name}"
        assert f"from helpers import {name}" not in code


@pytest.mark.parametrize("notebook", CHAPTER_NOTEBOOKS, ids=lambda p: p.name)
def test_the_framework_loads_after_helpers(notebook):
    """`helpers` sets TF_CPP_MIN_LOG_LEVEL on import and `helpers.keras` imports TensorFlow with its oneDNN notice
    held back; a TensorFlow imported before them prints its C++ logs into the notebook."""
    lines = "\n".join(source(c) for c in cells(notebook, "code")).splitlines()
    first_helpers = next(i for i, line in enumerate(lines) if line.startswith("from helpers import"))
    early = [line for line in lines[:first_helpers] if re.match(r"(import|from) (keras|tensorflow)\b", line)]
    assert not early, f"{notebook.name}: import helpers before {early}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(notebook):
    dirty = [i for i, c in enumerate(cells(notebook, "code")) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{notebook.name}: code cells {dirty} have outputs; clear them (the build makes outputs)"


def test_toc_lists_every_page_and_only_existing_pages():
    """Every .md and .ipynb under book/ is a page of _toc.yml, but for the chapter sources (`*.src.md`, from which
    scripts/chapters.py generates the notebooks) and the fragments that a page includes (`{include}`)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {toc["root"]} | set(_files(toc))
    files = [p for p in BOOK.rglob("*") if p.suffix in (".md", ".ipynb") and ".ipynb_checkpoints" not in p.parts]
    included = {
        (page.parent / name).resolve()
        for page in files
        if page.suffix == ".md"
        for name in re.findall(r"^```\{include\} (\S+)", page.read_text(encoding="utf-8"), re.M)
    }
    files = [p for p in files if not p.name.endswith(".src.md") and p.resolve() not in included]
    pages = {str(p.relative_to(ROOT).with_suffix("")) for p in files}
    assert listed == pages, f"not in _toc.yml: {pages - listed}; missing files: {listed - pages}"


def _files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for value in node.values():
            yield from _files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _files(item)


def _index_of(notebook, heading):
    for i, cell in enumerate(cells(notebook)):
        if cell["cell_type"] == "markdown" and heading in source(cell).splitlines():
            return i
    raise AssertionError(f"{notebook.name} has no {heading!r}")


# ---- the glossary: English and Chinese names, and every {term} link in the book resolves ----

GLOSSARY = BOOK / "appendix" / "glossary.md"
TERM_ROLE = re.compile(r"\{term\}`([^`]+)`")
REQUIRED_TERMS = {
    "transfer learning": "迁移学习",
    "fine-tuning": "微调",
    "pretrained model": "预训练模型",
    "feature extraction": "特征提取",
    "freezing layers": "冻结层",
    "learning-rate decay": "学习率衰减",
    "cosine annealing": "余弦退火",
    "knowledge distillation": "知识蒸馏",
    "domain adaptation": "领域自适应",
    "data augmentation": "数据增强",
    # losses
    "loss function": "损失函数",
    "cross-entropy loss": "交叉熵损失",
    "label smoothing": "标签平滑",
    "mean squared error": "均方误差",
    "Huber loss": "Huber 损失",
    "focal loss": "焦点损失",
    "InfoNCE loss": "InfoNCE 损失",
    # optimizers
    "optimizer": "优化器",
    "stochastic gradient descent": "随机梯度下降",
    "momentum": "动量",
    "Adam": "Adam 算法",
    "RMSProp": "RMSProp 算法",
    "AdaGrad": "AdaGrad 算法",
    "weight decay": "权重衰减",
    # learning rates and schedules
    "learning-rate schedule": "学习率调度",
    "step decay": "阶梯衰减",
    "exponential decay": "指数衰减",
    "warmup": "学习率预热",
    "learning-rate range test": "学习率范围测试",
    "linear scaling rule": "线性缩放规则",
    "discriminative learning rates": "分层学习率",
    "gradual unfreezing": "逐步解冻",
    # learning settings
    "linear probe": "线性探测",
    "LP-FT": "先线性探测后微调",
    "few-shot learning": "小样本学习",
    "semi-supervised learning": "半监督学习",
    "self-supervised learning": "自监督学习",
    "self-training": "自训练",
    "multi-task learning": "多任务学习",
    "unsupervised domain adaptation": "无监督领域自适应",
    "contrastive learning": "对比学习",
    "zero-shot classification": "零样本分类",
    "parameter-efficient fine-tuning": "参数高效微调",
    # application areas
    "object detection": "目标检测",
    "speech recognition": "语音识别",
    "keyword spotting": "关键词检测",
    "multimodal": "多模态",
}


def glossary_entries() -> list[list[str]]:
    """The glossary's entries, each the list of its term lines (English name, then Chinese name)."""
    block = re.search(r"```\{glossary\}\n(.*?)\n```", GLOSSARY.read_text(encoding="utf-8"), re.S).group(1)
    entries, current = [], []
    for line in block.splitlines():
        if line and not line[0].isspace() and not line.startswith(":"):
            current.append(line.strip())
        elif current:
            entries.append(current)
            current = []
    return entries + ([current] if current else [])


def test_glossary_pairs_english_and_chinese_names():
    entries = glossary_entries()
    assert len(entries) >= 40
    for names in entries:
        cjk = [n for n in names if re.search(r"[\u4e00-\u9fff]", n)]
        assert len(names) == 2 and len(cjk) == 1 and names[0] not in cjk, f"entry {names}: want English, then Chinese"
    pairs = {names[0]: names[1] for names in entries}
    for english, chinese in REQUIRED_TERMS.items():
        assert pairs.get(english) == chinese, f"glossary lacks {english} / {chinese}"


def test_every_term_link_resolves_to_the_glossary():
    defined = {name.lower() for names in glossary_entries() for name in names}
    pages = [p for p in BOOK.rglob("*") if p.suffix in (".md", ".ipynb") and ".ipynb_checkpoints" not in p.parts]
    unknown = {}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if page.suffix == ".ipynb":
            text = "\n".join(source(c) for c in cells(page, "markdown"))
        for role in TERM_ROLE.findall(text):
            target = re.fullmatch(r".*<(.+)>", role, re.S)
            name = (target.group(1) if target else role).strip().lower()
            if name not in defined:
                unknown.setdefault(page.name, []).append(role)
    assert not unknown, f"{{term}} links to terms not in the glossary: {unknown}"
