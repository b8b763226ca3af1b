"""Fixtures for tests that run this pack inside a real ComfyUI server.

Environment:
- ``COMFYUI_PATH``: a ComfyUI checkout (folder with ``main.py``). Unset: every test in this
  folder is skipped.
- ``COMFYUI_PYTHON``: the interpreter that has ComfyUI's requirements (default: this one).
- ``COMFYUI_START_TIMEOUT``: seconds to wait for the server to answer (default 180).

Every test here gets the ``integration`` marker; deselect them with ``-m "not integration"``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from .comfy_server import ComfyServer

HERE = Path(__file__).resolve().parent
PACK_DIR = HERE.parents[1]
DEFAULT_START_TIMEOUT = 180.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = None if os.environ.get("COMFYUI_PATH") else pytest.mark.skip(
        reason="integration test: set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its venv's python)"
    )
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    path = Path(os.environ["COMFYUI_PATH"]).expanduser().resolve()
    if not (path / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={path} has no main.py; point it at a ComfyUI checkout.")
    return path


@pytest.fixture(scope="session")
def comfy_server(comfyui_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """One ComfyUI server for the session, with this pack as its only custom node pack."""
    server = ComfyServer(
        comfyui_path=comfyui_path,
        python=os.environ.get("COMFYUI_PYTHON", sys.executable),
        base_dir=tmp_path_factory.mktemp("comfyui-base"),
        pack_dir=PACK_DIR,
    )
    server.start(timeout=float(os.environ.get("COMFYUI_START_TIMEOUT", DEFAULT_START_TIMEOUT)))
    try:
        yield server
    finally:
        server.stop()
