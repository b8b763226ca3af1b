"""The shipped workflows against a real ComfyUI: the schemas the CI tests check them against are the
server's, and every workflow runs end to end (tiny model standing in for MOVA-360p, small clip sizes).

- Our nodes: CI derives their ``/object_info`` from the node code with a ComfyUI stand-in
  (tests/comfy_stub); here the derived entries must equal the served ones, tooltips and descriptions
  included, so the stand-in cannot drift from ComfyUI.
- Native nodes the workflows use: the snapshot tests/workflow_schemas/native_object_info.json must be
  current; refresh it with ``MOVA_UPDATE_SCHEMA_SNAPSHOT=1``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import load_file

from comfy_stub import derive_object_info
from mova_core import tiny
from mova_core.media.audio_input import frames_covering
from workflow_check import NATIVE_SNAPSHOT, check_workflow, comparable, normalize, snapshot, to_api_prompt

from .comfy_server import PACK_NAME, ComfyServer
from .shipped_workflows import (REPO, SMALL_CLIP, SMALL_LONG, VOICE_SECONDS, WORKFLOWS, install_workflow_assets,
                                load_workflow)

UPDATE_ENV = "MOVA_UPDATE_SCHEMA_SNAPSHOT"
RUN_TIMEOUT_S = 600


def _pack_classes(info: dict) -> set[str]:
    return {name for name, node in info.items() if node["python_module"] == f"custom_nodes.{PACK_NAME}"}


def _native_classes(info: dict) -> list[str]:
    """Every node class a shipped workflow uses that the pack does not define."""
    used = {node["type"] for path in WORKFLOWS for node in load_workflow(path)["nodes"] if node["type"] in info}
    return sorted(used - _pack_classes(info))


def _comfyui_version(comfyui_path: Path) -> str:
    text = (comfyui_path / "comfyui_version.py").read_text(encoding="utf-8")
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return found.group(1) if found else "unknown"


def test_native_snapshot_is_current_and_workflows_fit_this_comfyui(comfy_server: ComfyServer,
                                                                   comfyui_path: Path) -> None:
    """Every shipped workflow is valid against this ComfyUI's live schemas; on the ComfyUI version the snapshot was
    taken from, the snapshot equals the live schemas (other versions add options, e.g. 0.9's samplers)."""
    info = comfy_server.object_info()
    source = f"ComfyUI {_comfyui_version(comfyui_path)} /object_info"
    current = snapshot(info, _native_classes(info), source=source)
    if os.environ.get(UPDATE_ENV) == "1":
        NATIVE_SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        NATIVE_SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    live = {name: normalize(name, entry) for name, entry in info.items()}
    assert {path.name: check_workflow(load_workflow(path), live) for path in WORKFLOWS} == \
        {path.name: [] for path in WORKFLOWS}
    recorded = json.loads(NATIVE_SNAPSHOT.read_text(encoding="utf-8"))
    if recorded["source"] == source:
        assert recorded["nodes"] == current["nodes"], (
            f"{NATIVE_SNAPSHOT.name} differs from the live /object_info: rerun with {UPDATE_ENV}=1, then fix the "
            f"workflows that tests/test_workflows.py reports.")


def test_derived_object_info_is_what_comfyui_serves(comfy_server: ComfyServer) -> None:
    served = comfy_server.object_info()
    ours = sorted(_pack_classes(served))
    derived = derive_object_info()
    assert sorted(derived) == ours, "the stand-in registers other nodes than ComfyUI"
    assert {name: comparable(name, derived[name]) for name in ours} == \
        {name: comparable(name, served[name]) for name in ours}, "tests/comfy_stub drifted from ComfyUI"


def test_template_browser_serves_the_workflows_and_thumbnails(comfy_server: ComfyServer) -> None:
    listed = comfy_server._request("GET", "/workflow_templates").get(PACK_NAME, [])
    assert sorted(listed) == sorted(path.stem for path in WORKFLOWS)
    for name in listed:
        for suffix, kind in ((".json", "application/json"), (".jpg", "image/jpeg")):
            url = f"http://127.0.0.1:{comfy_server.port}/api/workflow_templates/{PACK_NAME}/{name}{suffix}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200 and response.headers["Content-Type"].startswith(kind), url


@pytest.fixture(scope="module")
def workflow_server(comfy_server: ComfyServer, comfyui_path: Path, tmp_path_factory) -> ComfyServer:
    install_workflow_assets(comfy_server, comfyui_path, tmp_path_factory.mktemp("workflow-assets"))
    return comfy_server


def _runnable_here(prompt: dict) -> dict:
    """The shipped prompt with small clip sizes and the rewriter in passthrough (no network in tests)."""
    for node in prompt.values():
        if node["class_type"] == "MOVASampler":
            node["inputs"].update(SMALL_CLIP)
        if node["class_type"] == "MOVAAVLatent":
            node["inputs"].update({key: SMALL_CLIP[key] for key in ("width", "height", "frames")})
        if node["class_type"] in ("MOVASchedule", "KSampler"):
            node["inputs"]["steps"] = SMALL_CLIP["steps"]
        if node["class_type"] == "MOVALongVideo":
            node["inputs"].update(SMALL_LONG)
        if node["class_type"] == "MOVAPromptRewriter":
            node["inputs"]["mode"] = "passthrough"
    return prompt


def _small_prompt(server: ComfyServer, path: Path) -> dict:
    """The API prompt the front end queues for the shipped workflow, at the small sizes."""
    schemas = {name: normalize(name, info) for name, info in server.object_info().items()}
    return _runnable_here(to_api_prompt(load_workflow(path), schemas))


@pytest.mark.slow
@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_runs(workflow_server: ComfyServer, path: Path) -> None:
    prompt = _small_prompt(workflow_server, path)
    entry = workflow_server.run_workflow(prompt, timeout=RUN_TIMEOUT_S)
    mux_ids = [node_id for node_id, node in prompt.items() if node["class_type"] == "MOVAAVMux"]
    saved = entry["outputs"][mux_ids[0]]["images"][0]
    assert entry["outputs"][mux_ids[0]]["animated"] == [True]
    with av.open(str(workflow_server.output_dir / saved["subfolder"] / saved["filename"])) as container:
        kinds = sorted(stream.type for stream in container.streams)
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (SMALL_CLIP["width"], SMALL_CLIP["height"])
        frames = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        samples = sum(frame.samples for frame in container.decode(audio=0))
        audio_rate = container.streams.audio[0].rate
    assert kinds == ["audio", "video"], f"{path.name}: the clip must carry its sound"
    assert frames == _expected_frames(prompt), path.name
    assert abs(samples / audio_rate - frames / 24.0) < 0.05, f"{path.name}: the sound lasts as long as the picture"


def _expected_frames(prompt: dict) -> int:
    """The frames the (small) prompt makes: the long video's, the voice's (frames_from_audio), or the sampler's."""
    classes = {node["class_type"]: node["inputs"] for node in prompt.values()}
    if "MOVALongVideo" in classes:
        return SMALL_LONG["frames"]
    if "LoadAudio" in classes and classes["MOVASampler"].get("frames_from_audio", True):
        rate = tiny.AUDIO_VAE.sample_rate
        return frames_covering(int(VOICE_SECONDS * rate), rate, 24.0, 4)
    return SMALL_CLIP["frames"]


def _saved_latents(server: ComfyServer, path: Path, latents_of: str, prefix: str) -> list[torch.Tensor]:
    """Run the shipped workflow at the small sizes with SaveLatent on the two LATENT outputs of its ``latents_of``
    node (the exact float32 tensors; its mp4's sound is AAC, whose choices flip on a random DAC's noise)."""
    prompt = _small_prompt(server, path)
    source, = [node_id for node_id, node in prompt.items() if node["class_type"] == latents_of]
    for slot in (0, 1):
        prompt[f"save{slot}"] = {"class_type": "SaveLatent",
                                 "inputs": {"samples": [source, slot], "filename_prefix": f"{prefix}_{slot}"}}
    entry = server.run_workflow(prompt, timeout=RUN_TIMEOUT_S)
    files = [entry["outputs"][f"save{slot}"]["latents"][0] for slot in (0, 1)]
    return [load_file(str(server.output_dir / f["subfolder"] / f["filename"]))["latent_tensor"] for f in files]


@pytest.mark.slow
def test_custom_sampler_workflow_samples_mova_samplers_latents(workflow_server: ComfyServer) -> None:
    """mova_native_custom_sampler (SamplerCustomAdvanced + MOVA Noise + euler + MOVA Schedule) and mova_i2va_basic
    (MOVA Sampler) have the same prompt, image, seed, steps and guidance: they sample the same latents."""
    native = _saved_latents(workflow_server, REPO / "workflows" / "mova_native_custom_sampler.json",
                            "MOVASplitAVLatent", "compare/native")
    sampler = _saved_latents(workflow_server, REPO / "workflows" / "mova_i2va_basic.json", "MOVASampler",
                             "compare/sampler")
    for name, ours, reference in zip(("video", "audio"), native, sampler):
        assert ours.shape == reference.shape, name
        assert (ours - reference).abs().max() <= 1e-4 * reference.abs().max(), name
