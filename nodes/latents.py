"""MOVA latents in ComfyUI LATENT dicts (no ComfyUI import).

Video LATENTs hold raw Wan 2.1 VAE latents, as every ComfyUI LATENT does (MOVA's normalised
latents are Wan21's ``process_in`` of them), so native Wan 2.1 VAE decoders read them too. Audio
LATENTs hold MOVA's DAC latents. Both carry a ``"mova"`` entry with the clip settings the decoder
needs (frames, fps, exact audio length).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

MOVA_KEY = "mova"
AUDIO_TYPE = "mova_audio"


def video_latent(raw: torch.Tensor, *, fps: float, frames: int, height: int, width: int) -> dict[str, Any]:
    return {"samples": raw, MOVA_KEY: {"fps": fps, "frames": frames, "height": height, "width": width}}


def audio_latent(latents: torch.Tensor, *, sample_rate: int, num_samples: int, fps: float, frames: int) -> dict[str, Any]:
    return {"samples": latents, "type": AUDIO_TYPE,
            MOVA_KEY: {"sample_rate": sample_rate, "num_samples": num_samples, "fps": fps, "frames": frames}}


def latent_samples(latent: Any, name: str, channels: int, ndim: int) -> torch.Tensor:
    """The single-clip ``samples`` tensor of a LATENT input, checked; ValueError naming the input otherwise."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    layout = "[1, C, T, h, w]" if ndim == 5 else "[1, C, L]"
    if not isinstance(samples, torch.Tensor) or samples.ndim != ndim or samples.shape[1] != channels:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"{name}: expected a LATENT with samples {layout}, C={channels} (from MOVA Sampler), got {shape}.")
    if samples.shape[0] != 1:
        raise ValueError(f"{name}: holds a batch of {samples.shape[0]} clips; MOVA nodes take one clip at a time.")
    return samples


def clip_info(latent: dict[str, Any]) -> dict[str, Any]:
    """The clip settings stored by MOVA Sampler (empty for LATENTs from elsewhere)."""
    return dict(latent.get(MOVA_KEY, {}))


def seeded_noise(seed: int, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The official draw order on a CPU generator (video, then audio): a seed gives the same clip on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    video = torch.randn(video_shape, generator=generator, dtype=torch.float32)
    return video, torch.randn(audio_shape, generator=generator, dtype=torch.float32)


def _made_for(latent: dict[str, Any], names: tuple[str, ...]) -> str:
    """`` (it was made for width=640, ...)`` from the clip settings a MOVA LATENT carries, or ``""``."""
    info = clip_info(latent)
    made = ", ".join(f"{name}={info[name]:g}" for name in names if name in info)
    return f" (it was made for {made})" if made else ""


def init_latents(video: Any, audio: Any, denoise: float, *, video_shape: tuple[int, ...],
                 audio_shape: tuple[int, ...], clip: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The raw video and the audio latents to re-generate from, checked against the clip the sampler's
    widgets ``clip`` (width, height, frames, fps) describe; None when ``denoise`` is 1 (sampling starts
    from noise, so connected latents are not needed). ValueError naming the input otherwise."""
    if denoise >= 1.0:
        return None
    missing = [name for name, latent in (("video_latent", video), ("audio_latent", audio)) if latent is None]
    if missing:
        raise ValueError(f"denoise={denoise:g} re-generates given latents, but {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not connected: connect both video_latent and "
                         "audio_latent (for example a MOVA Sampler's outputs), or set denoise to 1.0 to generate "
                         "from noise.")
    raw_video = latent_samples(video, "video_latent", video_shape[1], len(video_shape))
    if tuple(raw_video.shape) != video_shape:
        raise ValueError(
            f"video_latent: latents of shape {tuple(raw_video.shape)} do not fit width={clip['width']}, "
            f"height={clip['height']}, frames={clip['frames']} (they need {video_shape})"
            f"{_made_for(video, ('width', 'height', 'frames'))}; set width, height and frames to the clip's.")
    audio_samples = latent_samples(audio, "audio_latent", audio_shape[1], len(audio_shape))
    if tuple(audio_samples.shape) != audio_shape:
        raise ValueError(
            f"audio_latent: {audio_samples.shape[-1]} latent frames do not fit frames={clip['frames']}, "
            f"fps={clip['fps']:g} (they need {audio_shape[-1]}){_made_for(audio, ('frames', 'fps'))}; "
            "set frames and fps to the clip's.")
    return raw_video, audio_samples
