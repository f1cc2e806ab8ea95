"""`make lab`, the self-study path: JupyterLab serves the book and its kernel runs a chapter's first cells.

The server is started headless as `make lab` starts it (JupyterLab, root folder `book/`), on 127.0.0.1, with
a free port and a token, and with its configuration, runtime and settings folders in `tmp_path`. Through its REST API
the test reads a chapter notebook and opens a session on it (as JupyterLab's frontend does), then runs the
notebook's first code cell (imports, seed, header) over the kernel's websocket in the smoke profile, and checks the
reply, the printed header and that the kernel runs in the chapter's folder with this environment's Python. No data
set is needed; about 10-30 s, most of it the kernel importing PyTorch.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "01_pretrained_models/pretrained_models_torch.ipynb"
TIMEOUT_S = 120


class Server:
    """A JupyterLab server process and the REST calls the test makes to it."""

    def __init__(self, process: subprocess.Popen, token: str, log: Path, runtime: Path):
        self.process, self.token, self.log, self.runtime = process, token, log, runtime
        self.port, self.url = None, None  # the port Jupyter bound (it is started with port 0): read by wait_ready

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        """(status, text) of one authenticated request."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as response:
            return response.status, response.read().decode()

    def api(self, method: str, path: str, body: dict | None = None):
        """The JSON answer of a REST call, or None for an empty one."""
        _, text = self.request(method, path, body)
        return json.loads(text) if text else None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"jupyter lab exited early:\n{self.log.read_text()[-3000:]}"
            if self.url is None:  # the server writes its port to its runtime file once it listens
                try:
                    self.port = json.loads((self.runtime / f"jpserver-{self.process.pid}.json").read_text())["port"]
                    self.url = f"http://127.0.0.1:{self.port}"
                except (OSError, ValueError, KeyError):
                    time.sleep(0.5)
                    continue
            try:
                if self.request("GET", "/api/status")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        pytest.fail(f"jupyter lab did not answer within {TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # jupyter_server shuts its kernels down on SIGTERM
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on book/, headless, isolated from the user's Jupyter folders; stopped after the test."""
    token, log = secrets.token_hex(16), tmp_path / "lab.log"
    env = {
        **os.environ,
        "BOOK_PROFILE": "smoke",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",  # the system picks a free port as Jupyter binds it: no race with other tests' servers
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT / 'book'}",
    ]
    if os.geteuid() == 0:  # containers and CI runners; `make lab` passes it too
        command.append("--allow-root")
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, token, log, tmp_path / "runtime")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def execute(ws, session: str, code: str) -> tuple[dict, str, list]:
    """Run `code` over the kernel websocket: (execute_reply content, stdout text, error messages)."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "test"}
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
    message = {"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {}, "content": content}
    ws.send(json.dumps({**message, "channel": "shell", "buffers": []}))
    reply, stdout, errors, idle = None, "", [], False
    deadline = time.monotonic() + TIMEOUT_S
    while reply is None or not idle:
        assert time.monotonic() < deadline, f"no reply within {TIMEOUT_S} s to:\n{code}"
        answer = json.loads(ws.recv())
        if answer.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = answer["header"]["msg_type"]
        if kind == "execute_reply":
            reply = answer["content"]
        elif kind == "stream" and answer["content"]["name"] == "stdout":
            stdout += answer["content"]["text"]
        elif kind == "error":
            errors.append("\n".join(answer["content"]["traceback"]))
        elif kind == "status":
            idle = answer["content"]["execution_state"] == "idle"
    return reply, stdout, errors


def test_lab_serves_the_book_and_runs_a_chapter(lab):
    import websocket  # websocket-client, installed with jupyter_server

    status, page = lab.request("GET", "/lab")
    assert status == 200 and "JupyterLab" in page, "the JupyterLab frontend is not served"

    notebook = lab.api("GET", f"/api/contents/{NOTEBOOK}")
    cells = [cell for cell in notebook["content"]["cells"] if cell["cell_type"] == "code"]
    first_cell = cells[0]["source"]
    assert "config.header(" in first_cell, "the chapter's first code cell should print its header"

    session = lab.api("POST", "/api/sessions", {"path": NOTEBOOK, "type": "notebook", "kernel": {"name": "python3"}})
    kernel_id, session_id = session["kernel"]["id"], uuid.uuid4().hex
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?session_id={session_id}",
        header=[f"Authorization: token {lab.token}"],
        timeout=TIMEOUT_S,
    )
    try:
        reply, stdout, errors = execute(ws, session_id, first_cell)
        assert reply["status"] == "ok", "\n".join(errors)
        assert "profile: smoke" in stdout, stdout
        assert "versions: " in stdout and "torch " in stdout, stdout

        reply, stdout, errors = execute(ws, session_id, "import os, sys\nprint(os.getcwd())\nprint(sys.prefix)")
        assert reply["status"] == "ok", "\n".join(errors)
        cwd, prefix = stdout.split()
        assert Path(cwd) == ROOT / "book" / Path(NOTEBOOK).parent, "the kernel should run in the notebook's folder"
        assert Path(prefix) == Path(sys.prefix), "the kernel should run in the book's environment"
    finally:
        ws.close()

    lab.api("DELETE", f"/api/sessions/{session['id']}")
    assert lab.api("GET", "/api/kernels") == [], "the kernel was not shut down with its session"
