"""`make claims`: run notebooks in the cpu profile, record every claim they make in book/claims.json (the ledger).

Each notebook runs top to bottom in a fresh kernel (as jupyter-book runs it: in its own folder), with
`BOOK_PROFILE=cpu` (or `--profile`) and `$BOOK_CLAIMS_LOG` set, so every `helpers.claims.claim` call appends its
result there. The executed notebook goes into jupyter-book's execution cache (_build/.jupyter_cache), so a
`make book` in the same profile afterwards takes its outputs from the cache instead of running it again.

The ledger keeps, per notebook and per profile: the fingerprint of what ran (see `fingerprint`), the device, the
date, the run time, the status (`ok`, or `failed` with the error) and every claim with its result and values.

What makes an entry stale (tests/test_claims.py fails on a stale, missing or failed entry):
- the notebook's code cells changed (markdown does not count: prose does not change a result);
- a `helpers` module the notebook imports by name changed (`from helpers import data, metrics` → helpers/data.py,
  helpers/metrics.py; `from helpers.claims import claim` → helpers/claims.py);
- its chapter's module in its framework package changed (CHAPTER_MODULES, read from the chapter map in
  helpers/chapters.py: chapter 11's PyTorch notebook → helpers/torch/distillation.py; chapters 1, 2 and 4–7, which
  teach a base layer, → helpers/torch/models.py or training.py).
Modules every chapter shares (helpers/torch/training.py, models.py, the Keras ports) do not make every entry stale:
their behaviour is held by the unit tests, and after changing one, `make claims ALL=1` reruns the whole book.

    python scripts/claims.py                    # every notebook whose cpu entry is missing, stale or failed
    python scripts/claims.py --all              # every notebook
    python scripts/claims.py book/19_audio/audio_torch.ipynb
    python scripts/claims.py --check            # only report; exit 1 when an entry is missing, stale or failed
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / "book" / "claims.json"
CACHE = ROOT / "_build" / ".jupyter_cache"
PROFILE_STAMP = ROOT / "_build" / ".profile"

sys.path.insert(0, str(ROOT))
from helpers.chapters import BY_SLUG  # noqa: E402  (the chapter map: slug -> notebooks, modules, tests)

# Each chapter's wing modules (the notebook's stem without _torch/_keras): its own, and the base layers it teaches.
CHAPTER_MODULES = {
    slug: {wing: chapter.wing_modules(wing) for wing in ("torch", "keras")} for slug, chapter in BY_SLUG.items()
}
NEUTRAL_IMPORT = re.compile(r"^\s*from helpers import ([\w ,]+)$|^\s*from helpers\.(\w+) import ", re.MULTILINE)


def notebooks() -> list[Path]:
    """Every notebook of the book, in the order of book/."""
    return sorted(p for p in (ROOT / "book").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def code_of(notebook: Path) -> str:
    """A notebook's code cells, joined (what its results depend on; the prose does not count)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n# %% cell\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def modules_of(notebook: Path) -> list[Path]:
    """The helpers files an entry depends on: modules imported by name (all of a package's modules), and the
    chapter's framework module."""
    code = code_of(notebook)
    names = set()
    for listed, single in NEUTRAL_IMPORT.findall(code):
        names.update(n.split(" as ")[0].strip() for n in listed.split(",") if n.strip())
        names.add(single)
    files = set()
    for name in names - {"", "torch", "keras"}:
        package = ROOT / "helpers" / name  # a package (helpers/registry/): every module in it
        files.update(package.rglob("*.py") if package.is_dir() else [ROOT / "helpers" / f"{name}.py"])
    stem, _, framework = notebook.stem.rpartition("_")
    if framework in ("torch", "keras"):
        files.update(ROOT / "helpers" / framework / f"{m}.py" for m in CHAPTER_MODULES.get(stem, {}).get(framework, ()))
    return sorted(f for f in files if f.exists())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(notebook: Path) -> dict:
    """What a ledger entry was computed from: the hash of the notebook's code and of each helpers file it depends
    on (line endings normalised, so a checkout on Windows gives the same hashes)."""
    modules = {str(f.relative_to(ROOT)): _sha(f.read_bytes().replace(b"\r\n", b"\n")) for f in modules_of(notebook)}
    return {"code": _sha(code_of(notebook).encode()), "modules": modules}


def load_ledger(path: Path = LEDGER) -> dict:
    """The ledger: {notebook stem: {profile: entry}}."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def problems(notebook: Path, ledger: dict, profile: str = "cpu") -> list[str]:
    """What is wrong with a notebook's entry for `profile` (empty when it is present, current and held)."""
    entry = ledger.get(notebook.stem, {}).get(profile)
    if entry is None:
        return [f"{notebook.stem}: no {profile} entry (run `make claims`)"]
    found = []
    now = fingerprint(notebook)
    if entry["fingerprint"]["code"] != now["code"]:
        found.append(f"{notebook.stem}: its code changed since the {profile} run of {entry['date']}")
    for module in sorted(set(now["modules"]) | set(entry["fingerprint"]["modules"])):
        if now["modules"].get(module) != entry["fingerprint"]["modules"].get(module):
            found.append(f"{notebook.stem}: {module} changed since the {profile} run of {entry['date']}")
    if entry["status"] != "ok":
        found.append(f"{notebook.stem}: the {profile} run failed: {entry.get('error', '?')}")
    failed = [c["claim"] for c in entry["claims"] if c["asserted"] and not c["held"]]
    found += [f"{notebook.stem}: claim failed: {c}" for c in failed]
    return found


# ----------------------------------------------------------------------------- running one notebook


