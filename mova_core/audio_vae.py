"""Continuous DAC audio VAE (``audio_vae/``; MOVA's ``mova.diffusion.models.dac_vae.DAC``).

Waveform ``[B, 1, samples]`` at ``sample_rate`` <-> latents ``[B, latent_dim, samples / hop_length]``.
Encoder: conv -> strided blocks (3 dilated residual units + Snake + strided conv) -> Snake -> conv,
then ``quant_conv`` gives mean and log-variance. Decoder: ``post_quant_conv`` -> conv ->
transposed-conv blocks -> Snake -> conv -> tanh. No latent scaling is applied anywhere.

Checkpoints may store fused conv weights (``weight``, the release) or legacy weight-norm pairs
(``weight_g``/``weight_v``); both load, see :func:`fuse_weight_norm`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import DACConfig
from .loading import CheckpointError, ComponentPath, KeyView, LazyStateDict, load_network
from .ops import cast_like

SNAKE_EPS = 1e-9
LOGVAR_RANGE = (-30.0, 20.0)
RESIDUAL_DILATIONS = (1, 3, 9)


class Snake(nn.Module):
    """``x + sin²(αx) / (α + 1e-9)`` with a learned ``α`` per channel (shape ``[1, C, 1]``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = cast_like(self.alpha, x)
        return x + (alpha + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv k7 ("same" padding) -> Snake -> conv k1, added to the input."""

    def __init__(self, channels: int, dilation: int, operations: Any):
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            operations.Conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake(channels),
            operations.Conv1d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def residual_units(channels: int, operations: Any) -> list[nn.Module]:
    return [ResidualUnit(channels, dilation, operations) for dilation in RESIDUAL_DILATIONS]


class EncoderBlock(nn.Module):
    """Residual units at ``in_channels``, then Snake and a conv that downsamples by ``stride``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, operations: Any):
        super().__init__()
        self.block = nn.Sequential(
            *residual_units(in_channels, operations),
            Snake(in_channels),
            operations.Conv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                              padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv that upsamples by exactly ``stride``, then residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, operations: Any):
        super().__init__()
        self.block = nn.Sequential(
            Snake(in_channels),
            operations.ConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                       padding=math.ceil(stride / 2), output_padding=stride % 2),
            *residual_units(out_channels, operations),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """Waveform ``[B, 1, n]`` -> features ``[B, latent_dim, n / hop]``; the width doubles per stage."""

    def __init__(self, config: DACConfig, operations: Any):
        super().__init__()
        width = config.encoder_dim
        layers: list[nn.Module] = [operations.Conv1d(1, width, kernel_size=7, padding=3)]
        for stride in config.encoder_rates:
            layers.append(EncoderBlock(width, 2 * width, stride, operations))
            width *= 2
        layers += [Snake(width), operations.Conv1d(width, config.latent_dim, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """Latents ``[B, latent_dim, L]`` -> waveform ``[B, 1, L * hop]`` in [-1, 1]; the width halves per stage."""

    def __init__(self, config: DACConfig, operations: Any):
        super().__init__()
        width = config.decoder_dim
        layers: list[nn.Module] = [operations.Conv1d(config.latent_dim, width, kernel_size=7, padding=3)]
        for stride in config.decoder_rates:
            layers.append(DecoderBlock(width, width // 2, stride, operations))
            width //= 2
        layers += [Snake(width), operations.Conv1d(width, 1, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DAC(nn.Module):
    """The continuous DAC. Key names match the official checkpoint (``encoder.block.*``,
    ``quant_conv``, ``post_quant_conv``, ``decoder.model.*``).

    Weights may be stored in a lower precision than the input: with casting operations
    (:class:`mova_core.ops.CastingOps`) the convs run in the input's dtype, which is how the
    official pipeline decodes (fp32 compute on bf16 weights).
    """

    def __init__(self, config: DACConfig, operations: Any = nn):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, operations)
        self.quant_conv = operations.Conv1d(config.latent_dim, 2 * config.latent_dim, kernel_size=1)
        self.post_quant_conv = operations.Conv1d(config.latent_dim, config.latent_dim, kernel_size=1)
        self.decoder = Decoder(config, operations)
        self.compute_device: torch.device | None = None  # None: where the weights are (see VideoVAE)

    @property
    def device(self) -> torch.device:
        """Where ``encode``/``decode`` inputs go: ``compute_device`` if set, else the weights' device."""
        return self.compute_device or self.post_quant_conv.weight.device

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame."""
        return self.config.hop_length

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim  # type: ignore[return-value]  # resolved in DACConfig.__post_init__

    def pad_to_hop(self, audio: torch.Tensor) -> torch.Tensor:
        """Right-pad with zeros to a multiple of ``hop_length`` (the official ``preprocess``)."""
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"audio must be mono [batch, 1, samples], got shape {tuple(audio.shape)}; "
                             "mix down to one channel and add the channel axis.")
        return F.pad(audio, (0, -audio.shape[-1] % self.hop_length))

    def encode_moments(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``audio [B, 1, n]`` -> ``(mean, logvar)``, each ``[B, latent_dim, ceil(n / hop)]``;
        logvar is clamped to [-30, 20] as in the official Gaussian posterior."""
        moments = self.quant_conv(self.encoder(self.pad_to_hop(audio)))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, 1, n]`` -> posterior mean ``[B, latent_dim, ceil(n / hop)]`` (what MOVA uses)."""
        return self.encode_moments(audio)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents [B, latent_dim, L]`` -> waveform ``[B, 1, L * hop_length]`` in [-1, 1] (not trimmed)."""
        if latents.ndim != 3 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be [batch, {self.latent_dim}, frames], got shape {tuple(latents.shape)}.")
        return self.decoder(self.post_quant_conv(latents))


def fuse_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Legacy ``weight_norm(dim=0)``: ``w = g · v / ‖v‖`` with the norm over every dim but 0.

    For ``ConvTranspose1d`` (weight ``[in, out, k]``) dim 0 is the input channel. Computed in fp32.
    """
    v = v.float()
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
    return v * (g.float() / norm)


def fused_weight_norm_view(weights: LazyStateDict) -> Mapping[str, torch.Tensor]:
    """The checkpoint with every ``x.weight_g`` + ``x.weight_v`` pair seen as ``x.weight``
    (fused on access); checkpoints with fused weights pass through unchanged."""
    sources = {key: (key,) for key in weights if not key.endswith((".weight_g", ".weight_v"))}
    for key in weights:
        if key.endswith(".weight_g"):
            prefix = key[: -len("weight_g")]
            if prefix + "weight_v" not in weights:
                raise CheckpointError(f"{weights.source(key)}: {key} has no {prefix}weight_v.")
            sources[prefix + "weight"] = (key, prefix + "weight_v")
    return KeyView(weights, sources, fuse_weight_norm)


def load_audio_vae(
    path: ComponentPath,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations: Any = None,
    config: DACConfig | None = None,
) -> DAC:
    """Load ``audio_vae/`` (``config.json`` + safetensors, fused or weight-norm keys) as a :class:`DAC`."""
    return load_network(DAC, DACConfig, path, config=config, dtype=dtype, device=device, operations=operations,
                        convert=fused_weight_norm_view)
