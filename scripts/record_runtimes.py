"""Copy measured notebook run times into book/runtimes.json.

Two sources:

- the last `make book` build (the default): jupyter-book records each notebook's execution time in its cache
  (_build/.jupyter_cache), and the Makefile notes the profile the build used in _build/.profile. Run after
  `make book`.
- `--from-claims`: the claims ledger (book/claims.json). `make claims` runs each notebook alone, top to bottom in a
  fresh kernel, and records its seconds with the date of the run; this copies those seconds, for one profile
  (`--profile`, default cpu), with the ledger's dates. Only entries whose run ended `ok` are copied.
"""

import argparse
import json
from pathlib import Path

from helpers import config

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
LEDGER = ROOT / "book" / "claims.json"


def from_build() -> None:
    from jupyter_cache import get_cache

    profile = (BUILD / ".profile").read_text().strip()
    seconds = {
        Path(record.uri).stem: record.data["execution_seconds"]
        for record in get_cache(BUILD / ".jupyter_cache").list_cache_records()
        if "execution_seconds" in (record.data or {})
    }
    config.record_runtimes(seconds, profile, config.machine_description())
    print(f"recorded {len(seconds)} notebooks for profile {profile!r} in {config.RUNTIMES_FILE}")


def runtimes_from_ledger(ledger: dict, runtimes: dict, profile: str, machine: str) -> tuple[dict, int]:
    """`runtimes` with each notebook's `profile` row replaced by its ledger entry's seconds and date (entries that
    ran `ok` only); returns the new table and how many rows it copied."""
    table = {notebook: dict(rows) for notebook, rows in runtimes.items()}
    copied = 0
    for notebook, entries in sorted(ledger.items()):
        entry = entries.get(profile)
        if not entry or entry.get("status") != "ok" or "seconds" not in entry:
            continue
        table.setdefault(notebook, {})[profile] = {
            "seconds": round(float(entry["seconds"]), 1),
            # the ledger names the device, not the machine: a CPU run is taken to be this machine's
            "machine": machine if entry.get("device", "cpu") == "cpu" else f"a {entry['device']} machine",
            "date": entry["date"],
        }
        copied += 1
    return table, copied


def from_claims(profile: str) -> None:
    if not LEDGER.exists():
        raise SystemExit(f"{LEDGER} not found: run `make claims` first")
    runtimes = json.loads(config.RUNTIMES_FILE.read_text()) if config.RUNTIMES_FILE.exists() else {}
    table, copied = runtimes_from_ledger(
        json.loads(LEDGER.read_text()), runtimes, profile, config.machine_description()
    )
    config.RUNTIMES_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"copied {copied} {profile!r} run times from {LEDGER.name} into {config.RUNTIMES_FILE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-claims", action="store_true", help="copy the run times of the claims ledger")
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "full"])
    args = parser.parse_args()
    if args.from_claims:
        from_claims(args.profile)
    else:
        from_build()


if __name__ == "__main__":
    main()
