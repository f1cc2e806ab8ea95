"""The offline registry: checksums, fallbacks, refetching, clear errors, no silent overwrites."""

import dataclasses
import hashlib
import json

import numpy as np
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
        assert len(item.sha256) == 64 and item.licence, name
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
            registry._set_aside(path, "is a test")
    kept = sorted(aside.read_bytes() for aside in tmp_path.glob("file.bin.mismatch-*"))
    assert kept == [f"version {i}".encode() for i in range(5)] and not path.exists()


# ----------------------------------------------------------------------------- derived files: a digest of the tensors


TENSORS = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "bn.num": np.array([7], dtype=np.int64)}
DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}


def _write_safetensors(path, tensors, metadata=None, reverse=False, padding=0):
    """A safetensors file written by hand, with a chosen data order, metadata and header padding."""
    header, offset = {}, 0
    names = sorted(tensors, reverse=reverse)
    for name in names:
        size = tensors[name].nbytes
        header[name] = {"dtype": DTYPES[tensors[name].dtype], "shape": list(tensors[name].shape)}
        header[name]["data_offsets"] = [offset, offset + size]
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode() + b" " * padding
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(tensors[n].tobytes() for n in names))
    return path


def test_tensor_digest_ignores_layout_and_metadata_but_not_values(tmp_path):
    from safetensors.numpy import save_file

    save_file(TENSORS, str(tmp_path / "library.safetensors"))
    reference = registry.tensor_digest(tmp_path / "library.safetensors")
    relaid = _write_safetensors(tmp_path / "relaid.safetensors", TENSORS, {"writer": "v9"}, reverse=True, padding=5)
    assert relaid.read_bytes() != (tmp_path / "library.safetensors").read_bytes()
    assert registry.tensor_digest(relaid) == reference
    changed = {**TENSORS, "bn.num": np.array([8], dtype=np.int64)}
    reshaped = {**TENSORS, "conv.weight": TENSORS["conv.weight"].reshape(3, 2, 4)}
    renamed = {"conv.kernel": TENSORS["conv.weight"], "bn.num": TENSORS["bn.num"]}
    for other in (changed, reshaped, renamed):
        assert registry.tensor_digest(_write_safetensors(tmp_path / "other.safetensors", other)) != reference


def test_a_derived_file_passes_when_rewritten_with_another_layout_and_fails_with_other_values(tmp_path, cache):
    reference = registry.tensor_digest(_write_safetensors(tmp_path / "ref.safetensors", TENSORS))
    relaid = _write_safetensors(tmp_path / "relaid.safetensors", TENSORS, {"format": "np"}, reverse=True)
    changed = _write_safetensors(tmp_path / "changed.safetensors", {**TENSORS, "bn.num": np.array([8])})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    sources = tuple(registry.SystemFile(str(path)) for path in (garbage, changed, relaid))
    item = registry.Entry("w/model.safetensors", reference, "toy tensors", "CC0", sources, registry.tensor_digest)
    assert registry.fetch("toy", {"toy": item}).read_bytes() == relaid.read_bytes()
    item = dataclasses.replace(item, sources=sources[:2])
    (cache / "w/model.safetensors").unlink()
    with pytest.raises(registry.DataUnavailableError, match="(?s)garbage.*unreadable.*changed.*checksum mismatch"):
        registry.fetch("toy", {"toy": item})


def test_the_registered_keras_weights_are_checked_by_their_tensors():
    item = registry.REGISTRY["mobilenet_v2-keras"]
    assert item.digest is registry.tensor_digest and isinstance(item.sources[0], registry.Derived)
