"""Which networks sit on the compute device while a generation stage runs.

The stages of :class:`~mova_core.pipeline.MovaPipeline` say what they are about to run through a
:class:`Residency`; the standalone pipeline answers with :class:`PlacedResidency` (everything
already on the device, or :class:`~mova_core.offload.ModelPlacement` moving modules in turn), the
ComfyUI nodes with ComfyUI's ``load_models_gpu`` (``nodes/comfy_model.py``).
"""

from __future__ import annotations

from typing import Protocol

import torch

from .offload import ModelPlacement
from .sampler import AUDIO_TOWER_MODULES


class Residency(Protocol):
    """Brings the networks a stage needs onto :attr:`device` (and may send others away)."""

    @property
    def device(self) -> torch.device:
        """Where the denoiser computes: noise, latents and text embeddings are moved there."""

    def text_encoder(self) -> None:
        """umT5 is about to encode prompts."""

    def video_vae(self, height: int, width: int) -> None:
        """The video VAE is about to encode or decode frames of ``height`` x ``width`` pixels (one tile)."""

    def audio_vae(self) -> None:
        """The audio VAE is about to encode or decode."""

    def denoiser(self, expert: str, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> None:
        """``expert`` with the audio DiT and the Bridge are about to run on latents of these shapes."""


class PlacedResidency:
    """The standalone answer: nothing to do without offloading, else :class:`ModelPlacement` turns."""

    def __init__(self, device: torch.device, placement: ModelPlacement | None = None):
        self._device = device
        self.placement = placement

    @property
    def device(self) -> torch.device:
        return self._device

    def _use(self, *names: str) -> None:
        if self.placement is not None:
            self.placement.use(*names)

    def text_encoder(self) -> None:
        self._use("text_encoder")

    def video_vae(self, height: int, width: int) -> None:
        self._use("video_vae")

    def audio_vae(self) -> None:
        self._use("audio_vae")

    def denoiser(self, expert: str, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> None:
        self._use(expert, *AUDIO_TOWER_MODULES)
