"""Shared set-up for running the shipped workflows on a real ComfyUI: a tiny MOVA checkpoint and tiny
LoRAs linked under the names the workflows use, the start image and the sound they load, and small sizes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from safetensors.torch import save_file

from mova_core import tiny

from .comfy_server import ComfyServer

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
SMALL_CLIP = {"width": 64, "height": 48, "frames": 5, "steps": 2}
"""Sampler settings small enough for a CPU run of the tiny model (sizes on MOVA's 16-pixel grid, 4k+1 frames)."""
SMALL_LONG = {"width": 64, "height": 48, "steps": 2, "frames": 21, "window_frames": 9, "overlap_frames": 5}
"""MOVA Long Video settings for the same: four windows of 9 frames overlapping by 5."""
VOICE_SECONDS = 0.45
"""Length of the sound written for every LoadAudio of the workflows (0.45 s at 24 fps: 13 frames)."""

_LORA_RANK = 4
_LORA_LAYERS = {"video_dit": tiny.VIDEO_DIT.dim, "video_dit_2": tiny.VIDEO_DIT.dim, "audio_dit": tiny.AUDIO_DIT.dim}


def load_workflow(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def widget_values_of(workflow: dict[str, Any], node_type: str) -> list[list[Any]]:
    return [node["widgets_values"] for node in workflow["nodes"] if node["type"] == node_type]


def write_tiny_lora(path: Path, seed: int) -> Path:
    """A small official-style LoRA (``<component>.blocks.0.self_attn.q.lora_A/B.weight``) for the tiny model."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for component, dim in _LORA_LAYERS.items():
        prefix = f"{component}.blocks.0.self_attn.q"
        tensors[f"{prefix}.lora_A.weight"] = 0.01 * torch.randn(_LORA_RANK, dim, generator=generator)
        tensors[f"{prefix}.lora_B.weight"] = 0.01 * torch.randn(dim, _LORA_RANK, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def install_workflow_assets(server: ComfyServer, comfyui_path: Path, scratch: Path) -> None:
    """Link a tiny checkpoint under every MOVA model name the workflows use, tiny LoRAs under every
    LoRA name, and copy ComfyUI's example start image into the server's input folder."""
    checkpoint = tiny.write_tiny_checkpoint(scratch / "mova-tiny")
    workflows = [load_workflow(path) for path in WORKFLOWS]
    model_names = {values[0] for wf in workflows for values in widget_values_of(wf, "MOVAModelLoader")}
    lora_names = {values[0] for wf in workflows for values in widget_values_of(wf, "MOVALoraLoader")}
    for name in sorted(model_names):
        if not (server.models_dir("mova") / name).exists():
            server.link_model("mova", checkpoint, name)
    for index, name in enumerate(sorted(lora_names)):
        if not (server.models_dir("loras") / name).exists():
            server.link_model("loras", write_tiny_lora(scratch / "loras" / name, seed=index), name)
    images = {values[0] for wf in workflows for values in widget_values_of(wf, "LoadImage")}
    for image in images:
        shutil.copy(comfyui_path / "input" / image, server.base_dir / "input" / image)
    rate = tiny.AUDIO_VAE.sample_rate
    voice = 0.3 * np.sin(2 * np.pi * 180 * np.arange(int(VOICE_SECONDS * rate)) / rate)
    for sound in {values[0] for wf in workflows for values in widget_values_of(wf, "LoadAudio")}:
        soundfile.write(str(server.base_dir / "input" / sound), voice, rate)
