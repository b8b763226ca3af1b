"""What a user chooses for one clip, the documented range of every setting, and the one check of them.

Every front end (the Python API, the command line, the ComfyUI nodes) describes a run as a
:class:`GenerationSettings` and calls :func:`check_settings` before any model is loaded or any step taken;
the node widgets take their ranges from :data:`BOUNDS`. ``None`` for ``video_shift``,
``audio_shift`` and ``boundary_ratio`` means "the checkpoint's value" (``scheduler_config.json`` and
``model_index.json``), so an untouched setting computes what the official code computes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping

SEED_MAX = 2**64 - 1
"""Largest seed (a CPU generator takes 64-bit seeds)."""


@dataclass(frozen=True)
class Bounds:
    """Inclusive ``[low, high]`` range of a numeric setting; ``integer`` settings take whole numbers only."""

    low: float
    high: float
    integer: bool = False

    def problem(self, name: str, value: object) -> str | None:
        """Why ``value`` is not acceptable for the setting ``name``, or None."""
        kind = "a whole number" if self.integer else "a finite number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name}={value!r} must be {kind} from {self.low:g} to {self.high:g}."
        if self.integer and value != int(value):
            return f"{name}={value!r} must be a whole number; nearest valid value: {round(value)}."
        if not self.low <= value <= self.high:
            nearest = min(max(value, self.low), self.high)
            shown = (lambda number: f"{int(number)}") if self.integer else (lambda number: f"{number:g}")
            return (f"{name}={shown(value)} is outside {shown(self.low)} .. {shown(self.high)}; "
                    f"nearest valid value: {shown(nearest)}.")
        return None


BOUNDS: dict[str, Bounds] = {
    "height": Bounds(16, 4096, integer=True),
    "width": Bounds(16, 4096, integer=True),
    "num_frames": Bounds(1, 1025, integer=True),
    "fps": Bounds(1.0, 120.0),
    "steps": Bounds(1, 1000, integer=True),
    "seed": Bounds(0, SEED_MAX, integer=True),
    "text_cfg": Bounds(0.0, 20.0),
    "bridge_cfg": Bounds(0.0, 10.0),
    "video_shift": Bounds(0.1, 50.0),
    "audio_shift": Bounds(0.1, 50.0),
    "boundary_ratio": Bounds(0.0, 1.0),
    "denoising_strength": Bounds(0.0, 1.0),
    "video_strength": Bounds(0.0, 1.0),
    "audio_strength": Bounds(0.0, 1.0),
}
"""The documented range of every numeric setting (the ComfyUI widgets use the same numbers)."""


@dataclass(frozen=True)
class GenerationSettings:
    """One clip's settings. ``seed=None`` draws a random seed; ``None`` shifts and boundary = the checkpoint's.

    ``denoising_strength`` < 1 re-generates given latents (1 = from noise, 0 = the given latents unchanged);
    ``video_strength``/``audio_strength`` set one modality's own (None = ``denoising_strength``; 0 = that
    modality is held as given while the other is generated: audio-driven video, video-driven audio).
    """

    height: int = 352
    width: int = 640
    num_frames: int = 193
    fps: float = 24.0
    steps: int = 50
    text_cfg: float = 5.0
    bridge_cfg: float = 1.0
    seed: int | None = None
    video_shift: float | None = None
    audio_shift: float | None = None
    boundary_ratio: float | None = None
    denoising_strength: float = 1.0
    video_strength: float | None = None
    audio_strength: float | None = None

    def strength(self, modality: str) -> float:
        """The denoising strength of ``"video"`` or ``"audio"``: its own setting, else ``denoising_strength``."""
        own = self.video_strength if modality == "video" else self.audio_strength
        return self.denoising_strength if own is None else own

    def strength_setting(self, modality: str) -> str:
        """The name of the setting that gives ``modality`` its strength."""
        return "denoising_strength" if getattr(self, f"{modality}_strength") is None else f"{modality}_strength"


DEFAULTS = GenerationSettings()
"""The official defaults (360p, 193 frames = 8 s at 24 fps, 50 steps, text CFG 5, bridge CFG 1): every front
end's defaults come from here."""


@dataclass(frozen=True)
class ModelGeometry:
    """What a model fixes about valid clips: (height, width) multiples and the VAE's frame factor."""

    size_multiples: tuple[int, int]
    temporal_factor: int


def size_multiples(patch_size: tuple[int, ...], vae_stride: int) -> tuple[int, int]:
    """(height, width) granularity of a video: the VAE stride times the DiT patch along that side,
    and a multiple of twice the VAE stride (16, as the official ``check_inputs`` demands)."""
    _, patch_height, patch_width = patch_size
    return vae_stride * math.lcm(2, patch_height), vae_stride * math.lcm(2, patch_width)


def _nearest_multiple(value: int, multiple: int) -> int:
    """Nearest positive multiple; ties go down (360 -> 352, the official "360p" height)."""
    return max(multiple, math.ceil(value / multiple - 0.5) * multiple)


def nearest_frame_count(frames: float, temporal_factor: int) -> int:
    """The valid frame count (``temporal_factor``·k + 1) nearest to ``frames``; ties go up."""
    return max(0, math.floor((frames - 1) / temporal_factor + 0.5)) * temporal_factor + 1


def geometry_problem(settings: GenerationSettings, geometry: ModelGeometry, names: Mapping[str, str] | None = None) -> str | None:
    """Why the clip's size or frame count does not fit the model, or None (ranges checked first)."""
    names = names or {}
    for field, value, multiple in (("height", settings.height, geometry.size_multiples[0]),
                                   ("width", settings.width, geometry.size_multiples[1])):
        if value % multiple:
            return (f"{names.get(field, field)}={value} must be a positive multiple of {multiple}; "
                    f"nearest valid value: {_nearest_multiple(value, multiple)}.")
    factor = geometry.temporal_factor
    if settings.num_frames is not None and (settings.num_frames - 1) % factor:  # None: derived from given audio
        return (f"{names.get('num_frames', 'num_frames')}={settings.num_frames} must be {factor}k+1 "
                f"(1, {factor + 1}, {2 * factor + 1}, ...); "
                f"nearest valid value: {nearest_frame_count(settings.num_frames, factor)}.")
    return None


def settings_problems(settings: GenerationSettings, names: Mapping[str, str] | None = None) -> list[str]:
    """Every setting outside its documented range (NaN and infinities included); ``None`` is allowed where
    the setting is optional. ``names`` maps setting names to a front end's input names."""
    names = names or {}
    return [problem for field in dataclasses.fields(settings)
            for value in [getattr(settings, field.name)] if value is not None
            for problem in [BOUNDS[field.name].problem(names.get(field.name, field.name), value)] if problem]


def check_settings(settings: GenerationSettings, geometry: ModelGeometry, *, names: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming every bad setting and its nearest valid value (ranges, then the model's
    size multiples and frame factor). Runs before any model pass. ``names``: see :func:`settings_problems`."""
    problems = settings_problems(settings, names) or [geometry_problem(settings, geometry, names)]
    if problems != [None]:
        raise ValueError(" ".join(problems))
