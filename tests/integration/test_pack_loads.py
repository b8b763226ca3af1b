"""The pack loads in a real ComfyUI, and the harness drives a native workflow end to end."""

from __future__ import annotations

import re

import pytest

from .comfy_server import PACK_NAME, ComfyServer, WorkflowRejected

PACK_MODULE = f"custom_nodes.{PACK_NAME}"
NATIVE_NODES_WE_FEED = ("CreateVideo", "SaveVideo", "SaveAudio", "PreviewAudio")


def _pack_import_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(rf"seconds.*: .*custom_nodes/{re.escape(PACK_NAME)}$", line)]


def test_pack_imports_without_failure(comfy_server: ComfyServer) -> None:
    log = comfy_server.log_text()
    lines = _pack_import_lines(log)
    assert len(lines) == 1, f"ComfyUI did not report importing {PACK_NAME}.\n{comfy_server.log_tail()}"
    assert "IMPORT FAILED" not in lines[0], comfy_server.log_tail()
    for warning in ("Cannot import", "Error while calling comfy_entrypoint", "did not return"):
        assert not [l for l in log.splitlines() if warning in l and PACK_NAME in l], comfy_server.log_tail()


def test_pack_nodes_are_registered_with_mova_prefix(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    ours = [name for name, node in info.items() if node["python_module"] == PACK_MODULE]
    assert all(name.startswith("MOVA") for name in ours), ours
    missing = [name for name in NATIVE_NODES_WE_FEED if name not in info]
    assert not missing, f"native nodes missing (torchaudio/av not installed in COMFYUI_PYTHON?): {missing}"


def _frames_to_video(width: int, height: int, frames: int, fps: float) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": frames, "color": 0x336699}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": fps}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "harness/check",
                                                    "format": "mp4", "codec": "h264"}},
    }


def test_native_workflow_round_trip(comfy_server: ComfyServer) -> None:
    entry = comfy_server.run_workflow(_frames_to_video(64, 48, 6, 12.0), timeout=120)
    saved = entry["outputs"]["3"]["images"][0]
    assert entry["outputs"]["3"]["animated"] == [True]
    path = comfy_server.output_dir / saved["subfolder"] / saved["filename"]
    assert path.suffix == ".mp4" and path.stat().st_size > 0


def test_invalid_workflow_is_rejected_with_node_errors(comfy_server: ComfyServer) -> None:
    prompt = _frames_to_video(64, 48, 6, 1000.0)  # CreateVideo allows fps <= 120
    with pytest.raises(WorkflowRejected) as caught:
        comfy_server.submit_workflow(prompt)
    errors = caught.value.response["node_errors"]["2"]["errors"]
    assert [e["type"] for e in errors] == ["value_bigger_than_max"]
