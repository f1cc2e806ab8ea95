"""Unpack MathJax from the registry into _build/static/mathjax, which Sphinx copies into the built book.

The book renders its formulas with MathJax served from the build itself (`mathjax_path` in _config.yml),
so the published HTML shows formulas with no network. The npm tarball comes from the checksummed registry
(`helpers.registry`, entry "mathjax"); only the CommonHTML TeX component and the files it loads on demand
(TeX extensions, fonts, menu, accessibility) are copied. Run before every build (`make test`, `make book`).
"""

import sys
import tarfile
from pathlib import Path

from helpers import registry

ROOT = Path(__file__).resolve().parent.parent
# Not the book's own `_static/`: jupyter-book adds every .js file found in a `_static/` folder to every page.
TARGET = ROOT / "_build" / "static" / "mathjax"
# What es5/tex-chtml.js needs: itself, the TeX extensions it autoloads, its fonts, the menu and what the menu loads.
KEEP = ("tex-chtml.js", "input/tex/extensions/", "output/chtml/", "ui/", "a11y/", "sre/")


def wanted(member: tarfile.TarInfo) -> str | None:
    """The path below es5/ to copy, or None (the tarball's files all start with package/)."""
    if member.name == "package/LICENSE":
        return "LICENSE"
    relative = member.name.removeprefix("package/es5/")
    if member.isfile() and relative != member.name and relative.startswith(KEEP):
        return relative
    return None


def stage(target: Path = TARGET) -> Path:
    """Copy the needed MathJax files into `target`, unless the same tarball was staged there already."""
    tarball = registry.fetch("mathjax")
    stamp = target / ".staged-from"
    sha = registry.REGISTRY["mathjax"].sha256
    if stamp.is_file() and stamp.read_text().strip() == sha and (target / "tex-chtml.js").is_file():
        return target
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            relative = wanted(member)
            if relative is None:
                continue
            out = target / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())
    stamp.write_text(sha + "\n")
    return target


if __name__ == "__main__":
    path = stage(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET)
    print(f"MathJax staged in {path}")
