"""Wan 2.1 video VAE (diffusers ``AutoencoderKLWan`` key layout), as MOVA uses it.

Video ``[B, 3, F, H, W]`` in [-1, 1] <-> latents ``[B, z, T, H/8, W/8]`` with ``T = (F - 1)/4 + 1``.
Every temporal convolution is causal: it sees the current and the two previous frames, zero
padded before frame 0. Like the reference, encoding runs frame 0 alone and then chunks of 4 frames,
decoding runs one latent frame at a time; each causal layer keeps the last frames it saw in a
:class:`CausalCache`, so chunked results equal a whole-sequence pass while activations stay
bounded by one chunk. Two layers treat the first chunk specially (also like the reference):

* encoder temporal downsample (``time_conv``, kernel 3, stride 2, no padding): frame 0 passes
  through unchanged; later chunks are convolved together with the last frame of the chunk before;
* decoder temporal upsample (``time_conv`` to 2x channels, split into 2 frames): the first latent
  frame passes through as one frame; later frames are causally convolved among themselves (the
  first latent frame is never part of their context; zero padding takes its place).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import VideoVAEConfig
from .loading import ComponentPath, PackedComponent, component_config, load_component
from .ops import cast_like, operations_for

LOGVAR_RANGE = (-30.0, 20.0)  # clamp of diffusers' DiagonalGaussianDistribution


class LatentMoments(NamedTuple):
    """Posterior of the encoder: ``mean`` (= mode, what MOVA uses) and ``logvar`` clamped to [-30, 20]."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)


class CausalCache:
    """The trailing input frames every causal layer saw in earlier chunks of one encode/decode call."""

    def __init__(self) -> None:
        self._tails: dict[nn.Module, torch.Tensor] = {}

    def __contains__(self, layer: nn.Module) -> bool:
        return layer in self._tails

    def get(self, layer: nn.Module) -> torch.Tensor | None:
        return self._tails.get(layer)

    def put(self, layer: nn.Module, tail: torch.Tensor) -> None:
        self._tails[layer] = tail


def causal_conv(conv: nn.Conv3d, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """``conv`` applied causally in time: the ``k_t - 1`` frames before ``x`` come from the cache,
    or are zeros before the start of the video. Spatial padding is the conv's own."""
    context = conv.kernel_size[0] - 1
    if context == 0:
        return conv(x)
    previous = cache.get(conv)
    if previous is not None:
        x = torch.cat([previous, x], dim=2)
        context -= previous.shape[2]
    cache.put(conv, x[:, :, -(conv.kernel_size[0] - 1):].clone())
    return conv(F.pad(x, (0, 0, 0, 0, context, 0)) if context else x)


class ChannelRMSNorm(nn.Module):
    """``x / ||x||_channels * sqrt(C) * gamma`` (diffusers ``WanRMS_norm``, F.normalize with eps 1e-12).

    Half-precision inputs are normalised in float32, as in the reference."""

    def __init__(self, dim: int, spatial_dims: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        precise = x.float() if x.dtype.itemsize < 4 else x
        return F.normalize(precise, dim=1).to(x.dtype) * self.scale * cast_like(self.gamma, x)


def conv3x3x3(ops: Any, in_dim: int, out_dim: int) -> nn.Conv3d:
    """3x3x3 conv with "same" spatial padding; the causal time padding is added by :func:`causal_conv`."""
    return ops.Conv3d(in_dim, out_dim, 3, padding=(0, 1, 1))


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, ops: Any):
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_dim, spatial_dims=3)
        self.conv1 = conv3x3x3(ops, in_dim, out_dim)
        self.norm2 = ChannelRMSNorm(out_dim, spatial_dims=3)
        self.conv2 = conv3x3x3(ops, out_dim, out_dim)
        self.conv_shortcut = ops.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        x = causal_conv(self.conv1, F.silu(self.norm1(x)), cache)
        x = causal_conv(self.conv2, F.silu(self.norm2(x)), cache)
        return x + shortcut


