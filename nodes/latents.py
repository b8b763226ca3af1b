"""MOVA latents in ComfyUI LATENT dicts (no ComfyUI import).

Video LATENTs hold raw Wan 2.1 VAE latents, as every ComfyUI LATENT does (MOVA's normalised
latents are Wan21's ``process_in`` of them), so native Wan 2.1 VAE decoders read them too. Audio
LATENTs hold MOVA's DAC latents. Both carry a ``"mova"`` entry with the clip settings the decoder
needs (frames, fps, exact audio length).
"""

from __future__ import annotations

from typing import Any

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
        raise ValueError(f"{name}: holds a batch of {samples.shape[0]} clips; decode one clip at a time.")
    return samples


def clip_info(latent: dict[str, Any]) -> dict[str, Any]:
    """The clip settings stored by MOVA Sampler (empty for LATENTs from elsewhere)."""
    return dict(latent.get(MOVA_KEY, {}))


def seeded_noise(seed: int, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The official draw order on a CPU generator (video, then audio): a seed gives the same clip on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    video = torch.randn(video_shape, generator=generator, dtype=torch.float32)
    return video, torch.randn(audio_shape, generator=generator, dtype=torch.float32)
