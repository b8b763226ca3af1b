"""MOVA latents in ComfyUI LATENT dicts (no ComfyUI import).

Video LATENTs hold raw Wan 2.1 VAE latents, as every ComfyUI LATENT does (MOVA's normalised
latents are Wan21's ``process_in`` of them), so native Wan 2.1 VAE decoders read them too. Audio
LATENTs hold MOVA's DAC latents. Both carry a ``"mova"`` entry with the video settings the decoder
needs (frames, fps, exact audio length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..mova_core.media.resample import resample
from ..mova_core.settings import ModelGeometry, GenerationSettings, check_settings, nearest_frame_count

MOVA_KEY = "mova"
AUDIO_TYPE = "mova_audio"
MISSING_KEY = "missing"
GIVEN_WAVEFORM = "given_waveform"
"""Settings entry of an audio LATENT that holds driving audio frozen: the sound itself, decoded as it is."""
"""Settings entry of an empty LATENT (MOVA Encode without that input): why it is empty and what to connect."""


def video_latent(raw: torch.Tensor, *, fps: float, frames: int, height: int, width: int) -> dict[str, Any]:
    return {"samples": raw, MOVA_KEY: {"fps": fps, "frames": frames, "height": height, "width": width}}


def audio_latent(latents: torch.Tensor, *, sample_rate: int, num_samples: int, fps: float, frames: int,
                 waveform: torch.Tensor | None = None) -> dict[str, Any]:
    """An audio LATENT; ``waveform`` ``[C, num_samples]``: the given sound these latents hold frozen."""
    settings = {"sample_rate": sample_rate, "num_samples": num_samples, "fps": fps, "frames": frames}
    if waveform is not None:
        settings[GIVEN_WAVEFORM] = waveform
    return {"samples": latents, "type": AUDIO_TYPE, MOVA_KEY: settings}


def latent_samples(latent: Any, name: str, channels: int, ndim: int) -> torch.Tensor:
    """The single-video ``samples`` tensor of a LATENT input, checked; ValueError naming the input otherwise."""
    missing = latent_settings(latent).get(MISSING_KEY) if isinstance(latent, dict) else None
    if missing:
        raise ValueError(f"{name}: {missing}")
    samples = latent.get("samples") if isinstance(latent, dict) else None
    layout = "[1, C, T, h, w]" if ndim == 5 else "[1, C, L]"
    if not isinstance(samples, torch.Tensor) or samples.ndim != ndim or samples.shape[1] != channels:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"{name}: expected a LATENT with samples {layout}, C={channels} (from MOVA Sampler), got {shape}.")
    if samples.shape[0] != 1:
        raise ValueError(f"{name}: holds a batch of {samples.shape[0]} videos; MOVA nodes take one video at a time.")
    return samples


def latent_settings(latent: dict[str, Any]) -> dict[str, Any]:
    """The video settings stored by MOVA Sampler (empty for LATENTs from elsewhere)."""
    return dict(latent.get(MOVA_KEY, {}))


@dataclass(frozen=True)
class EncodePlan:
    """What MOVA Encode encodes: ``images`` ``[F, H, W, 3]`` and/or ``waveform`` ``[C, num_samples]`` at the
    model's sample rate, fitted to one video of ``frames`` (4k+1) at ``fps``."""

    frames: int
    fps: float
    num_samples: int
    images: torch.Tensor | None
    waveform: torch.Tensor | None

    @property
    def height(self) -> int | None:
        return None if self.images is None else self.images.shape[1]

    @property
    def width(self) -> int | None:
        return None if self.images is None else self.images.shape[2]


