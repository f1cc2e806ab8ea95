"""The claims ledger (book/claims.json) and `helpers.claims.claim`.

`test_every_notebook_has_a_current_cpu_entry` is what makes every change to a chapter land with its cpu run:
it fails when a notebook's entry is missing, when its code or one of its helpers modules changed since the run
(scripts/claims.py, `fingerprint`), when the run failed, or when a claim did not hold.
"""

import json
import re
import sys
from pathlib import Path

import pytest

from helpers import claims
from helpers.claims import ClaimFailed, claim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import claims as ledger_script  # noqa: E402  (scripts/claims.py)

NOTEBOOKS = ledger_script.notebooks()


def test_the_book_has_44_notebooks_and_each_chapter_a_module_entry():
    assert len(NOTEBOOKS) == 44, [p.name for p in NOTEBOOKS]  # 40 chapter notebooks and 4 appendix pages
    chapters = {p.stem.rpartition("_")[0] for p in NOTEBOOKS if p.stem.endswith(("_torch", "_keras"))}
    assert chapters == set(ledger_script.CHAPTER_MODULES), chapters ^ set(ledger_script.CHAPTER_MODULES)
    for by_wing in ledger_script.CHAPTER_MODULES.values():
        for framework, stems in by_wing.items():
            assert stems, f"every chapter's notebooks depend on a {framework} module"
            for stem in stems:
                assert (ROOT / "helpers" / framework / f"{stem}.py").exists(), (framework, stem)


def test_every_notebook_has_a_current_cpu_entry():
    ledger = ledger_script.load_ledger()
    found = [problem for notebook in NOTEBOOKS for problem in ledger_script.problems(notebook, ledger, "cpu")]
    assert not found, "the claims ledger is not current; run `make claims`:\n" + "\n".join(found)


def test_no_notebook_hides_an_assert_behind_the_profile():
    guarded = re.compile(
        r"if profile\.name\s*(!=|==|in|not in)[^\n]*\n?\s*[^\n]*\bassert\b|if profile\.name[^\n]*:\s*assert"
    )
    offenders = []
    for notebook in NOTEBOOKS:
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code" and guarded.search("".join(cell["source"])):
                offenders.append(notebook.name)
    assert not offenders, f"state these results with claim(...) instead of a profile-guarded assert: {offenders}"


def test_a_failed_claim_raises_in_cpu_and_is_printed_in_smoke(monkeypatch, capsys):
    monkeypatch.setenv("BOOK_PROFILE", "cpu")
    with pytest.raises(ClaimFailed, match=r"the probe beats scratch \(probe = 0.5, scratch = 0.6\)"):
        claim(0.5 > 0.6, "the probe beats scratch", probe=0.5, scratch=0.6)
    assert claim(0.7 > 0.6, "the probe beats scratch", probe=0.7) is True
    assert "claim held (cpu): the probe beats scratch" in capsys.readouterr().out
    monkeypatch.setenv("BOOK_PROFILE", "smoke")
    assert claim(0.5 > 0.6, "the probe beats scratch", probe=0.5) is False
    out = capsys.readouterr().out
    assert "checked in the cpu profile" in out and "probe = 0.5" in out and "does not hold" in out
    with pytest.raises(ClaimFailed):
        claim(False, "the written-out loop equals the helper", in_smoke=True, gap=1.0)


