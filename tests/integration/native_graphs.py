"""API prompts for MOVA's native path (MOVA Native Model -> core sampler nodes) next to MOVA Sampler, and reading
back what they save: LATENTs through SaveLatent (the exact float32 tensors), SIGMAS through PreviewAny (text)."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import soundfile
import torch
from safetensors.torch import load_file

from .comfy_server import ComfyServer
from .conftest import DEFAULT_START_TIMEOUT

PROMPT, NEGATIVE = "a dog barks on the beach", "blurry, silent"
CLIP = dict(width=48, height=32, frames=9, fps=16.0)
SAMPLER_ID, SPLIT_ID, NATIVE_ID, AV_LATENT_ID, SIGMAS_ID = "10", "28", "20", "22", "23"
MOVA_EULER = "MOVA Euler (official)"
"""``sampler`` of :func:`add_native` for the MOVAEulerSampler node instead of KSamplerSelect."""


def base_graph(model_name: str) -> dict[str, Any]:
    """Loader and the two prompts (MOVA Text Encode), shared by both paths."""
    return {
        "1": {"class_type": "MOVAModelLoader", "inputs": {"model_name": model_name, "weight_dtype": "fp32",
                                                           "attention": "comfy"}},
        "2": {"class_type": "MOVATextEncode", "inputs": {"mova_model": ["1", 0], "text": PROMPT}},
        "3": {"class_type": "MOVATextEncode", "inputs": {"mova_model": ["1", 0], "text": NEGATIVE}},
    }


def add_image(graph: dict[str, Any]) -> list:
    graph["4"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 40, "batch_size": 1, "color": 0x3366CC}}
    return ["4", 0]


def add_audio(graph: dict[str, Any], file_name: str) -> list:
    graph["5"] = {"class_type": "LoadAudio", "inputs": {"audio": file_name}}
    return ["5", 0]


def write_voice(path: Path, rate: int = 24000) -> None:
    """A 0.45 s 180 Hz tone (a sound for MOVA AV Latent's / MOVA Sampler's audio input) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * 180 * np.arange(int(0.45 * rate)) / rate), rate)


@contextmanager
def debug_server(comfy: ComfyServer, models: Mapping[str, Path], voice: str) -> Iterator[ComfyServer]:
    """``comfy`` started at DEBUG (the model-pass lines) with ``models`` linked under models/mova and a sound named
    ``voice`` in its input folder; stopped on exit."""
    for name, path in models.items():
        comfy.link_model("mova", path, name)
    write_voice(comfy.base_dir / "input" / voice)
    comfy.start(timeout=float(os.environ.get("COMFYUI_START_TIMEOUT", DEFAULT_START_TIMEOUT)),
                extra_args=["--verbose", "DEBUG"])
    try:
        yield comfy
    finally:
        comfy.stop()


def add_mova_sampler(graph: dict[str, Any], prefix: str, *, steps: int, seed: int, text_cfg: float,
                     bridge_cfg: float = 1.0, boundary: float = -1.0, **extra: Any) -> None:
    """MOVA Sampler with the checkpoint's shifts; its LATENTs saved as ``<prefix>_video`` / ``<prefix>_audio``."""
    graph[SAMPLER_ID] = {"class_type": "MOVASampler", "inputs": {
        "mova_model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], **CLIP, "steps": steps, "seed": seed,
        "text_cfg": text_cfg, "bridge_cfg": bridge_cfg, "video_shift": 0.0, "audio_shift": 0.0, "boundary": boundary,
        **extra}}
    save_latent(graph, "11", [SAMPLER_ID, 0], f"{prefix}_video")
    save_latent(graph, "12", [SAMPLER_ID, 1], f"{prefix}_audio")


def save_latent(graph: dict[str, Any], node: str, latent: list, prefix: str) -> None:
    graph[node] = {"class_type": "SaveLatent", "inputs": {"samples": latent, "filename_prefix": prefix}}


