"""Copy the last `make book` build's execution times into book/runtimes.json.

jupyter-book records each notebook's execution time in its cache (_build/.jupyter_cache); the
Makefile notes the profile the build used in _build/.profile. Run after `make book`.
"""

from pathlib import Path

from jupyter_cache import get_cache

from helpers import config

BUILD = Path(__file__).resolve().parent.parent / "_build"


def main() -> None:
    profile = (BUILD / ".profile").read_text().strip()
    seconds = {
        Path(record.uri).stem: record.data["execution_seconds"]
        for record in get_cache(BUILD / ".jupyter_cache").list_cache_records()
        if "execution_seconds" in (record.data or {})
    }
    config.record_runtimes(seconds, profile, config.machine_description())
    print(f"recorded {len(seconds)} notebooks for profile {profile!r} in {config.RUNTIMES_FILE}")


if __name__ == "__main__":
    main()