def test_claims_are_recorded_with_plain_values(monkeypatch, tmp_path):
    import numpy as np

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("BOOK_PROFILE", "smoke")
    monkeypatch.setenv(claims.LOG_VARIABLE, str(log))
    claim(np.float32(0.25) < 1, "small", gap=np.float32(0.25), n=np.int64(3), flags=np.array([True, False]))
    claim(True, "exact", in_smoke=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows[0] == {
        "claim": "small",
        "held": True,
        "asserted": False,
        "profile": "smoke",
        "values": {"gap": 0.25, "n": 3, "flags": [True, False]},
    }
    assert rows[1]["asserted"] is True and rows[1]["values"] == {}


def test_a_claim_needs_one_truth_value_and_a_message(monkeypatch):
    import numpy as np

    monkeypatch.setenv("BOOK_PROFILE", "cpu")
    with pytest.raises(TypeError, match=r"\.all\(\) or \.any\(\)"):
        claim(np.array([1.0, 2.0]) > 0, "both positive")
    with pytest.raises(ValueError, match="needs a message"):
        claim(True, " ")


def test_the_fingerprint_follows_code_and_modules_not_prose(tmp_path, monkeypatch):
    book = tmp_path / "book" / "19_audio"
    book.mkdir(parents=True)
    (tmp_path / "helpers" / "torch").mkdir(parents=True)
    for name in ("helpers/config.py", "helpers/audio.py", "helpers/torch/audio.py", "helpers/torch/training.py"):
        (tmp_path / name).write_text("x = 1\n")
    notebook = book / "audio_torch.ipynb"
    cells = [
        {"cell_type": "markdown", "source": ["# Audio"], "metadata": {}},
        {"cell_type": "code", "source": ["from helpers import audio, config\n", "x = 1"], "metadata": {}},
    ]
    notebook.write_text(json.dumps({"cells": cells}))
    monkeypatch.setattr(ledger_script, "ROOT", tmp_path)
    first = ledger_script.fingerprint(notebook)
    assert set(first["modules"]) == {"helpers/audio.py", "helpers/config.py", "helpers/torch/audio.py"}
    cells[0]["source"] = ["# Audio, retold"]
    notebook.write_text(json.dumps({"cells": cells}))
    assert ledger_script.fingerprint(notebook) == first  # prose does not make an entry stale
    (tmp_path / "helpers/torch/training.py").write_text("x = 2\n")
    assert ledger_script.fingerprint(notebook) == first  # nor a module the chapter does not own
    (tmp_path / "helpers/torch/audio.py").write_text("x = 2\n")
    assert ledger_script.fingerprint(notebook)["modules"] != first["modules"]
    cells[1]["source"] = ["from helpers import audio, config\n", "x = 2"]
    notebook.write_text(json.dumps({"cells": cells}))
    assert ledger_script.fingerprint(notebook)["code"] != first["code"]


def test_problems_names_what_is_wrong(tmp_path, monkeypatch):
    notebook = NOTEBOOKS[0]
    entry = {"fingerprint": ledger_script.fingerprint(notebook), "date": "2026-12-06", "status": "ok"}
    held = {**entry, "claims": [{"claim": "a", "held": True, "asserted": True}]}
    assert ledger_script.problems(notebook, {notebook.stem: {"cpu": held}}) == []
    assert "no cpu entry" in ledger_script.problems(notebook, {})[0]
    failed = {**entry, "claims": [{"claim": "b", "held": False, "asserted": True}]}
    assert ledger_script.problems(notebook, {notebook.stem: {"cpu": failed}}) == [f"{notebook.stem}: claim failed: b"]
    stale = {**held, "fingerprint": {**entry["fingerprint"], "code": "0" * 16}}
    assert "its code changed" in ledger_script.problems(notebook, {notebook.stem: {"cpu": stale}})[0]
    crashed = {**held, "status": "failed", "error": "KeyError"}
    assert "run failed: KeyError" in ledger_script.problems(notebook, {notebook.stem: {"cpu": crashed}})[0]


def test_record_runtimes_copies_the_ledgers_seconds_and_dates():
    import record_runtimes  # scripts/record_runtimes.py

    ledger = {
        "a_torch": {"cpu": {"status": "ok", "seconds": 61.26, "date": "2026-12-01", "device": "cpu"}},
        "b_keras": {"cpu": {"status": "failed", "seconds": 5.0, "date": "2026-12-02", "device": "cpu"}},
        "c_torch": {"full": {"status": "ok", "seconds": 9.0, "date": "2026-12-03", "device": "cuda"}},
    }
    runtimes = {"a_torch": {"smoke": {"seconds": 3.0}, "cpu": {"seconds": 1.0}}, "b_keras": {"cpu": {"seconds": 7.0}}}
    table, copied = record_runtimes.runtimes_from_ledger(ledger, runtimes, "cpu", "this machine")
    assert copied == 1
    assert table["a_torch"] == {
        "smoke": {"seconds": 3.0},
        "cpu": {"seconds": 61.3, "machine": "this machine", "date": "2026-12-01"},
    }
    assert table["b_keras"] == {"cpu": {"seconds": 7.0}}  # a failed run's time is not a run time
    assert "c_torch" not in table and runtimes["a_torch"]["cpu"] == {"seconds": 1.0}  # the input is not changed
    full, copied = record_runtimes.runtimes_from_ledger(ledger, {}, "full", "this machine")
    assert copied == 1 and full["c_torch"]["full"]["machine"] == "a cuda machine"
