"""`python -m helpers.registry fetch-all|list` (what `make data` runs)."""

import sys

from helpers.registry.cli import main

raise SystemExit(main(sys.argv[1:]))
