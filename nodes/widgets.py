"""Widget specifications of the MOVA nodes and the checks ComfyUI skips (no ComfyUI import).

Every numeric widget is described once here: the node schemas build their inputs from these specs,
and ``validate_inputs`` re-checks the inputs it names with the same numbers (ComfyUI skips its own
min/max checks for those inputs). Every problem message names the input and says how to fix it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..mova_core.settings import BOUNDS, DEFAULTS, Bounds, ModelGeometry, GenerationSettings, check_settings

WEIGHT_DTYPES = ("bf16", "fp16", "fp8_e4m3fn", "fp32")
"""Weight storage choices of the model loader (fp8: Linear weights only, computed in bf16)."""

MOVA_GEOMETRY = ModelGeometry(size_multiples=(16, 16), temporal_factor=4)
"""Wan 2.1 VAE stride 8 x DiT patch 2 and the VAE's 4x time factor, shared by every MOVA release: what the
schema checks before a model is loaded (the sampler checks again with the loaded model's values)."""


@dataclass(frozen=True)
class NumberSpec:
    """One INT or FLOAT widget: ``default``, inclusive ``[low, high]`` range and UI ``step``.

    ``auto``: an extra value outside the range that means "the checkpoint's value" (the schema's
    minimum is then ``auto``).
    """

    name: str
    default: float
    low: float
    high: float
    step: float
    tooltip: str
    integer: bool = False
    auto: float | None = None

    @property
    def minimum(self) -> float:
        """The widget's minimum: ``low``, or ``auto`` below it."""
        return self.low if self.auto is None else min(self.low, self.auto)

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable for this widget, or None."""
        if self.auto is not None and value == self.auto and not isinstance(value, bool):
            return None
        problem = Bounds(self.low, self.high, self.integer).problem(self.name, value)
        if problem and self.auto is not None:
            return f"{problem[:-1]} (or {self.auto:g} = the checkpoint's value)."
        return problem


def _int(name: str, default: int, low: int, high: int, step: int, tooltip: str) -> NumberSpec:
    return NumberSpec(name, default, low, high, step, tooltip, integer=True)


NODE_NAMES = {"num_frames": "frames", "boundary_ratio": "boundary", "denoising_strength": "denoise",
              "image": "start_image", "last_image": "end_image", "video_init": "video_latent",
              "audio_init": "audio_latent"}
"""mova_core's argument names -> MOVA Sampler's input names (errors name the input the user sees)."""


def _setting(name: str, default: float, step: float, tooltip: str, auto: float | None = None) -> NumberSpec:
    """The widget of a :class:`GenerationSettings` field: its range is the core's documented one (:data:`BOUNDS`)."""
    setting = next((core for core, widget in NODE_NAMES.items() if widget == name), name)
    bounds = BOUNDS[setting]
    return NumberSpec(name, default, bounds.low, bounds.high, step, tooltip, bounds.integer, auto)


CHECKPOINT_VALUE = {"video_shift": 0.0, "audio_shift": 0.0, "boundary": -1.0}
"""The widget value that means "the checkpoint's value" (the default of these widgets)."""


SAMPLER = {spec.name: spec for spec in (
    _setting("width", DEFAULTS.width, 16, "Video width in pixels (multiple of 16). MOVA 360p: 640x352, 720p: 1280x720."),
    _setting("height", DEFAULTS.height, 16, "Video height in pixels (multiple of 16)."),
    _setting("frames", DEFAULTS.num_frames, 4, "Number of video frames, 4k+1 (193 = 8 s at 24 fps)."),
    _setting("fps", DEFAULTS.fps, 0.01, "Frame rate the video is generated for; sets the audio length."),
    _setting("steps", DEFAULTS.steps, 1, "Denoising steps (official: 50)."),
    _setting("text_cfg", DEFAULTS.text_cfg, 0.1, "Text guidance scale (official: 5). 1 = no negative pass."),
    _setting("bridge_cfg", DEFAULTS.bridge_cfg, 0.1,
             "Bridge (audio-video) guidance scale: >1 strengthens lip sync and sound-picture coupling at the cost "
             "of one extra model pass per step. 1 = off, as in the official pipeline."),
    _setting("video_shift", CHECKPOINT_VALUE["video_shift"], 0.1,
             "Sigma shift of the video schedule. 0 = the checkpoint's (scheduler_config.json shift, as the "
             "official pipeline); any other value overrides it.", auto=CHECKPOINT_VALUE["video_shift"]),
    _setting("audio_shift", CHECKPOINT_VALUE["audio_shift"], 0.1,
             "Sigma shift of the audio schedule. 0 = the checkpoint's (scheduler_config.json shift, as the "
             "official pipeline); any other value overrides it.", auto=CHECKPOINT_VALUE["audio_shift"]),
    _setting("boundary", CHECKPOINT_VALUE["boundary"], 0.005,
             "Expert switch as a fraction of the timestep range: the high-noise expert runs while the video "
             "timestep is at or above boundary x 1000. -1 = the checkpoint's (model_index.json boundary_ratio; "
             "MOVA: 0.9); any value from 0 to 1 overrides it.", auto=CHECKPOINT_VALUE["boundary"]),
    _setting("audio_strength", 1.0, 0.01,
             "With audio_mode 'strength': how much of the connected audio is re-generated (0 = kept, 1 = from "
             "noise, like the official audio denoising strength). Unused in 'freeze' mode and without audio."),
    _setting("denoise", DEFAULTS.denoising_strength, 0.01,
             "Like KSampler's denoise: 1 = generate from noise; below 1 = re-generate the connected video_latent "
             "and audio_latent, keeping more of them the lower it is (the steps cover that last part of the "
             "schedule); 0 = return them unchanged."),
)}


SPEED = {spec.name: spec for spec in (
    NumberSpec("cache_threshold", 0.0, 0.0, 1.0, 0.01,
               "Step cache: reuse a model pass while its output is predicted to change less than this (EasyCache "
               "rule). 0 = off, exact; 0.05 is EasyCache's setting for Wan (published: 2.2x on Wan 2.2 A14B; not yet "
               "measured on MOVA's released weights); higher = faster and further from the exact result."),
)}
"""MOVA Sampler's speed widgets (options of the sampling stage, not :class:`GenerationSettings`)."""


NATIVE = {spec.name: spec for spec in (
    NumberSpec("denoise", 1.0, 0.01, 1.0, 0.01,
               "1 = the whole schedule, from noise; below 1 = its last part, to re-generate a latent."),
)}
"""MOVA Schedule's own widget (the rest are MOVA Sampler's)."""


def sampler_settings(widgets: Mapping[str, float]) -> GenerationSettings:
    """MOVA Sampler's widget values as the core's :class:`GenerationSettings` (checkpoint-value widgets -> None)."""
    values = {name: None if CHECKPOINT_VALUE.get(name) == value and not isinstance(value, bool) else value
              for name, value in widgets.items()}
    core_names = {widget: core for core, widget in NODE_NAMES.items()}
    return GenerationSettings(**{core_names.get(name, name): value for name, value in values.items()})


LONG = {spec.name: spec for spec in (
    _int("frames", 577, 1, 14401, 4, "Frames of the whole video, 4k+1 (577 = 24 s at 24 fps)."),
    _int("window_frames", DEFAULTS.num_frames, 5, 1025, 4,
         "Frames per window, 4k+1 (MOVA is trained on 193 = 8 s at 24 fps); the last window may be shorter."),
    _int("overlap_frames", 25, 1, 1021, 4,
         "Frames each window shares with the previous one, 4k+1: they are continued from it (picture and sound) "
         "and crossfaded."),
)}
"""MOVA Long Video's own widgets (the rest are MOVA Sampler's)."""


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
    MUX["fps"], tooltip="Frame rate of the video (connect MOVA Decode's fps); give the sampler the same fps.")}

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


def settings_problem(width: int, height: int, frames: int, fps: float, steps: int, *,
                 geometry: ModelGeometry = MOVA_GEOMETRY) -> str | None:
    """Why these settings cannot be generated (the core's check, in the sampler's input names), or None."""
    settings = GenerationSettings(width=width, height=height, num_frames=frames, fps=fps, steps=steps)
    try:
        check_settings(settings, geometry, names=NODE_NAMES)
    except ValueError as error:
        return str(error)
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
