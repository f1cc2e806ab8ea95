"""The catalogue: every file the book uses, one section (one small module) per chapter that brings its own.

Adding a chapter's data means adding `ENTRIES` to its section, or a new section listed in `SECTIONS`.
Data only: the machinery that fetches and verifies lives in the modules beside this package.
"""

from __future__ import annotations

from helpers.registry.catalogue import audio, backbones, base, book, detection, domain_adaptation, text_classification
from helpers.registry.entries import Entry

SECTIONS = (base, text_classification, domain_adaptation, backbones, detection, audio, book)  # in book order


def merged(sections=SECTIONS) -> dict[str, Entry]:
    """The sections' entries in one dict, in section order; a name in two sections is refused."""
    registry: dict[str, Entry] = {}
    for section in sections:
        twice = sorted(set(registry) & set(section.ENTRIES))
        if twice:
            raise ValueError(f"{section.__name__} registers {twice} again; every name belongs to one section")
        registry.update(section.ENTRIES)
    return registry


REGISTRY: dict[str, Entry] = merged()
