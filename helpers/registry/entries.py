"""A catalogue entry: a file's name in the cache, its checksum or its `Computes` check, its sources.

Part of `helpers.registry`; framework-neutral.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

from helpers.registry.verify import sha256_of

REFERENCES = Path(__file__).resolve().parent.parent  # the reference files of `Computes` checks: under helpers/


@dataclasses.dataclass(frozen=True)
class Computes:
    """Verify a derived file by what it computes: `function(path, reference)` (named "module:function", imported
    when used) compares it with a reference file under helpers/ and returns None, or what differs."""

    function: str
    reference: str

    def describe(self) -> str:
        return f"`{self.function}` against {self.reference}"

    def __call__(self, path: Path) -> str | None:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)(Path(path), REFERENCES / self.reference)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered file: its name in the cache, checksum, licence and sources."""

    filename: str
    sha256: str  # of the file's bytes; "" for a derived file, which `check` verifies instead
    what: str
    licence: str
    sources: tuple
    check: Callable[[Path], str | None] | None = None  # a `Computes` for files derived here, whose bytes vary

    def problem(self, path: Path) -> str | None:
        """None when `path` holds the registered content, else what is wrong with it."""
        try:
            if self.check is not None:
                return self.check(path)
            got = sha256_of(path)
        except Exception as exc:  # noqa: BLE001 - a file a reader chokes on (any library's error) is unreadable
            return f"unreadable ({type(exc).__name__}: {str(exc)[:300]})"
        return None if got == self.sha256 else f"checksum mismatch (got {got[:12]}...)"

    def verifies(self, path: Path) -> bool:
        """Whether `path` holds the registered content."""
        return self.problem(path) is None
