"""The HTML book: MathJax, served from the build instead of a CDN (scripts/stage_mathjax.py unpacks it)."""

from __future__ import annotations

from helpers.registry.entries import Entry
from helpers.registry.sources import (
    NpmPackage,
    Url,
)

ENTRIES: dict[str, Entry] = {
    "mathjax": Entry(
        filename="web/mathjax-3.2.2.tgz",
        sha256="1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
        what="MathJax 3.2.2 (npm package tarball), renders the book's formulas offline",
        licence="Apache-2.0",
        sources=(NpmPackage("mathjax@3.2.2"), Url("https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz")),
    ),
}
