"""pytest plugin for the book: `--record-runtimes` writes each notebook's measured run time.

nbval turns every notebook cell into a test item; the durations of a notebook's items are
summed and stored in book/runtimes.json under the active profile, with the machine it ran on.
Notebook headers print that table, so no runtime in the book is typed by hand.
"""

import collections
from pathlib import Path

_durations: dict[str, float] = collections.defaultdict(float)


def pytest_addoption(parser):
    parser.addoption("--record-runtimes", action="store_true", help="store notebook run times in book/runtimes.json")


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _durations[Path(path).stem] += report.duration


def pytest_sessionfinish(session, exitstatus):
    if not session.config.getoption("--record-runtimes") or exitstatus != 0 or not _durations:
        return
    from helpers import config

    config.record_runtimes(dict(_durations), config.profile_name(), config.machine_description())
