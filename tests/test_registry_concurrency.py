"""Several processes fetching the same file into an empty cache all succeed, and only one of them downloads it."""

import contextlib
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTENT = bytes(range(256)) * 8192  # 2 MiB, served slowly enough that the processes overlap
WORKER = """
import sys, time
from pathlib import Path
from helpers import registry
url, sha, go = sys.argv[1:4]
while not Path(go).exists():
    time.sleep(0.005)
item = registry.Entry("toy/big.bin", sha, "a toy file", "CC0", (registry.Url(url),))
print(registry.fetch("toy", {"toy": item}))
"""


@contextlib.contextmanager
def slow_server():
    """Serves CONTENT at /big.bin in 64 KiB pieces, 5 ms apart; yields its URL and the list of requests."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(CONTENT)))
            self.end_headers()
            for start in range(0, len(CONTENT), 1 << 16):
                self.wfile.write(CONTENT[start : start + (1 << 16)])
                time.sleep(0.005)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/big.bin", requests
    finally:
        server.shutdown()
        server.server_close()


def fetch_in_processes(url, cache, num_processes, pythonpath=ROOT):
    """Start `num_processes` Python processes that fetch the same entry at the same moment; their results."""
    env = {**os.environ, "BOOK_CACHE": str(cache), "PYTHONPATH": str(pythonpath)}
    go = cache.parent / f"go-{cache.name}"
    args = [sys.executable, "-c", WORKER, url, hashlib.sha256(CONTENT).hexdigest(), str(go)]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen(args, env=env, cwd=pythonpath, **pipes) for _ in range(num_processes)]
    time.sleep(1.0)  # let every interpreter start and wait at the line
    go.touch()
    return [(worker.wait(timeout=120), *worker.communicate()) for worker in workers]


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_fetches_into_an_empty_cache_all_succeed(tmp_path, trial):
    cache = tmp_path / "cache"
    with slow_server() as (url, requests):
        results = fetch_in_processes(url, cache, num_processes=5)
    target = cache / "toy/big.bin"
    assert all(code == 0 for code, _, _ in results), [err[-400:] for _, _, err in results]
    assert {out.strip() for _, out, _ in results} == {str(target)}
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(CONTENT).hexdigest()
    assert sorted(path.name for path in target.parent.iterdir()) == ["big.bin"], "leftover files"
    assert sorted(path.name for path in (cache / ".locks/toy").iterdir()) == ["big.bin.lock"]
    # only requests for the file count: another test's client on a recycled port can knock on this server too
    downloads = [path for path in requests if path == "/big.bin"]
    assert len(downloads) == 1, "the processes that waited for the lock must find the file and not download it again"
