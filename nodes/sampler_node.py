"""MOVA Sampler."""

from __future__ import annotations

from typing import Any

import torch
from comfy_api.latest import io

from ..mova_core.pipeline import DRIVING_MODES
from ..mova_core.settings import SEED_MAX
from .comfy_io import CATEGORY, model_and_prompt_inputs, number_input
from .comfy_model import MovaModel
from .generation import sample_latents
from .widgets import SAMPLER, SPEED, settings_problem

_SLIDERS = ("text_cfg", "bridge_cfg")


def _widget(name: str, **extra: Any) -> io.Input:
    return number_input(SAMPLER[name], **({"display_mode": io.NumberDisplay.slider} if name in _SLIDERS else {}), **extra)


class MOVASampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        seed = io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                            tooltip="Noise seed; the same seed gives the same video on any device.")
        widgets = [*map(_widget, ("width", "height", "frames", "fps", "steps")), seed,
                   *map(_widget, ("text_cfg", "bridge_cfg", "video_shift", "audio_shift", "boundary")),
                   _widget("denoise", optional=True),  # optional: API prompts made before it still run (1.0)
                   number_input(SPEED["cache_threshold"], optional=True),
                   io.Combo.Input("audio_mode", options=list(DRIVING_MODES), default="freeze", optional=True,
                                  tooltip="With audio connected: 'freeze' keeps it exactly and generates the picture "
                                          "around it (lip sync, motion); 'strength' re-generates it too, by "
                                          "audio_strength."),
                   _widget("audio_strength", optional=True),
                   io.Boolean.Input("frames_from_audio", default=True, optional=True,
                                    tooltip="With audio connected: the video is as long as the sound (the fewest "
                                            "frames, 4k+1, that cover it) and the frames widget is not used. Off: "
                                            "the sound is cut or padded to the frames.")]
        return io.Schema(
            node_id="MOVASampler", display_name="MOVA Sampler", category=CATEGORY,
            description="Generates video and audio latents together: two video experts switched at the boundary, the "
                        "audio DiT and the bridge, with text CFG and bridge CFG. No start image = text to video+audio; "
                        "an end image makes the video end on it; denoise below 1 re-generates connected latents; "
                        "connected audio drives the picture (talking, singing, playing to it).",
            inputs=[
                *model_and_prompt_inputs(),
                io.Image.Input("start_image", optional=True, tooltip="First frame (cropped to the aspect, resized). "
                                                                     "None = T2VA from a white first frame."),
                io.Image.Input("end_image", optional=True,
                               tooltip="Last frame (first + last frame; cropped and resized like the start image). "
                                       "Needs start_image."),
                io.Latent.Input("video_latent", optional=True,
                                tooltip="Video to re-generate when denoise < 1 (a MOVA Sampler output or a Wan 2.1 "
                                        "VAE encode of the video's size); unused at denoise 1."),
                io.Latent.Input("audio_latent", optional=True,
                                tooltip="Audio to re-generate when denoise < 1 (a MOVA Sampler output of the same "
                                        "frames and fps); unused at denoise 1."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Sound that drives the picture (voice-over, TTS line, song), resampled to the "
                                       "model's rate; see frames_from_audio for the video's length."),
                *widgets,
            ],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
        )

    @classmethod
    def validate_inputs(cls, width: int | None, height: int | None, frames: int | None) -> bool | str:
        if None in (width, height, frames):  # linked from another node: checked when the sampler runs
            return True
        return settings_problem(width, height, frames, SAMPLER["fps"].default, 1) or True

    @classmethod
    def execute(cls, mova_model: MovaModel, positive: Any, negative: Any = None, start_image: torch.Tensor | None = None,
                end_image: torch.Tensor | None = None, video_latent: Any = None, audio_latent: Any = None,
                audio: dict | None = None, audio_mode: str = "freeze", frames_from_audio: bool = True,
                cache_threshold: float = 0.0, **widgets: Any) -> io.NodeOutput:
        if audio is not None and frames_from_audio:
            widgets = {**widgets, "frames": None}
        video, sound = sample_latents(mova_model, positive, negative, widgets, start_image=start_image,
                                      end_image=end_image, video_init=video_latent, audio_init=audio_latent,
                                      audio=audio, audio_mode=audio_mode, cache_threshold=cache_threshold)
        return io.NodeOutput(video, sound)