def run_one(notebook: Path, profile: str, threads: int | None, out_dir: Path) -> dict:
    """Execute one notebook in a fresh kernel (in a subprocess, so that environments do not mix) and return its
    ledger entry; the executed notebook is left in out_dir for the execution cache."""
    log = out_dir / f"{notebook.stem}.claims.jsonl"
    executed = out_dir / f"{notebook.stem}.ipynb"
    env = {**os.environ, "BOOK_PROFILE": profile, "BOOK_CLAIMS_LOG": str(log), "PYTHONHASHSEED": "0"}
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            env[name] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    ran = fingerprint(notebook)  # before the run: a notebook or helper edited while it runs makes the entry stale
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--execute", str(notebook), str(executed)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    claims = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
    entry = {
        "fingerprint": ran,
        "profile": profile,
        "device": _device(),
        "threads": threads,
        "date": datetime.date.today().isoformat(),
        "seconds": round(seconds, 1),
        "status": "ok" if done.returncode == 0 else "failed",
        "claims": claims,
    }
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).strip().splitlines() if line.strip()]
        # the exception's own line (nbclient puts a cell preview after a timeout's message), then the last lines
        named = [line for line in lines if re.search(r"Error\b|Exception\b|timed out|ClaimFailed", line)][-2:]
        entry["error"] = " | ".join(named + lines[-3:])[-800:]
    return entry


def _device() -> str:
    sys.path.insert(0, str(ROOT))
    from helpers.config import machine_description

    return machine_description()


def execute(notebook: Path, executed: Path) -> None:
    """(In the subprocess.) Run the notebook as jupyter-book does, in its folder, and save the executed copy."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(notebook, as_version=4)
    timeout = int(os.environ.get("BOOK_CELL_TIMEOUT", "1200"))  # seconds per cell; raise it on a shared machine
    result = single_nb_execution(nb, cwd=str(notebook.parent), timeout=timeout, allow_errors=False, meta_override=True)
    nbformat.write(nb, executed)
    if result.err is not None:
        print(result.exc_string, file=sys.stderr)
        sys.exit(1)
    print(f"executed {notebook.name} in {result.time:.1f} s")


def cache_executed(notebook: Path, executed: Path, seconds: float) -> None:
    """Put an executed notebook into jupyter-book's execution cache, as myst-nb would after running it."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(CACHE))
    nb = nbformat.read(executed, as_version=4)
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, str(notebook.resolve()), data={"execution_seconds": seconds}),
        check_validity=False,
        overwrite=True,
    )


# ----------------------------------------------------------------------------- the command


@contextlib.contextmanager
def _locked():
    """Hold _build/.claims.lock while writing the ledger and the execution cache (POSIX; elsewhere no lock)."""
    PROFILE_STAMP.parent.mkdir(parents=True, exist_ok=True)
    with open(PROFILE_STAMP.parent / ".claims.lock", "a") as lock:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="these notebooks (default: every stale one)")
    parser.add_argument("--all", action="store_true", help="run every notebook, current or not")
    parser.add_argument("--check", action="store_true", help="only report missing, stale and failed entries")
    parser.add_argument("--profile", default="cpu", choices=("cpu", "full"))
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="notebooks run at once (each gets cores/workers "
        "threads; the ledger records it, and run times are only comparable at 1)",
    )
    parser.add_argument("--execute", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute:
        execute(*args.execute)
        return 0
    ledger = load_ledger()
    chosen = [p.resolve() for p in args.notebooks] or notebooks()
    if not args.all and not args.notebooks:
        chosen = [p for p in chosen if problems(p, ledger, args.profile)]
    if args.check:
        found = [problem for p in notebooks() for problem in problems(p, ledger, args.profile)]
        print("\n".join(found) or f"every {args.profile} entry is current and every claim held")
        return 1 if found else 0
    # longest first (by the last recorded time), so that the slowest notebooks do not finish last
    runtimes = json.loads((ROOT / "book" / "runtimes.json").read_text())
    last = {
        p: ledger.get(p.stem, {}).get(args.profile, {}).get("seconds")
        or runtimes.get(p.stem, {}).get(args.profile, {}).get("seconds", 0)
        for p in chosen
    }
    chosen.sort(key=lambda p: -last[p])
    threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else None
    print(f"running {len(chosen)} notebook(s) in the {args.profile} profile, {args.workers} at a time")
    PROFILE_STAMP.parent.mkdir(parents=True, exist_ok=True)
    if PROFILE_STAMP.exists() and PROFILE_STAMP.read_text().strip() != args.profile:
        import shutil

        shutil.rmtree(CACHE, ignore_errors=True)  # `make book` keeps one profile's outputs in its cache
    PROFILE_STAMP.write_text(args.profile + "\n")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        futures = {pool.submit(run_one, p, args.profile, threads, Path(tmp)): p for p in chosen}
        for future in concurrent.futures.as_completed(futures):
            notebook = futures[future]
            entry = future.result()
            with _locked():  # another `make claims` may be writing the cache or the ledger at the same time
                if entry["status"] == "ok":
                    cache_executed(notebook, Path(tmp) / f"{notebook.stem}.ipynb", entry["seconds"])
                ledger = load_ledger()
                ledger.setdefault(notebook.stem, {})[args.profile] = entry
                LEDGER.write_text(json.dumps(ledger, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
            held = sum(c["held"] for c in entry["claims"] if c["asserted"])
            asserted = sum(c["asserted"] for c in entry["claims"])
            print(
                f"{notebook.stem:32s} {entry['status']:6s} {entry['seconds']:7.1f} s  claims held {held}/{asserted}"
                + (f"  {entry['error'][-300:]}" if entry["status"] != "ok" else ""),
                flush=True,
            )
            failures += entry["status"] != "ok" or held < asserted
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
