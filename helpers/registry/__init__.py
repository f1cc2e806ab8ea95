"""Offline-first, checksummed registry of every data set and weight file the book uses.

Each file has a checksum and a list of sources tried in order: the cache directory
(`$BOOK_CACHE`, default `~/.cache/tl-book`), a copy already on this system, a package
from a registry (PyPI wheels only, Debian, npm) and last the canonical upstream URL.
A file is used only when its checksum matches; a cached file that does not match is
moved aside (never deleted, never silently replaced) and fetched again.

Files built here by a converter (`Derived`: the Keras safetensors copies, the detector
as ONNX, the synthesised spoken digits) have no stable bytes: tf2onnx folds float
constants differently on another CPU, a resampler or flite version moves audio samples.
They are verified by what they compute (`Computes`): their structure exactly, their
outputs or values against a small reference stored under helpers/, within a stated
tolerance. A real change (one weight, a missing node, a wrong digit) is refused.

Safe under concurrency: several processes may fetch the same file at once (a lock per
file in `<cache>/.locks/`, a temporary file per writer, an atomic rename). Safe on a
half-working network: every source has a timeout, so a dead one fails within seconds
and the next is tried.

Framework-neutral: imports neither PyTorch nor TensorFlow.
Command line: `python -m helpers.registry fetch-all` prefetches everything (`make data`).

The package: `catalogue/` (data, one section per chapter), `entries` (an entry and its `Computes` check),
`sources` (where a file can come from), `verify` (checksums, tensor fingerprints), `store` (the cache and its
locks), `cli` (the command line). The converters that `Derived` sources name (helpers.torch.convert,
helpers.detector_onnx, helpers.speech_synthesis) are build steps run by the store, not imported here.
The timeouts live in `helpers.registry.sources` (NETWORK_TIMEOUT, COMMAND_TIMEOUT, CONVERSION_TIMEOUT): set them
there.
"""

from helpers.registry.catalogue import REGISTRY
from helpers.registry.entries import REFERENCES, Computes, Entry
from helpers.registry.sources import (
    DebianFile,
    Derived,
    InstalledFile,
    NpmFile,
    NpmPackage,
    PyPIFile,
    SystemFile,
    Url,
    deb_member,
    wheel_member,
)
from helpers.registry.store import (
    CACHE_VARIABLE,
    DataUnavailableError,
    cache_dir,
    entry,
    fetch,
    fetch_all,
    set_aside,
    sources_table,
)
from helpers.registry.verify import (
    TENSOR_PROJECTIONS,
    TENSOR_TOLERANCE,
    check_tensors,
    read_safetensors,
    sha256_of,
    tensor_fingerprint,
)

__all__ = [
    "CACHE_VARIABLE",
    "REFERENCES",
    "REGISTRY",
    "TENSOR_PROJECTIONS",
    "TENSOR_TOLERANCE",
    "Computes",
    "DataUnavailableError",
    "DebianFile",
    "Derived",
    "Entry",
    "InstalledFile",
    "NpmFile",
    "NpmPackage",
    "PyPIFile",
    "SystemFile",
    "Url",
    "cache_dir",
    "check_tensors",
    "deb_member",
    "entry",
    "fetch",
    "fetch_all",
    "read_safetensors",
    "set_aside",
    "sha256_of",
    "sources_table",
    "tensor_fingerprint",
    "wheel_member",
]
