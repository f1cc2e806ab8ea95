"""The command line: `python -m helpers.registry fetch-all` fills the cache, `list` prints the catalogue."""

from __future__ import annotations

import sys

from helpers.registry.store import CACHE_VARIABLE, cache_dir, fetch_all, sources_table


def main(argv: list[str]) -> int:
    """`fetch-all` prefetches every file into the cache; `list` prints the registry."""
    command = argv[0] if argv else "list"
    if command == "fetch-all":
        for name, path in fetch_all().items():
            print(f"ok  {name:28s} {path}")
        print(f"cache: {cache_dir()}  (copy this folder to offline machines and set {CACHE_VARIABLE})")
        return 0
    if command == "list":
        for row in sources_table():
            print(f"{row['name']:28s} {row['licence']:30s} {row['sources']}")
        return 0
    print("usage: python -m helpers.registry [fetch-all|list]", file=sys.stderr)
    return 2
