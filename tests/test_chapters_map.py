"""The chapter map (helpers/chapters.py) is true to the files on disk, and each chapter's slug names its modules.

The rule (issue 20, part 3): chapter `slug` keeps its framework-neutral part in helpers/<slug>.py, its wings in
helpers/torch/<slug>.py and helpers/keras/<slug>.py, its tests in tests/test_<slug>.py (or test_<slug>_<aspect>.py).
Base layers keep their own names. Every chapter follows the rule; NOT_YET_RENAMED, the list of exceptions, is
empty and only shrinks: a chapter that breaks the rule unlisted fails, and so does a listed name that follows the
rule already. Text only: nothing here imports a framework.
"""

from pathlib import Path

import pytest

from helpers import chapters
from helpers.chapters import BASE_LAYERS, BASE_PACKAGES, CHAPTERS, module_path

ROOT = Path(__file__).resolve().parent.parent

# Test files of the base layers and of the build (not of one chapter); they keep their names.
BASE_TESTS = {
    "test_behaviour.py",
    "test_browser.py",
    "test_chapters.py",
    "test_chapters_map.py",
    "test_checks.py",
    "test_claims.py",
    "test_config.py",
    "test_data.py",
    "test_frameworks.py",
    "test_imports.py",
    "test_lab.py",
    "test_lock.py",
    "test_neutral.py",
    "test_notebooks.py",
    "test_parity.py",
    "test_registry.py",
    "test_registry_concurrency.py",
    "test_registry_derived.py",
    "test_registry_sources.py",
    "test_run_notebooks_plain.py",
    "test_workflow.py",
}

# slug -> (the paths its slug does not name yet, why they wait): none left, every chapter follows its slug.
NOT_YET_RENAMED: dict[str, tuple[set[str], str]] = {}

CHAPTER_DIRS = sorted(p.name for p in (ROOT / "book").glob("[0-9][0-9]_*") if p.is_dir())


# ----------------------------------------------------------------------------- the map is true to the files


def test_the_map_has_every_chapter_folder_in_book_order():
    assert [c.folder for c in CHAPTERS] == CHAPTER_DIRS
    assert [c.number for c in CHAPTERS] == list(range(1, len(CHAPTER_DIRS) + 1))
    assert all(c.folder.startswith(f"{c.number:02d}_") for c in CHAPTERS)
    assert len(chapters.BY_SLUG) == len(CHAPTERS), "slugs are unique"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_every_file_a_chapter_names_exists(chapter):
    folder = ROOT / "book" / chapter.folder
    assert sorted(p.relative_to(ROOT).as_posix() for p in folder.glob("*.ipynb")) == sorted(chapter.notebooks)
    assert [p.relative_to(ROOT).as_posix() for p in folder.glob("*.src.md")] == [chapter.source]
    paths = [*chapter.modules(), *(f"tests/{test}" for test in chapter.tests)]
    assert not [p for p in paths if not (ROOT / p).is_file()], "named in the map, missing on disk"
    for wing in chapters.WINGS:
        assert set(chapter.builds_on) <= set(BASE_LAYERS[wing]), "builds_on names base layers"
        for stem in chapter.wing_modules(wing):
            assert (ROOT / module_path(wing, stem)).is_file()


def test_every_helpers_module_is_a_base_layer_or_one_chapter_s():
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*.py")}
    base = {module_path(level, stem) for level, stems in BASE_LAYERS.items() for stem in stems}
    base |= {p.relative_to(ROOT).as_posix() for stem in BASE_PACKAGES for p in (ROOT / "helpers" / stem).rglob("*.py")}
    owned = [path for chapter in CHAPTERS for path in chapter.modules()]
    assert len(owned) == len(set(owned)), "a module belongs to one chapter"
    assert not base & set(owned), "a base layer belongs to no chapter"
    assert not base - on_disk, f"base layers missing: {sorted(base - on_disk)}"
    assert on_disk == base | set(owned), (
        f"in no chapter and not a base layer: {sorted(on_disk - base - set(owned))} "
        "(add it to its chapter in helpers/chapters.py, or to BASE_LAYERS)"
    )


def test_every_test_file_is_a_base_test_or_a_chapter_s():
    on_disk = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    named = {test for chapter in CHAPTERS for test in chapter.tests}
    assert not BASE_TESTS & named
    assert on_disk == BASE_TESTS | named, (
        f"unknown: {sorted(on_disk - BASE_TESTS - named)}, missing: {sorted((BASE_TESTS | named) - on_disk)} "
        "(name a chapter's tests tests/test_<slug>.py and list them in helpers/chapters.py)"
    )


# ----------------------------------------------------------------------------- one name per chapter


def test_no_chapter_breaks_the_slug_rule_beyond_the_list():
    found = {c.slug: chapters.names_off_slug(c) - NOT_YET_RENAMED.get(c.slug, (set(), ""))[0] for c in CHAPTERS}
    found = {slug: sorted(paths) for slug, paths in found.items() if paths}
    assert not found, (
        f"not named by the chapter's slug: {found}; use helpers/<slug>.py, helpers/torch/<slug>.py, "
        "helpers/keras/<slug>.py, tests/test_<slug>.py"
    )


def test_the_not_yet_renamed_list_only_shrinks():
    assert set(NOT_YET_RENAMED) <= set(chapters.BY_SLUG)
    done = {
        slug: sorted(paths - chapters.names_off_slug(chapters.BY_SLUG[slug]))
        for slug, (paths, _) in NOT_YET_RENAMED.items()
    }
    done = {slug: paths for slug, paths in done.items() if paths}
    assert not done, f"these follow the slug now (or are gone): delete them from NOT_YET_RENAMED: {done}"


def test_the_rule_itself():
    fine = chapters.Chapter(99, "x", "99_x", "x", "x", "x", tests=("test_x.py", "test_x_data.py"))
    assert chapters.names_off_slug(fine) == set()
    off = chapters.Chapter(99, "x", "99_x", "y", None, "x", tests=("test_xy.py",))
    assert chapters.names_off_slug(off) == {"helpers/y.py", "tests/test_xy.py"}
