"""pytest plugin for the book: thread caps under pytest-xdist, and `--record-runtimes`.

`make test` runs the suite with pytest-xdist, one worker per core, each notebook's cells in one worker
(`--dist loadfile`). Each worker (and every notebook kernel it starts) gets cores/workers threads, so that
the workers do not fight over the cores; the variables are set here, before PyTorch or TensorFlow is imported.

nbval turns every notebook cell into a test item; with `--record-runtimes` the durations of a notebook's items
are summed and stored in book/runtimes.json under the active profile, with the machine it ran on. Notebook
headers print that table, so no runtime in the book is typed by hand. Under xdist the controller receives every
report and writes the file once; the workers write nothing.

Temporary files: nbval stops each kernel by killing it, so a notebook's `tempfile.TemporaryDirectory()` is never
cleaned up by the kernel, and TensorFlow leaves its autograph files behind. Every process of the run (and every kernel
it starts) therefore gets its own TMPDIR, removed with everything in it when that process ends.
"""

import collections
import os
import shutil
import tempfile
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def _cap_threads() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, threads)
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


_cap_threads()

_scratch: str | None = None


def pytest_configure(config):
    """Point TMPDIR (inherited by kernels and subprocesses) at a folder of this process's own."""
    global _scratch
    _scratch = tempfile.mkdtemp(prefix="tl-book-test-")
    os.environ["TMPDIR"] = _scratch
    tempfile.tempdir = None  # forget the cached default, so this process uses the new folder too


def pytest_unconfigure(config):
    if _scratch:
        shutil.rmtree(_scratch, ignore_errors=True)


_durations: dict[str, float] = collections.defaultdict(float)


def pytest_addoption(parser):
    parser.addoption("--record-runtimes", action="store_true", help="store notebook run times in book/runtimes.json")


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _durations[Path(path).stem] += report.duration


def pytest_sessionfinish(session, exitstatus):
    is_worker = hasattr(session.config, "workerinput")
    if is_worker or not session.config.getoption("--record-runtimes") or exitstatus != 0 or not _durations:
        return
    from helpers import config

    config.record_runtimes(dict(_durations), config.profile_name(), config.machine_description())
