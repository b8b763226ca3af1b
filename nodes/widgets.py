"""Widget specifications of the MOVA nodes and the checks ComfyUI skips (no ComfyUI import).

Every numeric widget is described once here: the node schemas build their inputs from these specs,
and ``validate_inputs`` re-checks the inputs it names with the same numbers (ComfyUI skips its own
min/max checks for those inputs). Every problem message names the input and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..mova_core.pipeline import check_generation_arguments

WEIGHT_DTYPES = ("bf16", "fp16", "fp8_e4m3fn", "fp32")
"""Weight storage choices of the model loader (fp8: Linear weights only, computed in bf16)."""

MOVA_SPATIAL_MULTIPLE = 16  # Wan 2.1 VAE stride 8 x DiT patch 2, shared by every MOVA release
MOVA_TEMPORAL_FACTOR = 4


@dataclass(frozen=True)
class NumberSpec:
    """One INT or FLOAT widget: ``default``, inclusive ``[low, high]`` range and UI ``step``."""

    name: str
    default: float
    low: float
    high: float
    step: float
    tooltip: str
    integer: bool = False

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable for this widget, or None."""
        kind = "a whole number" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{self.name}={value!r} must be {kind} from {self.low:g} to {self.high:g}."
        if self.integer and value != int(value):
            return f"{self.name}={value!r} must be a whole number; nearest valid value: {round(value)}."
        if not self.low <= value <= self.high:
            nearest = min(max(value, self.low), self.high)
            return f"{self.name}={value:g} is outside {self.low:g} .. {self.high:g}; nearest valid value: {nearest:g}."
        return None


def _int(name: str, default: int, low: int, high: int, step: int, tooltip: str) -> NumberSpec:
    return NumberSpec(name, default, low, high, step, tooltip, integer=True)


SAMPLER = {spec.name: spec for spec in (
    _int("width", 640, 16, 4096, 16, "Video width in pixels (multiple of 16). MOVA 360p: 640x352, 720p: 1280x720."),
    _int("height", 352, 16, 4096, 16, "Video height in pixels (multiple of 16)."),
    _int("frames", 193, 1, 1025, 4, "Number of video frames, 4k+1 (193 = 8 s at 24 fps)."),
    NumberSpec("fps", 24.0, 1.0, 120.0, 0.01, "Frame rate the clip is generated for; sets the audio length."),
    _int("steps", 50, 1, 200, 1, "Denoising steps (official: 50)."),
    NumberSpec("text_cfg", 5.0, 0.0, 20.0, 0.1, "Text guidance scale (official: 5). 1 = no negative pass."),
    NumberSpec("bridge_cfg", 1.0, 0.0, 10.0, 0.1,
               "Bridge (audio-video) guidance scale: >1 strengthens lip sync and sound-picture coupling at the cost "
               "of one extra model pass per step. 1 = off, as in the official pipeline."),
    NumberSpec("video_shift", 5.0, 0.1, 50.0, 0.1, "Sigma shift of the video schedule (MOVA: 5)."),
    NumberSpec("audio_shift", 5.0, 0.1, 50.0, 0.1, "Sigma shift of the audio schedule (MOVA: 5)."),
    NumberSpec("boundary", 0.9, 0.0, 1.0, 0.005,
               "Expert switch as a fraction of the timestep range: the high-noise expert runs while the video "
               "timestep is at or above boundary x 1000 (MOVA: 0.9)."),
    NumberSpec("denoise", 1.0, 0.0, 1.0, 0.01,
               "Like KSampler's denoise: 1 = generate from noise; below 1 = re-generate the connected video_latent "
               "and audio_latent, keeping more of them the lower it is (the steps cover that last part of the "
               "schedule); 0 = return them unchanged."),
)}

SEED_MAX = 0xFFFFFFFFFFFFFFFF

LORA_STRENGTHS = {spec.name: spec for spec in (
    NumberSpec("strength_high_noise", 1.0, -10.0, 10.0, 0.01, "LoRA strength on the high-noise video expert (video_dit)."),
    NumberSpec("strength_low_noise", 1.0, -10.0, 10.0, 0.01, "LoRA strength on the low-noise video expert (video_dit_2)."),
    NumberSpec("strength_audio", 1.0, -10.0, 10.0, 0.01, "LoRA strength on the audio DiT."),
    NumberSpec("strength_bridge", 1.0, -10.0, 10.0, 0.01, "LoRA strength on the dual-tower bridge."),
)}

