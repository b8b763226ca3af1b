"""Browser end-to-end test of the MOVA front end (tests/web/e2e/run_e2e.js) against a real ComfyUI: MOVA Sampler's
workflow and a native-sampling one (stock sampler nodes) load with no missing node and queue to an mp4 on the tiny model.

Needs COMFYUI_PATH (like every integration test), Node.js, ``npm install`` (playwright-core) and a
Chromium (``apt-get install chromium``; or CHROMIUM_PATH). Screenshots and a summary land in
``MOVA_E2E_ARTIFACTS`` (default: a temporary folder, printed on failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import av
import pytest

from .comfy_server import ComfyServer
from .shipped_workflows import REPO, SMALL_CLIP, install_workflow_assets

E2E_SCRIPT = REPO / "tests" / "web" / "e2e" / "run_e2e.js"
WORKFLOW = REPO / "workflows" / "mova_i2va_basic.json"
NATIVE_WORKFLOW = REPO / "workflows" / "mova_native_custom_sampler.json"
"""A workflow of stock sampler nodes (SamplerCustomAdvanced, CFGGuider, KSamplerSelect) around MOVA's MODEL."""
LOADED_ONLY = [path for path in sorted((REPO / "workflows").glob("*.json")) if path not in (WORKFLOW, NATIVE_WORKFLOW)]
"""The other shipped workflows: loaded (no unknown node), not queued (tests/integration/test_workflows_live.py runs them)."""
RUN_TIMEOUT_S = 600


def _tools() -> tuple[str, str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (the browser test is driven by tests/web/e2e/run_e2e.js)")
    if not (REPO / "node_modules" / "playwright-core").is_dir():
        pytest.skip("playwright-core is missing: run `npm install` in the repository")
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium}: `apt-get install chromium` or set CHROMIUM_PATH")
    return node, chromium


@pytest.mark.slow
def test_front_end_end_to_end(comfy_server: ComfyServer, comfyui_path: Path, tmp_path_factory) -> None:
    node, chromium = _tools()
    install_workflow_assets(comfy_server, comfyui_path, tmp_path_factory.mktemp("e2e-assets"))
    artifacts = Path(os.environ.get("MOVA_E2E_ARTIFACTS") or tmp_path_factory.mktemp("e2e-artifacts"))
    command = [node, str(E2E_SCRIPT), "--url", f"http://127.0.0.1:{comfy_server.port}/", "--workflow", str(WORKFLOW),
               "--native-workflow", str(NATIVE_WORKFLOW), "--artifacts", str(artifacts), "--small", json.dumps(SMALL_CLIP),
               "--run-timeout", str(RUN_TIMEOUT_S), *(f"--load-workflow={path}" for path in LOADED_ONLY)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=2 * RUN_TIMEOUT_S + 180,
                            env=dict(os.environ, CHROMIUM_PATH=chromium))
    assert result.returncode == 0, (f"browser test failed (screenshots in {artifacts}):\n{result.stderr[-6000:]}\n"
                                    f"{comfy_server.log_tail()}")
    summary = json.loads((artifacts / "summary.json").read_text(encoding="utf-8"))
    for played in (summary["clip"], summary["nativeClip"]):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(played["src"]).query)
        clip = comfy_server.output_dir / query["subfolder"][0] / query["filename"][0]
        with av.open(str(clip)) as container:
            assert sorted(stream.type for stream in container.streams) == ["audio", "video"], "the previewed clip has sound"
            video = container.streams.video[0]
            assert (video.codec_context.width, video.codec_context.height) == (SMALL_CLIP["width"], SMALL_CLIP["height"])
