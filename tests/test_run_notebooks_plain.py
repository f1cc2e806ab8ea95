"""scripts/run_notebooks_plain.py: cells run in order in one namespace, the last expression is echoed, a failing
notebook is reported as failed, and --record-runtimes stores only the notebooks that ran to the end."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "run_notebooks_plain.py"


def _notebook(path: Path, *cells: str) -> Path:
    path.write_text(
        json.dumps(
            {"cells": [{"cell_type": "code", "source": c} for c in cells] + [{"cell_type": "markdown", "source": "x"}]}
        )
    )
    return path


def test_runs_cells_in_order_reports_failures_and_records_only_passing_notebooks(tmp_path):
    good = _notebook(tmp_path / "good.ipynb", "x = 20", "x + 22")
    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('broken on purpose')")
    runtimes = tmp_path / "runtimes.json"
    runtimes.write_text(json.dumps({"other": {"cpu": {"seconds": 1.0}}}))  # entries of other notebooks stay
    log, results = tmp_path / "log.txt", tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--log", str(log), "--json", str(results), "--record-runtimes", str(runtimes)]
        + [str(good), str(bad)],
        env={**os.environ, "BOOK_PROFILE": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads(results.read_text())
    assert runs["good"]["status"] == "ok" and runs["bad"]["status"] == "failed"
    text = log.read_text()
    assert "\n42\n" in text and "broken on purpose" in text  # the last expression is echoed; the error is logged
    table = json.loads(runtimes.read_text())
    assert set(table) == {"other", "good"} and table["good"]["cpu"]["seconds"] == runs["good"]["seconds"]