def add_native(graph: dict[str, Any], prefix: str, *, steps: int, seed: int, cfg: float, bridge_cfg: float = 1.0,
               boundary: float = -1.0, sampler: str = "euler", scheduler: str | None = None, noise: str = "mova",
               patches: tuple[dict[str, Any], ...] = (), **av_inputs: Any) -> None:
    """MOVA Native Model (-> Bridge Guidance -> ``patches``, each a node whose ``model`` input is filled in) ->
    SamplerCustomAdvanced(MOVA Noise or RandomNoise, CFGGuider, KSamplerSelect(``sampler``) or MOVA Euler (official)
    for :data:`MOVA_EULER`, MOVA Schedule or BasicScheduler(``scheduler``)) on MOVA AV Latent's latent; saves the AV
    latent (``<prefix>_av``) and MOVA Split AV Latent's outputs (``<prefix>_video``, ``<prefix>_audio``); the sigmas
    go to a PreviewAny (node ``"33"``)."""
    model = add_model(graph, boundary=boundary, bridge_cfg=bridge_cfg, patches=patches)
    add_av_latent(graph, **av_inputs)
    graph[SIGMAS_ID] = ({"class_type": "MOVASchedule", "inputs": {"model": model, "steps": steps, "denoise": 1.0}}
                        if scheduler is None else
                        {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": scheduler,
                                                                     "steps": steps, "denoise": 1.0}})
    graph["24"] = ({"class_type": "MOVANoise", "inputs": {"noise_seed": seed}} if noise == "mova" else
                   {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}})
    graph["25"] = ({"class_type": "MOVAEulerSampler", "inputs": {}} if sampler == MOVA_EULER else
                   {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}})
    graph["26"] = {"class_type": "CFGGuider", "inputs": {"model": model, "positive": [AV_LATENT_ID, 0],
                                                          "negative": [AV_LATENT_ID, 1], "cfg": cfg}}
    graph["27"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["24", 0], "guider": ["26", 0], "sampler": ["25", 0], "sigmas": [SIGMAS_ID, 0],
        "latent_image": [AV_LATENT_ID, 2]}}
    add_split(graph, ["27", 0], prefix)
    graph["33"] = {"class_type": "PreviewAny", "inputs": {"source": [SIGMAS_ID, 0]}}


def add_model(graph: dict[str, Any], *, boundary: float = -1.0, bridge_cfg: float = 1.0,
              patches: tuple[dict[str, Any], ...] = ()) -> list:
    """MOVA Native Model -> MOVA Bridge Guidance (unless ``bridge_cfg`` is 1) -> ``patches`` (nodes ``"40"``...,
    each a node whose ``model`` input is filled in); the last MODEL."""
    graph[NATIVE_ID] = {"class_type": "MOVANativeModel", "inputs": {"mova_model": ["1", 0], "boundary": boundary}}
    model = [NATIVE_ID, 0]
    if bridge_cfg != 1.0:
        graph["21"] = {"class_type": "MOVABridgeGuidance", "inputs": {"model": model, "bridge_cfg": bridge_cfg}}
        model = ["21", 0]
    for index, patch in enumerate(patches):
        node = str(40 + index)
        graph[node] = {"class_type": patch["class_type"], "inputs": {**patch["inputs"], "model": model}}
        model = [node, 0]
    return model


def add_av_latent(graph: dict[str, Any], **av_inputs: Any) -> None:
    """MOVA AV Latent on the two prompts (node :data:`AV_LATENT_ID`: positive, negative, av_latent)."""
    graph[AV_LATENT_ID] = {"class_type": "MOVAAVLatent", "inputs": {
        "mova_model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], **CLIP, **av_inputs}}


def add_split(graph: dict[str, Any], av_latent: list, prefix: str) -> None:
    save_latent(graph, "32", av_latent, f"{prefix}_av")
    graph[SPLIT_ID] = {"class_type": "MOVASplitAVLatent", "inputs": {"mova_model": ["1", 0], "av_latent": av_latent}}
    save_latent(graph, "29", [SPLIT_ID, 0], f"{prefix}_video")
    save_latent(graph, "30", [SPLIT_ID, 1], f"{prefix}_audio")


def add_ksampler(graph: dict[str, Any], prefix: str, *, steps: int, seed: int, cfg: float,
                 sampler: str = "euler", scheduler: str = "simple") -> None:
    """Stock KSampler on MOVA Native Model and MOVA AV Latent (both from :func:`add_native`'s node ids)."""
    graph["34"] = {"class_type": "KSampler", "inputs": {
        "model": [NATIVE_ID, 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
        "scheduler": scheduler, "positive": [AV_LATENT_ID, 0], "negative": [AV_LATENT_ID, 1],
        "latent_image": [AV_LATENT_ID, 2], "denoise": 1.0}}
    save_latent(graph, "35", ["34", 0], f"{prefix}_av")


def saved_latents(server: ComfyServer, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every LATENT the prompt saved, by file name prefix (``<prefix>_video`` ...)."""
    found = {}
    for output in entry["outputs"].values():
        for saved in output.get("latents", []):
            path = server.output_dir / saved["subfolder"] / saved["filename"]
            name = Path(saved["filename"]).name.rsplit("_", 2)[0]
            found[f"{saved['subfolder']}/{name}".lstrip("/")] = load_file(str(path))["latent_tensor"]
    return found


def previewed_sigmas(entry: dict[str, Any], node: str = "33") -> torch.Tensor:
    """The SIGMAS a PreviewAny showed (``tensor([...])``: 4 decimals)."""
    text = entry["outputs"][node]["text"][0]
    return torch.tensor([float(value) for value in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)])
