import re
from pathlib import Path

import pytest

from helpers import config

PREFACE = Path(__file__).parent.parent / "book" / "preface.md"


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BOOK_PROFILE", "cpu")
    assert config.profile().name == "cpu"
    monkeypatch.setenv("BOOK_PROFILE", "SMOKE")
    assert config.profile() is config.PROFILES["smoke"]


def test_default_profile_depends_on_the_gpu(monkeypatch):
    monkeypatch.delenv("BOOK_PROFILE", raising=False)
    monkeypatch.setattr(config, "gpu_visible", lambda: True)
    assert config.profile_name() == "full"
    monkeypatch.setattr(config, "gpu_visible", lambda: False)
    assert config.profile_name() == "cpu"


def test_unknown_profile_lists_the_known_ones(monkeypatch):
    monkeypatch.setenv("BOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="smoke, cpu, full"):
        config.profile()


def test_profiles_grow_from_smoke_to_full():
    smoke, cpu, full = (config.PROFILES[n] for n in ("smoke", "cpu", "full"))
    for field in ("train_per_class", "image_size", "epochs"):
        assert getattr(smoke, field) <= getattr(cpu, field) <= getattr(full, field)


def test_preface_profile_table_matches_the_code():
    rows = [line for line in PREFACE.read_text().splitlines() if re.match(r"\| `(smoke|cpu|full)` \|", line)]
    assert len(rows) == 3, "the preface must list every profile"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        p = config.PROFILES[cells[0].strip("`")]
        expected = [p.train_per_class, p.test_per_class, p.image_size, p.epochs, p.scratch_epochs, p.batch_size]
        assert [int(c) for c in cells[2:]] == expected, f"preface row for {p.name} is out of date"


def test_recorded_runtimes_reach_the_notebook_header(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, "RUNTIMES_FILE", tmp_path / "runtimes.json")
    config.record_runtimes({"demo_torch": 12.345}, "cpu", "test machine")
    config.record_runtimes({"demo_torch": 3.0}, "smoke", "test machine")
    rows = config.measured_runtimes("demo_torch")
    assert [(r["profile"], r["seconds"]) for r in rows] == [("smoke", 3.0), ("cpu", 12.3)]
    config.header("demo_torch", {"numpy": "2"})
    printed = capsys.readouterr().out
    assert "cpu       12.3 s   test machine" in printed and "versions: numpy 2" in printed
