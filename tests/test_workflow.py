"""The build plumbing agrees with itself: the Pages workflow, the README, the Makefile, `make help` and `.ci/run`.

- .github/workflows/book.yml builds the book with the command the README gives for it, only with Makefile targets
  that exist, and deploys the folder that command writes, with GitHub's own Pages actions;
- `make help` names every target of the Makefile;
- `.ci/run` gives `make test` a new, empty data cache and removes it afterwards (run with a stand-in `make`).
"""

import os
import re
import shlex
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
MAKE_OPTIONS_WITH_VALUE = {"-C", "-f", "-j", "-I", "-o", "-W"}


def makefile_targets() -> set[str]:
    """The rule names of the Makefile (not variables, not pattern or $(...) rules)."""
    text = (ROOT / "Makefile").read_text()
    return {name for name in re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}


def help_text() -> str:
    """What `make help` prints: the @echo lines of its recipe."""
    recipe = re.search(r"^help:\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    return "\n".join(re.findall(r'@echo "(.*)"', recipe))


def make_calls(script: str) -> list[str]:
    """The targets of every `make ...` command in a shell script (assignments and options skipped)."""
    targets = []
    for command in re.split(r"\n|;|&&|\|\|", script):
        words = shlex.split(command, comments=True)
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            words.pop(0)
        if not words or words[0] != "make":
            continue
        skip = False
        for word in words[1:]:
            if skip or word.startswith("-") or "=" in word:
                skip = not skip and word in MAKE_OPTIONS_WITH_VALUE
                continue
            targets.append(word)
    return targets


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def readme_book_targets() -> set[str]:
    """The `make` targets of the README's first code block whose comment says they build the HTML book."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return {m.group(1) for m in re.finditer(r"^make (\S+)\s+#.*\bHTML book\b", block, re.M)}


def test_make_call_parser():
    script = "export X=1\nmake book\nmake -s x; PYTHON=python3.11 make test lint"
    assert make_calls(script) == ["book", "x", "test", "lint"]
    assert make_calls("make -C . -j 2 check # make lab") == ["check"]
    assert make_calls("cmake ..\nmaker book\necho make test") == []


def test_workflow_builds_the_book_with_the_readme_command():
    assert readme_book_targets() == {"book"}, "the README's first section should say `make book` builds the book"
    runs = "\n".join(step.get("run", "") for step in steps(workflow()))
    assert make_calls(runs) == sorted(readme_book_targets()), runs
    missing = set(make_calls(runs)) - makefile_targets()
    assert not missing, f"book.yml calls make targets the Makefile lacks: {missing}"


def test_workflow_deploys_what_make_book_writes():
    doc = workflow()
    uses = {step["uses"].split("@")[0]: step for step in steps(doc) if "uses" in step}
    for action in ("checkout", "cache", "configure-pages", "upload-pages-artifact", "deploy-pages"):
        assert f"actions/{action}" in uses, f"book.yml should use actions/{action}"
    html = uses["actions/upload-pages-artifact"]["with"]["path"]
    assert html == "_build/html"
    book_recipe = re.search(r"^book:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"BOOK_HTML_DIR={html} " in book_recipe, "`make book` should build (and check) the folder deployed"
    assert "_build/.jupyter_cache" in uses["actions/cache"]["with"]["path"].split()
    assert doc["permissions"]["pages"] == "write" and doc["permissions"]["id-token"] == "write"
    assert doc["concurrency"]["group"] == "pages"
    deploy = next(job for job in doc["jobs"].values() if any("deploy-pages" in s.get("uses", "") for s in job["steps"]))
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"


def test_help_names_every_target():
    text = help_text()
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", text)) | set(re.findall(r"([a-z][\w-]*) \(", text))
    missing = makefile_targets() - named - {"help"}
    assert not missing, f"`make help` does not mention: {sorted(missing)}"
    assert {"test", "book", "check", "lab", "claims"} <= named


def test_ci_run_uses_a_new_empty_data_cache(tmp_path):
    bin_dir, seen = tmp_path / "bin", tmp_path / "seen"
    bin_dir.mkdir()
    stand_in = bin_dir / "make"
    stand_in.write_text(f'#!/bin/sh\necho "$* $BOOK_CACHE $(ls -A "$BOOK_CACHE" | wc -l)" >> {seen}\n')
    stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BOOK_CACHE": str(tmp_path / "warm")}
    subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, check=True, timeout=30)
    calls = [line.split() for line in seen.read_text().splitlines()]
    assert [target for target, _, _ in calls][-1] == "test", calls
    assert {cache for _, cache, _ in calls} == {calls[0][1]} and calls[0][2] == "0", calls
    cache = calls[0][1]
    assert cache != env["BOOK_CACHE"], "CI should not reuse a data cache"
    assert not Path(cache).exists(), "CI's data cache should be removed when the run ends"
    assert "set -euo pipefail" in (ROOT / ".ci" / "run").read_text()


def recipes() -> dict[str, str]:
    """Each Makefile rule's name and its recipe (the tab-indented lines under it)."""
    text = (ROOT / "Makefile").read_text()
    return {
        m.group(1): m.group(3)
        for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)([^\n]*)\n((?:\t[^\n]*\n)*)", text, re.M)
    }


def test_system_packages_are_installed_by_one_explicit_target_that_data_needs():
    found = recipes()
    calls = [name for name, recipe in found.items() if "apt-get install" in recipe]
    assert calls == ["system-packages"], f"apt-get install belongs in `make system-packages` alone, found in {calls}"
    prerequisites = re.search(r"^data\s*:([^\n]*)", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert "system-packages" in prerequisites, "`make data` (flite for chapter 19) must depend on system-packages"
    assert "system-packages" in help_text()


def test_no_launch_button_offers_a_service_where_the_notebooks_cannot_run():
    """Binder, Colab or a JupyterHub would open a notebook without the helpers package and the data cache."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    offered = {k: v for k, v in (config.get("launch_buttons") or {}).items() if k.endswith("_url") and v}
    assert not offered, f"launch buttons offered, but no notebook can import helpers there: {offered}"