def per_frame(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D ``layer`` to every frame of ``x`` [B, C, T, H, W]."""
    b, c, t, h, w = x.shape
    y = layer(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
    return y.view(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)


class FrameAttention(nn.Module):
    """Single-head self-attention over the pixels of each frame, with a residual."""

    def __init__(self, dim: int, ops: Any):
        super().__init__()
        self.norm = ChannelRMSNorm(dim, spatial_dims=2)
        self.to_qkv = ops.Conv2d(dim, dim * 3, 1)
        self.proj = ops.Conv2d(dim, dim, 1)

    def attend(self, frames: torch.Tensor) -> torch.Tensor:
        n, c, h, w = frames.shape
        qkv = self.to_qkv(self.norm(frames)).reshape(n, 1, c * 3, h * w).transpose(2, 3).contiguous()
        out = F.scaled_dot_product_attention(*qkv.chunk(3, dim=-1))
        return self.proj(out.squeeze(1).transpose(1, 2).reshape(n, c, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(self.attend, x) + x


class MidBlock(nn.Module):
    def __init__(self, dim: int, ops: Any):
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, ops), ResidualBlock(dim, dim, ops)])
        self.attentions = nn.ModuleList([FrameAttention(dim, ops)])

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class Upsample2x(nn.Module):
    """Nearest 2x spatial upsampling of [N, C, H, W] (no weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest-exact")


class Downsample(nn.Module):
    """Spatial /2 (pad right/bottom by 1, 3x3 stride-2 conv per frame), optionally temporal /2."""

    def __init__(self, dim: int, temporal: bool, ops: Any):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), ops.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = ops.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        x = per_frame(self.resample, x)
        if self.time_conv is None:
            return x
        previous = cache.get(self.time_conv)
        cache.put(self.time_conv, x[:, :, -1:].clone())
        if previous is None:  # first chunk (frame 0): kept as is
            return x
        return self.time_conv(torch.cat([previous, x], dim=2))


class Upsample(nn.Module):
    """Optionally temporal x2 (causal conv to 2x channels, split into 2 frames), then spatial x2
    and a 3x3 conv to ``dim // 2`` channels."""

    def __init__(self, dim: int, temporal: bool, ops: Any):
        super().__init__()
        self.resample = nn.Sequential(Upsample2x(), ops.Conv2d(dim, dim // 2, 3, padding=1))
        self.time_conv = ops.Conv3d(dim, dim * 2, (3, 1, 1)) if temporal else None

    def double_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self.time_conv not in cache:  # first latent frame: one output frame, not in later context
            cache.put(self.time_conv, x[:, :, :0])
            return x
        b, c, t, h, w = x.shape
        pairs = causal_conv(self.time_conv, x, cache).view(b, 2, c, t, h, w)
        return pairs.permute(0, 2, 3, 1, 4, 5).reshape(b, c, t * 2, h, w)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self.time_conv is not None:
            x = self.double_frames(x, cache)
        return per_frame(self.resample, x)


class UpBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, upsample: str | None, ops: Any):
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList(ResidualBlock(i, o, ops) for i, o in zip(dims[:-1], dims[1:]))
        self.upsamplers = nn.ModuleList([Upsample(out_dim, upsample == "3d", ops)] if upsample else [])

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        for layer in (*self.resnets, *self.upsamplers):
            x = layer(x, cache)
        return x


class Encoder(nn.Module):
    def __init__(self, config: VideoVAEConfig, ops: Any):
        super().__init__()
        dims = [config.base_dim * m for m in (1, *config.dim_mult)]
        self.conv_in = conv3x3x3(ops, config.in_channels, dims[0])
        blocks: list[nn.Module] = []
        for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(config.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, ops))
                in_dim = out_dim
            if stage < len(config.temperal_downsample):
                blocks.append(Downsample(out_dim, bool(config.temperal_downsample[stage]), ops))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1], ops)
        self.norm_out = ChannelRMSNorm(dims[-1], spatial_dims=3)
        self.conv_out = conv3x3x3(ops, dims[-1], config.z_dim * 2)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        x = causal_conv(self.conv_in, x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return causal_conv(self.conv_out, F.silu(self.norm_out(x)), cache)


class Decoder(nn.Module):
    def __init__(self, config: VideoVAEConfig, ops: Any):
        super().__init__()
        base = config.decoder_base_dim or config.base_dim
        mults = config.dim_mult
        dims = [base * m for m in (mults[-1], *mults[::-1])]
        temporal_up = config.temperal_downsample[::-1]
        self.conv_in = conv3x3x3(ops, config.z_dim, dims[0])
        self.mid_block = MidBlock(dims[0], ops)
        blocks = []
        for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            in_dim = in_dim // 2 if stage > 0 else in_dim  # the previous upsampler halved the channels
            upsample = None if stage == len(temporal_up) else ("3d" if temporal_up[stage] else "2d")
            blocks.append(UpBlock(in_dim, out_dim, config.num_res_blocks, upsample, ops))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = ChannelRMSNorm(dims[-1], spatial_dims=3)
        self.conv_out = conv3x3x3(ops, dims[-1], config.out_channels)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        x = self.mid_block(causal_conv(self.conv_in, x, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return causal_conv(self.conv_out, F.silu(self.norm_out(x)), cache)


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size ``tile`` covering ``length`` with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _tile_ramps(starts: list[int], tile: int, length: int, scale: int) -> list[torch.Tensor]:
    """Per tile a 1-D blending weight in output pixels: a linear ramp up across the overlap with the
    previous tile and down across the overlap with the next one (complementary between the two
    tiles), 1 elsewhere. The caller divides by the summed weights."""
    ramps = []
    for i, start in enumerate(starts):
        pixels = torch.arange(min(tile, length - start) * scale) + 0.5
        ramp = torch.ones(len(pixels))
        if i > 0:
            shared = (starts[i - 1] + tile - start) * scale
            ramp = torch.minimum(ramp, pixels / shared)
        if i + 1 < len(starts):
            shared = (start + tile - starts[i + 1]) * scale
            ramp = torch.minimum(ramp, (len(pixels) - pixels) / shared)
        ramps.append(ramp)
    return ramps


class VideoVAE(nn.Module):
    """Wan 2.1 video VAE. Layers come from ``operations`` (default ``torch.nn``).

    ``compute_dtype``: dtype that ``encode``/``decode`` cast their input to (default: the dtype of
    the stored weights, :attr:`dtype`). Outputs come back in that dtype. ``compute_device`` (attribute,
    default None = where the weights are): the device they compute on, for callers whose casting
    operations stream weights kept elsewhere (ComfyUI's low-VRAM modes).
    """

    def __init__(self, config: VideoVAEConfig, operations: Any = nn, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        self.compute_device: torch.device | None = None
        z = config.z_dim
        self.encoder = Encoder(config, operations)
        self.quant_conv = operations.Conv3d(z * 2, z * 2, 1)
        self.post_quant_conv = operations.Conv3d(z, z, 1)
        self.decoder = Decoder(config, operations)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.compute_device or self.post_quant_conv.weight.device

    # ------------------------------------------------------------------ encode

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Posterior mean (= mode) ``[B, z, T, h, w]`` of ``video`` ``[B, C, F, H, W]`` in [-1, 1]."""
        return self.encode_moments(video).mean

    def encode_moments(self, video: torch.Tensor) -> LatentMoments:
        """Posterior mean and clamped log-variance of ``video`` ``[B, C, F, H, W]`` in [-1, 1]."""
        self._check_video(video, "video")
        self.config.latent_shape(*video.shape[2:])
        return self.encode_chunks(self.frame_chunks(video))

    def frame_chunks(self, video: torch.Tensor) -> Iterator[torch.Tensor]:
        """The reference's encoder chunks of ``video`` [B, C, F, ...]: frame 0, then groups of ``temporal_factor``."""
        yield video[:, :, :1]
        for start in range(1, video.shape[2], self.config.temporal_factor):
            yield video[:, :, start:start + self.config.temporal_factor]

    @torch.no_grad()
    def encode_chunks(self, chunks: Iterable[torch.Tensor]) -> LatentMoments:
        """Encode a video given as consecutive chunks: frame 0 alone, then chunks of
        ``temporal_factor`` frames (the reference's chunking). Lets callers stream frames (for
        example zero frames) without materialising the whole video."""
        cache = CausalCache()
        latents = []
        for index, chunk in enumerate(chunks):
            what = f"video chunk {index}"
            self._check_video(chunk, what)
            expected = 1 if index == 0 else self.config.temporal_factor
            if chunk.shape[2] != expected:
                raise ValueError(f"{what}: expected {expected} frame(s), got {chunk.shape[2]}.")
            self.config.latent_shape(1, *chunk.shape[3:])
            latents.append(self.encoder(chunk.to(device=self.device, dtype=self.dtype), cache))
        if not latents:
            raise ValueError("video: no frames to encode.")
        mean, logvar = self.quant_conv(torch.cat(latents, dim=2)).chunk(2, dim=1)
        return LatentMoments(mean, logvar.clamp(*LOGVAR_RANGE))

    def _check_video(self, video: torch.Tensor, what: str) -> None:
        if video.ndim != 5 or video.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{what}: expected [B, {self.config.in_channels}, F, H, W] in [-1, 1], got shape {tuple(video.shape)}."
            )

    # ------------------------------------------------------------------ decode

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, tile_size: int | None = None, tile_overlap: int = 8) -> torch.Tensor:
        """Video ``[B, out_channels, 1 + 4(T-1), 8h, 8w]`` clamped to [-1, 1] from ``latents`` ``[B, z, T, h, w]``.

        The latents are decoded one latent frame at a time with the causal cache, as in the
        reference (the reference algorithm when ``tile_size`` is None).

        ``tile_size`` (latent pixels) bounds memory further: the latents are cut into overlapping
        ``tile_size x tile_size`` spatial tiles (``tile_overlap`` latent pixels shared between
        neighbours, 8x that in output pixels), each decoded alone, and blended with complementary
        linear ramps across each overlap. Peak activation memory then scales with the tile area
        instead of the frame area. This is NOT numerically identical to the full decode: each tile
        sees zero padding at its borders instead of its neighbours' pixels, and the mid-block
        attention only attends within the tile, so every pixel may change, most near the seams.
        Without the attention, pixels farther than the decoder's receptive radius (~17 latent
        pixels) from every tile border are exact. The size of the difference depends on the
        weights: with random test weights (a worst case, no spatial smoothness), 24-latent tiles
        overlapping by 16 on a 32x32 latent frame differ by up to 0.3-0.7 and 0.01-0.03 on average
        (output range [-1, 1]); ``tests/test_video_vae.py`` measures it. Trained weights were not
        available here. With ``tile_size`` >= both latent sides the result is the untiled decode
        exactly.
        """
        if latents.ndim != 5 or latents.shape[1] != self.config.z_dim:
            raise ValueError(f"latents: expected [B, {self.config.z_dim}, T, h, w], got shape {tuple(latents.shape)}.")
        latents = latents.to(device=self.device, dtype=self.dtype)
        if tile_size is None:
            return self._decode_frames(latents).clamp_(-1.0, 1.0)
        if tile_size < 1 or not 0 <= tile_overlap < tile_size:
            raise ValueError(f"tile_size={tile_size}, tile_overlap={tile_overlap}: need tile_size >= 1 and 0 <= tile_overlap < tile_size.")
        return self._decode_tiled(latents, tile_size, tile_overlap).clamp_(-1.0, 1.0)

    def _decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """Unclamped decode, one latent frame at a time, into a preallocated output."""
        x = self.post_quant_conv(latents)
        cache = CausalCache()
        first = self.decoder(x[:, :, :1], cache)
        total = 1 + (x.shape[2] - 1) * self.config.temporal_factor
        out = first.new_empty(*first.shape[:2], total, *first.shape[3:])
        out[:, :, :1] = first
        for index in range(1, x.shape[2]):
            start = 1 + (index - 1) * self.config.temporal_factor
            out[:, :, start:start + self.config.temporal_factor] = self.decoder(x[:, :, index:index + 1], cache)
        return out

    def _decode_tiled(self, latents: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
        scale = self.config.spatial_factor
        height, width = latents.shape[-2:]
        rows, cols = _tile_starts(height, tile, overlap), _tile_starts(width, tile, overlap)
        row_ramps, col_ramps = _tile_ramps(rows, tile, height, scale), _tile_ramps(cols, tile, width, scale)
        out: torch.Tensor | None = None
        total_weight = torch.zeros(height * scale, width * scale)
        for top, row_ramp in zip(rows, row_ramps):
            for left, col_ramp in zip(cols, col_ramps):
                frames = self._decode_frames(latents[..., top:top + tile, left:left + tile])
                if out is None:
                    out = frames.new_zeros(*frames.shape[:3], height * scale, width * scale)
                weight = row_ramp[:, None] * col_ramp[None, :]
                window = (slice(top * scale, top * scale + weight.shape[0]), slice(left * scale, left * scale + weight.shape[1]))
                out[(..., *window)] += frames * weight.to(frames)
                total_weight[window] += weight
        assert out is not None
        return out.div_(total_weight.to(out))

    # ------------------------------------------------------------------ latent statistics

    def _channel_stats(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, self.config.z_dim, 1, 1, 1)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """``(z - latents_mean) * (1 / latents_std)`` per channel (MOVA ``normalize_video_latents``)."""
        inv_std = 1.0 / self._channel_stats(self.config.latents_std, latents)
        return (latents - self._channel_stats(self.config.latents_mean, latents)) * inv_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """``z * latents_std + latents_mean`` per channel (MOVA ``denormalize_video_latents``)."""
        return latents * self._channel_stats(self.config.latents_std, latents) + self._channel_stats(self.config.latents_mean, latents)


def frames_from_pixels(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Decoded video ``[1, 3, F, H, W]`` in [-1, 1] -> float32 frames ``[F, H, W, 3]`` in 0..1 on ``device``
    (ComfyUI's IMAGE layout). Moved first, in the decode dtype, then converted in place: one float32 copy
    (which may be ``pixels``' own memory when no move or conversion is needed)."""
    frames = pixels[0].permute(1, 2, 3, 0).to(device).float()
    return frames.mul_(0.5).add_(0.5).clamp_(0, 1)


def load_video_vae(
    path: ComponentPath,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations: ModuleType | Any | None = None,
    config: VideoVAEConfig | None = None,
    compute_dtype: torch.dtype | None = None,
) -> VideoVAE:
    """Load a ``video_vae/`` folder (``config.json`` + safetensors in diffusers key layout), a packed
    component, or a single ``.safetensors`` file (then ``config`` or the Wan 2.1 defaults describe it)."""
    if config is None:
        single_file = not isinstance(path, PackedComponent) and Path(path).is_file()
        config = VideoVAEConfig() if single_file else component_config(path, None, VideoVAEConfig)
    ops = operations_for(dtype, operations)
    return load_component(lambda: VideoVAE(config, ops, compute_dtype), path, dtype=dtype, device=device)
