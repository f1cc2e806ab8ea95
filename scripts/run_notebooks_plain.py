"""Run notebooks' code cells top to bottom in plain Python, one fresh interpreter per notebook, with a deadline.

For machines without Jupyter (the lent GPU machine has PyTorch but no Jupyter or TensorFlow): each notebook's code
cells run in order, like a fresh kernel, and a cell's last bare expression is printed as IPython would show it.
Figures go to the Agg backend. Writes one log (every notebook's output, in order) and a JSON of seconds per
notebook and status (`ok`, `failed`, `deadline`). With `--record-runtimes`, the seconds of every notebook that ran
to the end go into book/runtimes.json under the active profile (BOOK_PROFILE), as `make record-runtimes` does from a
`make book` build: only on a machine where nothing else runs.

    python scripts/run_notebooks_plain.py --deadline 450 --log out/log.txt --json out/runs.json book/0*/*_torch.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The program each notebook runs as: cells in order, in one namespace, last expression echoed.
RUNNER = r"""
import ast, json, sys, time
import matplotlib
matplotlib.use("Agg")
cells = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
namespace["display"] = lambda *values: [print(v.to_string() if hasattr(v, "to_string") else repr(v)) for v in values]
for number, code in enumerate(cells, 1):
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    start = time.perf_counter()
    exec(compile(tree, f"<cell {number}>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), f"<cell {number}>", "eval"), namespace)
        if value is not None and not type(value).__module__.startswith("matplotlib"):
            print(value.to_string() if hasattr(value, "to_string") else repr(value))
    import matplotlib.pyplot as plt
    plt.close("all")
    print(f"[cell {number}: {time.perf_counter() - start:.1f} s]", flush=True)
"""


def code_cells(notebook: Path) -> list[str]:
    """The source of every code cell of a notebook, in order."""
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def run(notebook: Path, seconds_left: float, log) -> tuple[str, float]:
    """Run one notebook in a fresh interpreter; return its status and wall time."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(code_cells(notebook), f)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    log.write(f"\n===== {notebook} =====\n")
    log.flush()
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, f.name], stdout=log, stderr=subprocess.STDOUT, env=env, timeout=seconds_left
        )
        status = "ok" if done.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        status = "deadline"
    seconds = time.perf_counter() - start
    log.write(f"===== {notebook}: {status} in {seconds:.1f} s =====\n")
    log.flush()
    return status, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--deadline", type=float, default=3600, help="seconds for all notebooks together")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument(
        "--record-runtimes",
        nargs="?",
        const=Path(__file__).resolve().parent.parent / "book" / "runtimes.json",
        metavar="FILE",
        help="store the times of the notebooks that ran ok in FILE (default book/runtimes.json)",
    )
    args = parser.parse_args()
    end = time.perf_counter() + args.deadline
    results = {}
    with args.log.open("w") as log:
        for notebook in args.notebooks:
            left = end - time.perf_counter()
            if left < 5:
                results[notebook.stem] = {"status": "not started", "seconds": 0.0}
                continue
            status, seconds = run(notebook, left, log)
            results[notebook.stem] = {"status": status, "seconds": round(seconds, 1)}
            args.json.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{notebook.stem}: {status} in {seconds:.1f} s", flush=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.record_runtimes:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from helpers import config

        passed = {name: run["seconds"] for name, run in results.items() if run["status"] == "ok"}
        config.record_runtimes(passed, config.profile_name(), config.machine_description(), args.record_runtimes)
        print(f"recorded {len(passed)} notebooks for profile {config.profile_name()!r} in {args.record_runtimes}")


if __name__ == "__main__":
    main()
