"""The dual-tower bridge (official ``DualTowerConditionalBridge``): per interaction layer, audio
tokens condition the video tokens (``audio_to_video_conditioners``) and video tokens condition the
audio tokens (``video_to_audio_conditioners``) through cross-attention, optionally with the
audio-clock-aligned rotate-half RoPE and (video -> audio only) a per-frame pooled AdaLN.
Module and parameter names equal the official state-dict keys.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .attention import QKNormAttention, attention, check_backend
from .config import BridgeConfig
from .dit import modulate
from .loading import ComponentPath, load_network
from .ops import cast_like
from .rope import CosSin, aligned_rope_tables, apply_rotate_half_rope

ADALN_EPS = 1e-5  # the official AdaLayerNorm keeps its own default eps


class ConditionalCrossAttention(QKNormAttention):
    """Cross-attention from the primary stream ``x`` to the (normalised) condition stream ``y``;
    q is rotated with the primary's positions, k with the condition's."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, y: torch.Tensor, x_rope: CosSin | None = None, y_rope: CosSin | None = None
    ) -> torch.Tensor:
        q, k, v = self.project(x, y)
        if x_rope is not None:
            q = apply_rotate_half_rope(q, x_rope)
        if y_rope is not None:
            k = apply_rotate_half_rope(k, y_rope)
        return self.attend(q, k, v)


class PoolingAttention(nn.Module):
    """Multi-head attention of one query over a token set, with the parameter names of
    ``torch.nn.MultiheadAttention`` (packed ``in_proj_weight``/``in_proj_bias``, ``out_proj``)."""

    def __init__(self, dim: int, num_heads: int, operations=nn, attention_backend: str = "sdpa"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"pooling width {dim} is not divisible by {num_heads} heads.")
        self.num_heads = num_heads
        self.attention_backend = attention_backend
        self.in_proj_weight = nn.Parameter(torch.randn(3 * dim, dim) / dim**0.5)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = operations.Linear(dim, dim)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``query`` [N, Lq, dim] attends over ``tokens`` [N, L, dim] -> [N, Lq, dim]."""
        w_q, w_k, w_v = cast_like(self.in_proj_weight, tokens).chunk(3)
        b_q, b_k, b_v = cast_like(self.in_proj_bias, tokens).chunk(3)
        q, k, v = (
            F.linear(x, w, b).unflatten(-1, (self.num_heads, -1))
            for x, w, b in ((query, w_q, b_q), (tokens, w_k, b_k), (tokens, w_v, b_v))
        )
        return self.out_proj(attention(q, k, v, backend=self.attention_backend).flatten(-2))


class PerFramePooling(nn.Module):
    """A learned probe attends over each latent frame's tokens, then LayerNorm: [B, T*h*w, D] -> [B, T, D]."""

    def __init__(self, dim: int, num_heads: int, eps: float, operations=nn, attention_backend: str = "sdpa"):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attention = PoolingAttention(dim, num_heads, operations, attention_backend)
        self.layernorm = operations.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        batch, frames = x.shape[0], grid[0]
        per_frame = x.reshape(batch * frames, -1, x.shape[-1])
        probe = cast_like(self.probe, x).expand(batch * frames, -1, -1)
        pooled = self.attention(probe, per_frame).reshape(batch, frames, -1)
        return self.layernorm(pooled)


class PooledAdaLN(nn.Module):
    """``LN(x)·(1 + scale) + shift`` with ``(scale, shift) = Linear(SiLU(cond))`` (scale first)."""

    def __init__(self, cond_dim: int, dim: int, operations=nn):
        super().__init__()
        self.linear = operations.Linear(cond_dim, 2 * dim)
        self.norm = operations.LayerNorm(dim, eps=ADALN_EPS, elementwise_affine=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(cond)).chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)


