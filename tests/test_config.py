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
    monkeypatch.setattr(config, "framework_gpus", lambda: {})  # no framework imported: the machine decides
    monkeypatch.setattr(config, "gpu_visible", lambda: True)
    assert config.profile_name() == "full"
    monkeypatch.setattr(config, "gpu_visible", lambda: False)
    assert config.profile_name() == "cpu"


def test_default_profile_follows_the_framework_in_use_not_the_machine(monkeypatch):
    """tensorflow-cpu on a GPU machine: a Keras notebook must not default to the full profile on the CPU."""
    monkeypatch.delenv("BOOK_PROFILE", raising=False)
    monkeypatch.setattr(config, "gpu_visible", lambda: True)
    monkeypatch.setattr(config, "framework_gpus", lambda: {"keras": False})
    assert config.profile_name() == "cpu"
    monkeypatch.setattr(config, "framework_gpus", lambda: {"torch": True})
    assert config.profile_name() == "full"
    monkeypatch.setattr(config, "framework_gpus", lambda: {"torch": True, "keras": False})
    assert config.profile_name() == "cpu"


def test_framework_gpus_asks_the_imported_frameworks():
    import helpers.keras
    import helpers.torch

    assert config.framework_gpus() == {
        "torch": helpers.torch.device() == "cuda",
        "keras": helpers.keras.device() == "cuda",
    }


def test_header_warns_when_the_full_profile_runs_on_a_cpu(monkeypatch, capsys):
    monkeypatch.setenv("BOOK_PROFILE", "full")
    with pytest.warns(UserWarning, match="full profile is sized for a GPU"):
        config.header("nothing_measured", {"device": "cpu"})
    assert "device: cpu (set by BOOK_PROFILE)" in capsys.readouterr().out
    assert config.check_device("full", "cuda") is None and config.check_device("cpu", "cpu") is None


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