def _image_frames(images: Any, fps: float, geometry: ModelGeometry) -> torch.Tensor:
    """IMAGE ``[F, H, W, C]`` as RGB, checked: 4k+1 frames, sizes the sampler accepts (ValueError naming ``images``)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected an IMAGE batch [frames, height, width, 3], got {shape}.")
    frames, height, width = images.shape[:3]
    try:
        check_settings(GenerationSettings(height=height, width=width, num_frames=frames, fps=fps), geometry,
                       names={"num_frames": "frames"})
    except ValueError as error:
        raise ValueError(f"images ({frames} frames of {width}x{height}): {error} "
                         "Trim the batch or resize the images to a valid value.") from None
    return images[..., :3].float()


def _audio_waveform(audio: Any, sample_rate: int) -> torch.Tensor:
    """AUDIO ``{"waveform": [1, C, n], "sample_rate"}`` -> ``[C, n]`` at ``sample_rate`` (resampled if needed)."""
    waveform = audio.get("waveform") if isinstance(audio, dict) else None
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or waveform.shape[0] != 1 or waveform.shape[-1] == 0:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"audio: expected a single AUDIO (waveform [1, channels, samples]), got {shape}.")
    return resample(waveform[0].float().cpu(), int(audio["sample_rate"]), sample_rate)


def _audio_frames(num_samples: int, sample_rate: int, fps: float, temporal_factor: int) -> int:
    """The 4k+1 frame count ``num_samples`` of audio cover at ``fps`` (ValueError naming ``audio`` otherwise)."""
    frames = max(1, round(num_samples * fps / sample_rate))
    if (frames - 1) % temporal_factor == 0:
        return frames
    nearest = nearest_frame_count(frames, temporal_factor)
    raise ValueError(
        f"audio: {num_samples / sample_rate:.3f} s at fps={fps:g} is {frames} frames, but MOVA videos have "
        f"{temporal_factor}k+1 frames; nearest valid value: {nearest} frames = {nearest / fps:.3f} s "
        f"({int(sample_rate * nearest / fps)} samples at {sample_rate} Hz). Trim or pad the audio, change fps, "
        "or connect the video's images too.")


def _fit_audio(waveform: torch.Tensor, num_samples: int, frames: int, fps: float, sample_rate: int) -> torch.Tensor:
    """``waveform`` trimmed to ``num_samples``, or zero-padded when at most one video frame short."""
    missing = num_samples - waveform.shape[1]
    if missing > sample_rate / fps:
        raise ValueError(
            f"audio: {waveform.shape[1] / sample_rate:.3f} s is shorter than the images: {frames} frames at "
            f"fps={fps:g} need {num_samples / sample_rate:.3f} s ({num_samples} samples at {sample_rate} Hz); "
            "connect the video's full audio, trim the images, or check fps.")
    return torch.nn.functional.pad(waveform[:, :num_samples], (0, max(0, missing)))


def plan_encode(images: Any, audio: Any, fps: float, *, geometry: ModelGeometry, sample_rate: int,
                num_samples_for: Callable[[int, float], int]) -> EncodePlan:
    """Check and fit MOVA Encode's inputs to one video: the images set the frame count (audio is trimmed to it),
    or else the audio's length does. ``num_samples_for(frames, fps)``: the model's audio length of a video."""
    if images is None and audio is None:
        raise ValueError("MOVA Encode needs images, audio, or both: connect the video's frames (IMAGE) and/or "
                         "its sound (AUDIO).")
    pictures = None if images is None else _image_frames(images, fps, geometry)
    waveform = None if audio is None else _audio_waveform(audio, sample_rate)
    frames = pictures.shape[0] if pictures is not None else _audio_frames(waveform.shape[1], sample_rate, fps,
                                                                           geometry.temporal_factor)
    num_samples = num_samples_for(frames, fps)
    if waveform is not None:
        waveform = _fit_audio(waveform, num_samples, frames, fps, sample_rate)
    return EncodePlan(frames=frames, fps=fps, num_samples=num_samples, images=pictures, waveform=waveform)


def empty_latent(name: str, plan: EncodePlan, *, channels: int, spatial_multiple: tuple[int, int]) -> dict[str, Any]:
    """The LATENT MOVA Encode outputs for its unconnected input: no samples, and an entry that makes MOVA
    Sampler (denoise < 1) and MOVA Decode say what to connect instead."""
    made = f"frames={plan.frames}, fps={plan.fps:g}"
    if name == "video_latent":
        samples = torch.zeros(1, channels, 0, 0, 0)
        need = (f"images to MOVA Encode ({plan.frames} frames, width and height multiples of "
                f"{spatial_multiple[1]} and {spatial_multiple[0]}), or a video_latent from a MOVA Sampler with {made}")
    else:
        samples = torch.zeros(1, channels, 0)
        need = (f"audio to MOVA Encode ({plan.frames / plan.fps:.3f} s; any sample rate), or an audio_latent from "
                f"a MOVA Sampler with width={plan.width}, "
                f"height={plan.height}, {made}")
    given = "audio" if name == "video_latent" else "images"
    message = (f"MOVA Encode got only {given}, so this LATENT is empty. MOVA Sampler with denoise < 1 needs both "
               f"video_latent and audio_latent: connect {need}.")
    return {"samples": samples, MOVA_KEY: {"fps": plan.fps, "frames": plan.frames, MISSING_KEY: message}}
