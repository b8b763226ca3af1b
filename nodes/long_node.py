"""MOVA Long Video: a video longer than one window, made window by window (MovaPipeline.generate_long)."""

from __future__ import annotations

from typing import Any

import torch
from comfy_api.latest import io

from ..mova_core.pipeline import DRIVING_MODES
from ..mova_core.settings import SEED_MAX
from .comfy_io import CATEGORY, model_and_prompt_inputs, number_input
from .comfy_model import MovaModel
from .generation import long_video
from .widgets import LONG, SAMPLER

_SAMPLER_WIDGETS = ("width", "height", "fps", "steps")
_GUIDANCE_WIDGETS = ("text_cfg", "bridge_cfg", "video_shift", "audio_shift", "boundary")


class MOVALongVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVALongVideo", display_name="MOVA Long Video", category=CATEGORY,
            description="Makes a video longer than MOVA's 8-second window: window after window, each continuing the "
                        "previous one's last frames and keeping its sound over them, crossfaded over the overlap. "
                        "Connected audio drives the whole video. Outputs frames, audio and fps for MOVA AV Mux.",
            inputs=[
                *model_and_prompt_inputs(),
                io.Image.Input("start_image", optional=True, tooltip="First frame of the first window. None = T2VA."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Sound that drives the whole video (cut per window); see frames_from_audio."),
                *(number_input(SAMPLER[name]) for name in _SAMPLER_WIDGETS),
                *(number_input(spec) for spec in LONG.values()),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Noise seed of the first window; window k uses seed + k."),
                *(number_input(SAMPLER[name]) for name in _GUIDANCE_WIDGETS),
                io.Combo.Input("audio_mode", options=list(DRIVING_MODES), default="freeze", optional=True,
                               tooltip="With audio: 'freeze' keeps it exactly; 'strength' re-generates it by "
                                       "audio_strength."),
                number_input(SAMPLER["audio_strength"], optional=True),
                io.Boolean.Input("frames_from_audio", default=True, optional=True,
                                 tooltip="With audio: the video is as long as the sound and the frames widget is "
                                         "not used."),
            ],
            outputs=[io.Image.Output(display_name="images"), io.Audio.Output(display_name="audio"),
                     io.Float.Output(display_name="fps")],
        )

    @classmethod
    def execute(cls, mova_model: MovaModel, positive: Any, frames: int, window_frames: int, overlap_frames: int,
                negative: Any = None, start_image: torch.Tensor | None = None, audio: dict | None = None,
                audio_mode: str = "freeze", frames_from_audio: bool = True, **widgets: Any) -> io.NodeOutput:
        images, sound = long_video(mova_model, positive, negative, widgets, start_image=start_image, audio=audio,
                                   audio_mode=audio_mode, window_frames=window_frames, overlap_frames=overlap_frames,
                                   frames=None if audio is not None and frames_from_audio else frames)
        return io.NodeOutput(images, sound, float(widgets["fps"]))