DECODE = {spec.name: spec for spec in (
    NumberSpec("target_lufs", -16.0, -40.0, -5.0, 0.5, "Integrated loudness target (LUFS) when normalising."),
    _int("tile_size", 256, 64, 2048, 32, "Tile size in pixels for the tiled video decode (multiple of 8)."),
    _int("tile_overlap", 64, 0, 1024, 32, "Overlap between tiles in pixels (multiple of 8, smaller than tile_size)."),
)}

MUX = {spec.name: spec for spec in (
    NumberSpec("fps", 24.0, 1.0, 120.0, 0.01, "Frame rate of the mp4 (connect MOVA Decode's fps)."),
    _int("crf", 19, 0, 51, 1, "H.264 quality: 0 = lossless, 51 = worst (official MOVA files use 5)."),
)}

ENCODE = {"fps": dataclasses.replace(
    MUX["fps"], tooltip="Frame rate of the clip (connect MOVA Decode's fps); give the sampler the same fps.")}

REWRITER = {spec.name: spec for spec in (
    _int("timeout_s", 120, 1, 1800, 1, "Seconds to wait for each answer of the endpoint."),
    _int("retries", 2, 0, 10, 1, "Extra attempts after a timeout, a dropped connection, HTTP 429 or 5xx."),
)}


def range_problems(specs: Mapping[str, NumberSpec], values: Mapping[str, object]) -> list[str]:
    """Messages for the ``values`` (by input name) outside their spec; unknown names are ignored."""
    return [problem for name, value in values.items() if name in specs
            for problem in [specs[name].problem(value)] if problem]


def choice_problem(name: str, value: object, choices: Iterable[str], fix: str = "") -> str | None:
    """Message when ``value`` is not one of ``choices`` (ComfyUI does not check V3 combos itself)."""
    options = list(choices)
    if value in options:
        return None
    shown = options if len(options) <= 12 else options[:12] + [f"... ({len(options) - 12} more)"]
    return f"{name}={value!r} is not available; choose one of {shown}." + (f" {fix}" if fix else "")


def clip_problem(width: int, height: int, frames: int, fps: float, steps: int, *,
                 spatial_multiple: int | tuple[int, int] = MOVA_SPATIAL_MULTIPLE,
                 temporal_factor: int = MOVA_TEMPORAL_FACTOR) -> str | None:
    """Why these clip settings cannot be generated (ranges, multiples, 4k+1 frames), or None.

    The model-specific multiples default to MOVA's; the sampler repeats the check with the loaded
    model's values before it runs anything.
    """
    values = {"width": width, "height": height, "frames": frames, "fps": fps, "steps": steps}
    problems = range_problems(SAMPLER, values)
    if problems:
        return " ".join(problems)
    try:
        check_generation_arguments(height=height, width=width, num_frames=frames, fps=fps, steps=steps,
                                   spatial_multiple=spatial_multiple, temporal_factor=temporal_factor)
    except ValueError as error:
        return str(error).replace("num_frames=", "frames=")
    return None


def tile_problem(tiled: bool, tile_size: int, tile_overlap: int, spatial_factor: int = 8) -> str | None:
    """Why the tiled-decode settings are unusable (only checked when ``tiled``), or None."""
    if not tiled:
        return None
    problems = range_problems(DECODE, {"tile_size": tile_size, "tile_overlap": tile_overlap})
    for name, value in (("tile_size", tile_size), ("tile_overlap", tile_overlap)):
        if not problems and value % spatial_factor:
            nearest = max(spatial_factor, round(value / spatial_factor) * spatial_factor)
            problems.append(f"{name}={value} must be a multiple of {spatial_factor} pixels; nearest valid value: {nearest}.")
    if not problems and tile_overlap >= tile_size:
        problems.append(f"tile_overlap={tile_overlap} must be smaller than tile_size={tile_size}; "
                        f"try tile_overlap={tile_size // 4 // spatial_factor * spatial_factor}.")
    return " ".join(problems) or None
