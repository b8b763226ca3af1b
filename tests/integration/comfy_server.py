"""Start a real ComfyUI server with this pack installed, and drive it over HTTP.

The server gets a private base directory (``--base-directory``): ``custom_nodes/`` holds only a
link to this repository, ``models/<folder>/`` holds links to test checkpoints, and output,
input, temp, user and the database live there too, so runs never touch the ComfyUI checkout.
Only the standard library is used, so the tests need nothing beyond pytest.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

PACK_NAME = "comfyui-mova-av"
"""Folder name of the pack under ``custom_nodes`` (ComfyUI reports it as ``custom_nodes.<name>``)."""

_POLL_SECONDS = 0.5
_LOG_TAIL_CHARS = 6000


class ComfyServerError(RuntimeError):
    """The server did not start, or answered a request with an error."""


class WorkflowRejected(ComfyServerError):
    """``POST /prompt`` refused the workflow (validation errors are in ``.response``)."""

    def __init__(self, message: str, response: dict[str, Any]):
        super().__init__(message)
        self.response = response


class WorkflowFailed(ComfyServerError):
    """The workflow ran and ended with ``status_str == "error"`` (``.history`` has the details)."""

    def __init__(self, message: str, history: dict[str, Any]):
        super().__init__(message)
        self.history = history


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(Path(source).resolve(), target_is_directory=Path(source).is_dir())
    return target


class ComfyServer:
    """One ComfyUI process (``main.py --cpu``) on a free port with a private base directory."""

    def __init__(self, comfyui_path: Path, python: str, base_dir: Path, pack_dir: Path):
        self.comfyui_path = Path(comfyui_path)
        self.python = python
        self.base_dir = Path(base_dir)
        self.pack_dir = Path(pack_dir)
        self.port = free_port()
        self.log_path = self.base_dir / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    def models_dir(self, folder: str) -> Path:
        """``models/<folder>`` of this server (created on demand)."""
        path = self.base_dir / "models" / folder
        path.mkdir(parents=True, exist_ok=True)
        return path

    def link_model(self, folder: str, source: str | Path, name: str | None = None) -> Path:
        """Link a checkpoint file or folder into ``models/<folder>/<name>``.

        Works before or after start: ComfyUI re-lists a model folder when its mtime changes.
        """
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"link_model: {source} does not exist.")
        return _link(source, self.models_dir(folder) / (name or source.name))

    def command(self, extra_args: list[str] = ()) -> list[str]:
        return [
            self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            "--output-directory", str(self.output_dir),
            "--database-url", f"sqlite:///{self.base_dir / 'comfyui.db'}",
            "--disable-api-nodes", *extra_args,
        ]

    def start(self, timeout: float, extra_args: list[str] = ()) -> "ComfyServer":
        """Launch ``main.py`` and wait until it answers HTTP (or raise with the log tail)."""
        for folder in ("custom_nodes", "input", "output", "temp", "user"):
            (self.base_dir / folder).mkdir(parents=True, exist_ok=True)
        pack_link = self.base_dir / "custom_nodes" / PACK_NAME
        if not pack_link.exists():
            _link(self.pack_dir, pack_link)
        log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.command(list(extra_args)), cwd=self.comfyui_path, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComfyServerError(
                    f"ComfyUI exited with code {self.process.returncode} during start-up under {self.python} "
                    f"(COMFYUI_PYTHON must be an interpreter with ComfyUI's requirements).\n{self.log_tail()}"
                )
            try:
                self._request("GET", "/system_stats", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(_POLL_SECONDS)
        self.stop()
        raise ComfyServerError(
            f"ComfyUI did not answer on port {self.port} within {timeout:.0f} s "
            f"(raise COMFYUI_START_TIMEOUT if the machine is slow).\n{self.log_tail()}"
        )

    def stop(self, grace: float = 15.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=grace)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self) -> str:
        return "--- ComfyUI log (tail) ---\n" + self.log_text()[-_LOG_TAIL_CHARS:]

    def _request(self, method: str, route: str, body: Any = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{route}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """``GET /object_info`` (all nodes), or the definition of one node class."""
        if node_class is None:
            return self._request("GET", "/object_info")
        info = self._request("GET", f"/object_info/{urllib.parse.quote(node_class)}")
        if node_class not in info:
            raise ComfyServerError(f"node class {node_class!r} is not registered.\n{self.log_tail()}")
        return info[node_class]

    def submit_workflow(self, api_prompt: dict[str, Any]) -> str:
        """``POST /prompt`` with an API-format graph; returns the prompt id.

        Raises :class:`WorkflowRejected` (with ComfyUI's ``node_errors``) on HTTP 400.
        """
        body = {"prompt": api_prompt, "client_id": self.client_id}
        try:
            return self._request("POST", "/prompt", body)["prompt_id"]
        except urllib.error.HTTPError as error:
            response = json.loads(error.read() or b"{}")
            raise WorkflowRejected(
                f"ComfyUI rejected the workflow: {json.dumps(response, indent=1)[:_LOG_TAIL_CHARS]}", response
            ) from None

    def wait_for_history(self, prompt_id: str, timeout: float) -> dict[str, Any]:
        """Poll ``GET /history/<id>`` until the prompt has finished; return its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self._request("GET", f"/history/{prompt_id}").get(prompt_id)
            if entry is not None:  # ComfyUI writes history only once a prompt has finished
                return entry
            if self.process.poll() is not None:
                raise ComfyServerError(f"ComfyUI died while running {prompt_id}.\n{self.log_tail()}")
            time.sleep(_POLL_SECONDS)
        raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s.\n{self.log_tail()}")

    def run_workflow(self, api_prompt: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Submit, wait, and return the history entry; raise :class:`WorkflowFailed` on an error status."""
        entry = self.wait_for_history(self.submit_workflow(api_prompt), timeout)
        if entry["status"].get("status_str") != "success":
            errors = [data for event, data in entry["status"].get("messages", []) if event == "execution_error"]
            detail = json.dumps(errors, indent=1)[:_LOG_TAIL_CHARS] if errors else self.log_tail()
            raise WorkflowFailed(f"workflow failed: {detail}", entry)
        return entry
