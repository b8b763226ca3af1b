"""MOVA Decode and MOVA AV Mux / Save."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import folder_paths
from comfy_api.latest import InputImpl, Types, io, ui

from ..mova_core.media import frame_rate, sync_problem, write_mp4
from .comfy_io import CATEGORY, MovaModelType, number_input
from .comfy_model import MovaModel
from .generation import decode_audio, decode_video
from .latents import latent_settings
from .widgets import DECODE, MUX, tile_problem

DEFAULT_FPS = 24.0


class MOVADecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVADecode", display_name="MOVA Decode", category=CATEGORY,
            description="Decodes MOVA latents: video with the Wan 2.1 VAE (optionally tiled for low VRAM), audio with "
                        "MOVA's DAC (trimmed to the video, optional loudness normalisation).",
            inputs=[
                MovaModelType.Input("mova_model"),
                io.Latent.Input("video_latent"),
                io.Latent.Input("audio_latent"),
                io.Boolean.Input("normalize_loudness", default=False,
                                 tooltip="Bring the audio to target_lufs (true peak <= -1 dBTP); off = as generated."),
                number_input(DECODE["target_lufs"]),
                io.Boolean.Input("tiled_decode", default=False,
                                 tooltip="Decode in overlapping spatial tiles: bounded memory, slight seams possible."),
                number_input(DECODE["tile_size"]),
                number_input(DECODE["tile_overlap"]),
            ],
            outputs=[io.Image.Output(display_name="images"), io.Audio.Output(display_name="audio"),
                     io.Float.Output(display_name="fps")],
        )

    @classmethod
    def validate_inputs(cls, tiled_decode: bool, tile_size: int, tile_overlap: int) -> bool | str:
        if None in (tiled_decode, tile_size, tile_overlap):  # linked: checked when the node runs
            return True
        return tile_problem(tiled_decode, tile_size, tile_overlap) or True

    @classmethod
    def execute(cls, mova_model: MovaModel, video_latent: dict, audio_latent: dict, normalize_loudness: bool,
                target_lufs: float, tiled_decode: bool, tile_size: int, tile_overlap: int) -> io.NodeOutput:
        factor = mova_model.pipeline.video_vae.config.spatial_factor
        problem = tile_problem(tiled_decode, tile_size, tile_overlap, factor)
        if problem:
            raise ValueError(problem)
        images = decode_video(mova_model, video_latent, (tile_size, tile_overlap) if tiled_decode else None)
        audio = decode_audio(mova_model, audio_latent, target_lufs if normalize_loudness else None)
        return io.NodeOutput(images, audio, float(latent_settings(video_latent).get("fps", DEFAULT_FPS)))


def metadata_disabled() -> bool:
    """ComfyUI's ``--disable-metadata`` (``comfy.cli_args.args``), read as SaveVideo does; False when it cannot be
    read as a boolean (tests set it on the stand-in's ``comfy.cli_args.args``)."""
    try:
        from comfy.cli_args import args
    except ImportError:
        return False
    return getattr(args, "disable_metadata", False) is True


def _workflow_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """ComfyUI's "prompt"/"workflow" tags, so dropping the mp4 onto ComfyUI reloads the graph; none with
    ``--disable-metadata``."""
    if metadata_disabled():
        return {}
    metadata = {"prompt": prompt} if prompt is not None else {}
    metadata.update(extra_pnginfo or {})
    return {key: json.dumps(value) for key, value in metadata.items()}


def prefix_problem(filename_prefix: str) -> str | None:
    """Why ``filename_prefix`` gives no proper file name (empty, ending in a slash, or hidden), or None."""
    name = os.path.basename(filename_prefix.strip())
    if name and not name.startswith("."):
        return None
    return (f"filename_prefix={filename_prefix!r} gives no visible file name (it is empty, ends with a slash or "
            f"starts with a dot); end it with a name, e.g. {filename_prefix.strip().rstrip('/') or 'MOVA'}/mova.")


def _mux_problem(images: torch.Tensor, audio: dict | None, fps: float, filename_prefix: str) -> str | None:
    """Why the mux would write a wrong or hidden file, or None."""
    problem = prefix_problem(filename_prefix)
    if problem or audio is None:
        return problem
    return sync_problem(images.shape[0], audio["waveform"].shape[-1], int(audio["sample_rate"]), fps)


class MOVAAVMux(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVAAVMux", display_name="MOVA AV Mux / Save", category=CATEGORY, is_output_node=True,
            description="Muxes frames and audio into an H.264 + AAC mp4 in the output folder (never overwriting), "
                        "previews it, and returns a VIDEO for native video nodes.",
            inputs=[
                io.Image.Input("images"),
                io.Audio.Input("audio", optional=True, tooltip="None = a silent mp4."),
                number_input(MUX["fps"]),
                io.String.Input("filename_prefix", default="MOVA/mova",
                                tooltip="Path under the output folder; a counter is appended."),
                number_input(MUX["crf"]),
            ],
            outputs=[io.Video.Output(display_name="video")],
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = None) -> bool | str:
        if filename_prefix is None:  # linked: checked when the node runs
            return True
        return prefix_problem(filename_prefix) or True

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, filename_prefix: str, crf: int,
                audio: dict | None = None) -> io.NodeOutput:
        problem = _mux_problem(images, audio, fps, filename_prefix)
        if problem:
            raise ValueError(problem)
        images = images[..., :3]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), images.shape[2], images.shape[1])
        waveform = None if audio is None else audio["waveform"][0]
        saved = write_mp4(Path(folder) / f"{name}_{counter:05}_.mp4", images, waveform, fps=fps,
                          sample_rate=None if audio is None else int(audio["sample_rate"]), crf=crf,
                          metadata=_workflow_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo))
        video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=audio, frame_rate=frame_rate(fps)))
        return io.NodeOutput(video, ui=ui.PreviewVideo([ui.SavedResult(saved.name, subfolder, io.FolderType.output)]))