class ConditionerBlock(nn.Module):
    """One direction at one layer: affine LayerNorm on the condition stream (the primary stream is
    not normalised), then cross-attention. With ``pooled_adaln`` (video -> audio), the queries come
    from the primary stream modulated by per-frame pooled video tokens resampled to its length."""

    def __init__(
        self, dim: int, cond_dim: int, num_heads: int, *, pooled_adaln: bool = False, eps: float = 1e-6,
        operations=nn, attention_backend: str = "sdpa",
    ):
        super().__init__()
        self.y_norm = operations.LayerNorm(cond_dim, eps=eps)
        self.inner = ConditionalCrossAttention(
            dim, num_heads, kv_dim=cond_dim, eps=eps, operations=operations, attention_backend=attention_backend
        )
        self.pooled_adaln = pooled_adaln
        if pooled_adaln:
            self.per_frame_pooling = PerFramePooling(cond_dim, num_heads, eps, operations, attention_backend)
            self.adaln = PooledAdaLN(cond_dim, dim, operations)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_rope: CosSin | None, y_rope: CosSin | None,
        grid: tuple[int, int, int],
    ) -> torch.Tensor:
        """The update for ``x`` (the caller adds it to the unmodulated ``x``)."""
        if self.pooled_adaln:
            pooled = self.per_frame_pooling(y, grid)  # [B, T, cond_dim]
            pooled = F.interpolate(pooled.transpose(1, 2), size=x.shape[1], mode="linear", align_corners=False)
            x = self.adaln(x, pooled.transpose(1, 2))
        return self.inner(x, self.y_norm(y), x_rope, y_rope)


class DualTowerBridge(nn.Module):
    """Bridge between the video tower (width ``visual_hidden_dim``) and the audio tower
    (``audio_hidden_dim``) at the layers ``config.interaction_layers``.

    ``trainable_condition_scale``: the official file then holds a ``condition_scale`` parameter, but
    the official sampler always passes ``condition_scale=1.0``, which overrides it; we load the
    parameter and ignore it the same way (the update is added with scale 1).
    """

    def __init__(self, config: BridgeConfig, *, operations=nn, attention_backend: str = "sdpa"):
        super().__init__()
        check_backend(attention_backend)
        self.config = config
        self.layers = config.interaction_layers
        video_dim, audio_dim, head_dim = config.visual_hidden_dim, config.audio_hidden_dim, config.head_dim
        common = dict(operations=operations, attention_backend=attention_backend)
        self.audio_to_video_conditioners = nn.ModuleDict(
            {str(i): ConditionerBlock(video_dim, audio_dim, video_dim // head_dim, **common) for i in self.layers}
        )
        self.video_to_audio_conditioners = nn.ModuleDict(
            {
                str(i): ConditionerBlock(audio_dim, video_dim, audio_dim // head_dim, pooled_adaln=config.pooled_adaln, **common)
                for i in self.layers
            }
        )
        if config.trainable_condition_scale:
            self.condition_scale = nn.Parameter(torch.ones(1))

    def interacts(self, layer: int) -> bool:
        return layer in self.layers

    def aligned_rope(
        self, video_fps: float, grid: tuple[int, int, int], audio_len: int, *, dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> tuple[CosSin, CosSin] | tuple[None, None]:
        """``(video_cos_sin, audio_cos_sin)`` for the cross RoPE, or ``(None, None)`` when it is off."""
        if not self.config.apply_cross_rope:
            return None, None
        return aligned_rope_tables(
            head_dim=self.config.head_dim, grid=grid, audio_len=audio_len, video_fps=video_fps,
            audio_fps=self.config.audio_fps, first_frame_bias=self.config.apply_first_frame_bias_in_rope,
            dtype=dtype, device=device,
        )

    def forward(
        self,
        layer: int,
        video: torch.Tensor,
        audio: torch.Tensor,
        *,
        grid: tuple[int, int, int],
        video_rope: CosSin | None = None,
        audio_rope: CosSin | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions at ``layer``, each reading the other stream's pre-bridge state:
        ``(video + A2V(video, audio), audio + V2A(audio, video))``. Layers without a bridge pass through."""
        if not self.interacts(layer):
            return video, audio
        key = str(layer)
        video_update = self.audio_to_video_conditioners[key](video, audio, video_rope, audio_rope, grid)
        audio_update = self.video_to_audio_conditioners[key](audio, video, audio_rope, video_rope, grid)
        if torch.is_grad_enabled() or (video_update.dtype, audio_update.dtype) != (video.dtype, audio.dtype):
            return video + video_update, audio + audio_update
        # the updates are fresh buffers: the sums written into them (a + b = b + a bit for bit)
        return video_update.add_(video), audio_update.add_(audio)


def load_bridge(
    path: ComponentPath,
    *,
    config: BridgeConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations=None,
    attention_backend: str = "sdpa",
) -> DualTowerBridge:
    """Load the bridge from an official component folder, or a single ``.safetensors`` file with
    ``config`` given; ``dtype``/``operations`` as in :func:`mova_core.dit.load_dit`."""
    return load_network(DualTowerBridge, BridgeConfig, path, config=config, dtype=dtype, device=device,
                        operations=operations, attention_backend=attention_backend)
