"""The offline registry: checksums, fallbacks, refetching, clear errors, no silent overwrites."""

import hashlib

import pytest

from helpers import registry


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entry(tmp_path, content=b"real data", sources=None):
    good = tmp_path / "good.bin"
    good.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    srcs = sources if sources is not None else (registry.SystemFile(str(good)),)
    return {"toy": registry.Entry("toy/file.bin", sha, "a toy file", "CC0", srcs)}


def test_fetch_copies_a_verified_file_into_the_cache(tmp_path, cache):
    path = registry.fetch("toy", _entry(tmp_path))
    assert path == cache / "toy/file.bin" and path.read_bytes() == b"real data"


def test_checksum_mismatch_in_cache_triggers_a_refetch_and_keeps_the_old_file(tmp_path, cache):
    reg = _entry(tmp_path)
    (cache / "toy").mkdir(parents=True)
    (cache / "toy/file.bin").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="does not match the checksum"):
        path = registry.fetch("toy", reg)
    assert path.read_bytes() == b"real data"
    aside = list((cache / "toy").glob("file.bin.mismatch-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"truncated", "the user's file must be kept, not deleted"


def test_a_source_with_the_wrong_checksum_is_skipped(tmp_path, cache):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"corrupted")
    good = tmp_path / "good.bin"
    good.write_bytes(b"real data")
    sources = (registry.SystemFile(str(bad)), registry.SystemFile(str(good)))
    assert registry.fetch("toy", _entry(tmp_path, sources=sources)).read_bytes() == b"real data"


def test_no_working_source_gives_one_clear_error(tmp_path, cache):
    sources = (registry.SystemFile(str(tmp_path / "missing.bin")), registry.InstalledFile("no-such-dist", "x"))
    with pytest.raises(registry.DataUnavailableError) as error:
        registry.fetch("toy", _entry(tmp_path, sources=sources))
    message = str(error.value)
    assert "'toy'" in message and "missing.bin" in message and "no-such-dist is not installed" in message
    assert "make data" in message and str(cache / "toy/file.bin") in message


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="fashion-mnist-train-images"):
        registry.fetch("imagenet-full")


def test_every_entry_has_a_checksum_licence_and_an_upstream_or_derived_source():
    for name, item in registry.REGISTRY.items():
        assert (len(item.sha256) == 64 or isinstance(item.check, registry.Computes)) and item.licence, name
        assert isinstance(item.sources[-1], (registry.Url, registry.Derived)), f"{name}: last resort missing"


def test_the_real_files_are_in_the_cache_and_verified():
    """`make data` ran before the tests: every registered file verifies (offline)."""
    for name in registry.REGISTRY:
        path = registry.fetch(name)
        assert registry.REGISTRY[name].verifies(path), name


def test_set_asides_in_the_same_second_all_survive(tmp_path):
    """Each corrupted copy moved aside keeps its own name: none overwrites another (the user's files are kept)."""
    path = tmp_path / "file.bin"
    for i in range(5):  # well within one second, so at least two share a second-resolution timestamp
        path.write_bytes(f"version {i}".encode())
        with pytest.warns(UserWarning, match="moved it to"):
            registry.set_aside(path, "is a test")
    kept = sorted(aside.read_bytes() for aside in tmp_path.glob("file.bin.mismatch-*"))
    assert kept == [f"version {i}".encode() for i in range(5)] and not path.exists()


# ----------------------------------------------------------------------------- derived files and locks


def test_every_derived_file_is_verified_by_what_it_computes_against_a_reference_in_the_repository():
    """Converted files have no stable bytes (tests/test_registry_derived.py): each one needs a `Computes` check."""
    derived = [name for name, item in registry.REGISTRY.items() if isinstance(item.sources[0], registry.Derived)]
    assert {"mobilenet_v2-keras", "efficientnet_lite0-keras", "ssd-mobilenet-v2-coco-onnx", "spoken-digits"} <= set(
        derived
    )
    for name in derived:
        check = registry.REGISTRY[name].check
        assert isinstance(check, registry.Computes), name
        assert (registry.REFERENCES / check.reference).is_file(), f"{name}: {check.reference} is missing"


def test_locks_live_in_their_own_folder_and_old_stray_locks_do_no_harm(tmp_path, cache):
    (cache / "toy").mkdir(parents=True)
    (cache / "toy/file.bin.lock").write_bytes(b"")  # left beside the file by an older version of the registry
    path = registry.fetch("toy", _entry(tmp_path))
    assert path.read_bytes() == b"real data"
    assert (cache / ".locks/toy/file.bin.lock").is_file()
    assert sorted(p.name for p in (cache / "toy").iterdir()) == ["file.bin", "file.bin.lock"], "stray lock untouched"
