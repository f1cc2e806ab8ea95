"""Chapter 12 (domain adaptation): a second writer population, a font for rendered digits."""

from __future__ import annotations

from helpers.registry.entries import Entry
from helpers.registry.sources import (
    InstalledFile,
    PyPIFile,
    Url,
)

ENTRIES: dict[str, Entry] = {
    "optdigits": Entry(
        filename="digits/optdigits-digits.csv.gz",
        sha256="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
        what="UCI optdigits test part, 1,797 digits of 8x8 (17 grey levels), as shipped by scikit-learn (load_digits)",
        licence="CC BY 4.0 (UCI ML repository, Alpaydin & Kaynak 1998); packaged by scikit-learn (BSD-3)",
        sources=(
            InstalledFile("scikit-learn", "sklearn/datasets/data/digits.csv.gz"),
            PyPIFile("scikit-learn==1.9.1", "sklearn/datasets/data/digits.csv.gz"),
            Url(
                "https://raw.githubusercontent.com/scikit-learn/scikit-learn/1.9.1/sklearn/datasets/data/digits.csv.gz"
            ),
        ),
    ),
    "font-dejavu-sans": Entry(
        filename="fonts/DejaVuSans.ttf",
        sha256="3fdf69cabf06049ea70a00b5919340e2ce1e6d02b0cc3c4b44fb6801bd1e0d22",
        what="the DejaVu Sans font shipped with matplotlib, to render digits",
        licence="Bitstream Vera licence with DejaVu changes (public domain); packaged by matplotlib (PSF-style)",
        sources=(
            InstalledFile("matplotlib", "matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"),
            PyPIFile("matplotlib==3.11.2", "matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"),
            Url(
                "https://raw.githubusercontent.com/matplotlib/matplotlib/v3.11.2/lib/matplotlib/mpl-data/fonts/ttf/"
                "DejaVuSans.ttf"
            ),
        ),
    ),
}
