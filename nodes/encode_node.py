"""MOVA Encode: an existing video -> latents MOVA Sampler re-generates with denoise < 1."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .comfy_io import CATEGORY, MovaModelType, number_input
from .comfy_model import MovaModel
from .generation import encode_latents
from .widgets import ENCODE


class MOVAEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVAEncode", display_name="MOVA Encode", category=CATEGORY,
            description="Encodes a video's frames (Wan 2.1 VAE) and sound (MOVA's DAC, resampled to the model's rate) "
                        "into the video and audio latents MOVA Sampler re-generates with denoise < 1. Frames must be "
                        "4k+1; set the sampler's width, height, frames and fps to the video's.",
            inputs=[
                MovaModelType.Input("mova_model"),
                io.Image.Input("images", optional=True,
                               tooltip="The video's frames (4k+1, sides the sampler accepts). None = audio only: the "
                                       "sampler then needs a video_latent from elsewhere."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The video's sound (trimmed to the frames; any sample rate). None = images only: "
                                       "the sampler then needs an audio_latent from elsewhere."),
                number_input(ENCODE["fps"]),
            ],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
        )

    @classmethod
    def execute(cls, mova_model: MovaModel, fps: float, images: torch.Tensor | None = None,
                audio: dict | None = None) -> io.NodeOutput:
        return io.NodeOutput(*encode_latents(mova_model, images, audio, fps))
