"""pytest plugin for the book: `--record-runtimes` writes each notebook's measured run time.

nbval turns every notebook cell into a test item; the durations of a notebook's items are
summed and stored in book/runtimes.json under the active profile, with the machine it ran on.
Notebook headers print that table, so no runtime in the book is typed by hand.
"""

import collections
import json
import os
import platform
import time
from pathlib import Path

RUNTIMES = Path(__file__).parent / "book" / "runtimes.json"
_durations: dict[str, float] = collections.defaultdict(float)


def pytest_addoption(parser):
    parser.addoption("--record-runtimes", action="store_true", help="store notebook run times in book/runtimes.json")


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _durations[Path(report.nodeid.split("::")[0]).stem] += report.duration


def _machine() -> str:
    cores = os.cpu_count()
    gpu = "GPU" if Path("/proc/driver/nvidia/gpus").is_dir() else "no GPU"
    return f"{platform.machine()}, {cores} CPU cores, {gpu}"


def pytest_sessionfinish(session, exitstatus):
    if not session.config.getoption("--record-runtimes") or exitstatus != 0 or not _durations:
        return
    from helpers.config import profile_name

    table = json.loads(RUNTIMES.read_text()) if RUNTIMES.exists() else {}
    for notebook, seconds in sorted(_durations.items()):
        table.setdefault(notebook, {})[profile_name()] = {
            "seconds": round(seconds, 1),
            "machine": _machine(),
            "date": time.strftime("%Y-%m-%d"),
        }
    RUNTIMES.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
