"""MOVA's audio+video LATENT for ComfyUI's native samplers (no ComfyUI import).

ComfyUI 0.3.64 samples one tensor per LATENT, so the two modalities travel packed in one
``[B, 1, N]`` tensor: the video latents ``[B, z, T, h, w]`` flattened, then the audio latents
``[B, Ca, L]`` flattened. Newer ComfyUI (2026) has nested AV latents (``comfy.nested_tensor``): there the
LATENT holds both streams nested and the sampler packs them the same way, so the model sees the same
``[B, 1, N]`` tensor either way. Both hold the space the model samples in: MOVA's *normalised* video latents
(Wan 2.1's ``process_in`` of the raw ones) and the audio latents as they are, so the latent format is the
identity.
The LATENT's ``"mova_av"`` entry says how to unpack it and what clip it holds; MOVA Split AV Latent
turns it back into a raw Wan 2.1 video LATENT and an audio LATENT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

AV_KEY = "mova_av"


@dataclass(frozen=True)
class AVLayout:
    """Where each modality lies in a packed AV tensor: ``video_shape`` ``(z, T, h, w)``, ``audio_shape`` ``(Ca, L)``."""

    video_shape: tuple[int, int, int, int]
    audio_shape: tuple[int, int]

    @property
    def video_size(self) -> int:
        return math.prod(self.video_shape)

    @property
    def size(self) -> int:
        return self.video_size + math.prod(self.audio_shape)

    def pack(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[B, z, T, h, w]`` and ``[B, Ca, L]`` -> ``[B, 1, N]`` (in the video's dtype)."""
        batch = video.shape[0]
        if tuple(video.shape[1:]) != self.video_shape or tuple(audio.shape[1:]) != self.audio_shape:
            raise ValueError(f"pack: expected video [B, {self.video_shape}] and audio [B, {self.audio_shape}], got "
                             f"{tuple(video.shape)} and {tuple(audio.shape)}.")
        return torch.cat([video.reshape(batch, -1), audio.to(video).reshape(batch, -1)], dim=1).unsqueeze(1)

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 1, N]`` (or ``[B, N]``) -> views ``[B, z, T, h, w]`` and ``[B, Ca, L]``."""
        flat = packed.reshape(packed.shape[0], -1)
        if flat.shape[1] != self.size:
            raise ValueError(f"this AV latent holds {flat.shape[1]} values per video but the layout needs {self.size} "
                             f"(video {self.video_shape}, audio {self.audio_shape}).")
        video, audio = flat.split([self.video_size, self.size - self.video_size], dim=1)
        return video.reshape(-1, *self.video_shape), audio.reshape(-1, *self.audio_shape)

    def samples(self, video: torch.Tensor, audio: torch.Tensor, nested: Callable[[tuple], Any] | None = None) -> Any:
        """LATENT samples (or a noise mask, or noise) holding ``video`` and ``audio``: ComfyUI's nested AV tensor
        where its samplers take one (``nested``: its class), else the packed tensor."""
        return self.pack(video, audio) if nested is None else nested((video, audio.to(video)))

    def streams(self, samples: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The video ``[B, z, T, h, w]`` and audio ``[B, Ca, L]`` of packed or nested ``samples``."""
        if is_nested(samples):
            video, audio = samples.unbind()
            return video, audio
        return self.unpack(samples)

    def modality_values(self, video: float, audio: float, nested: Callable[[tuple], Any] | None = None) -> Any:
        """A noise mask: ``video`` over the video, ``audio`` over the audio (0 = kept)."""
        return self.samples(torch.full((1, *self.video_shape), float(video)),
                            torch.full((1, *self.audio_shape), float(audio)), nested)

    @classmethod
    def of(cls, condition_shape: tuple[int, ...], packed_size: int, video_channels: int,
           audio_channels: int) -> "AVLayout":
        """The layout of a packed tensor of ``packed_size`` values per video whose I2V condition has
        ``condition_shape`` ``[B, t + z, T, h, w]`` (it fixes the video grid; the rest is audio)."""
        video_shape = (video_channels, *condition_shape[-3:])
        audio_size = packed_size - math.prod(video_shape)
        if audio_size <= 0 or audio_size % audio_channels:
            raise ValueError(
                f"the AV latent ({packed_size} values) does not fit the conditioning's video grid "
                f"{tuple(condition_shape[-3:])} with {audio_channels}-channel audio: connect the positive, negative and "
                "latent outputs of the same MOVA AV Latent node to the sampler.")
        return cls(video_shape, (audio_channels, audio_size // audio_channels))  # type: ignore[arg-type]


def is_nested(samples: Any) -> bool:
    """Whether ``samples`` is ComfyUI's nested tensor (a plain tensor's ``is_nested`` is False)."""
    return getattr(samples, "is_nested", False) is True


def av_latent(packed: torch.Tensor, layout: AVLayout, clip: dict[str, Any],
              noise_mask: torch.Tensor | None = None) -> dict[str, Any]:
    """An AV LATENT: ``packed`` samples, the layout and the clip's settings (``fps``, ``frames``, ``height``,
    ``width``, ``sample_rate``, ``num_samples``, optionally ``given_waveform``), and a noise mask when part is kept."""
    latent = {"samples": packed, AV_KEY: {"video_shape": layout.video_shape, "audio_shape": layout.audio_shape,
                                          **clip}}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask
    return latent


def layout_of(latent: Any, name: str) -> AVLayout:
    """The layout of an AV LATENT input named ``name`` (ValueError naming it and the fix otherwise)."""
    entry = latent.get(AV_KEY) if isinstance(latent, dict) else None
    if entry is None:
        raise ValueError(f"{name}: expected an AV LATENT from MOVA AV Latent (video and audio packed together), got "
                         f"{'a LATENT without MOVA audio' if isinstance(latent, dict) else type(latent).__name__}. "
                         "Build the latent with MOVA AV Latent.")
    layout = AVLayout(tuple(entry["video_shape"]), tuple(entry["audio_shape"]))  # type: ignore[arg-type]
    samples = latent.get("samples")
    if is_nested(samples):
        shapes = tuple(tuple(stream.shape[1:]) for stream in samples.unbind())
        if shapes == (layout.video_shape, layout.audio_shape):
            return layout
        shown, expected = shapes, f"video {layout.video_shape} and audio {layout.audio_shape}"
    elif isinstance(samples, torch.Tensor) and samples.ndim == 3 and samples.shape[1:] == (1, layout.size):
        return layout
    else:
        shown = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        expected = f"[B, 1, {layout.size}]"
    raise ValueError(f"{name}: samples {shown} do not match its MOVA layout {expected}; was the latent changed by a "
                     "node made for images? Use the MOVA AV Latent output as it is.")


def clip_settings(latent: dict[str, Any]) -> dict[str, Any]:
    """The clip settings an AV LATENT carries (everything in its ``"mova_av"`` entry but the layout)."""
    return {key: value for key, value in latent[AV_KEY].items() if key not in ("video_shape", "audio_shape")}
