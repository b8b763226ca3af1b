"""The MOVA diffusion transformers: video towers (``video_dit``, ``video_dit_2``; official
``WanModel``) and the audio tower (``audio_dit``; official ``WanAudioModel``).

Both towers share one block type and differ only in patchify (Conv3d vs Conv1d) and RoPE (3-D vs
1-D). Module and parameter names equal the official state-dict keys, so the released files load
key for key. Every layer comes from the ``operations`` namespace (see :mod:`mova_core.ops`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import QKNormAttention
from .config import DiTConfig
from .loading import ComponentPath, load_network
from .ops import cast_like
from .rope import apply_interleaved_rope, audio_rope_table, video_rope_table

TextKV = tuple[torch.Tensor, torch.Tensor]
"""Keys and values [B, L_text, heads, head_dim] of a block's text cross-attention."""

def timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Official ``sinusoidal_embedding_1d``: [cos | sin] of ``t * 10000^(-k/(dim/2))`` in float64
    on the raw timestep (0..1000), returned as float32 [B, dim]."""
    half = dim // 2
    frequencies = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device).div(half))
    angles = torch.outer(timestep.to(torch.float64), frequencies)
    return torch.cat([angles.cos(), angles.sin()], dim=1).to(torch.float32)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x·(1 + scale) + shift`` in x's dtype (eager, as the official heads and bridge AdaLN); one
    ``addcmul`` (one output buffer instead of two; on the CPU a fused multiply-add, which may differ from the
    two-rounding form in the last bit)."""
    return torch.addcmul(shift, x, 1 + scale)


def fused_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The official blocks ``torch.compile`` their modulate: computed in float32, rounded once.

    ``x`` is a fresh buffer of the caller's (a norm's output): in float32 without autograd the same ``addcmul``
    writes into it (same kernel, same numbers) instead of a new buffer of its size."""
    if (x.dtype == shift.dtype == scale.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()):
        return torch.addcmul(shift, x, 1 + scale, out=x)
    return modulate(x.float(), shift.float(), scale.float()).to(x.dtype)


class InplaceGELU(nn.GELU):
    """``nn.GELU`` that overwrites its input when no gradient is recorded (the FFN's hidden activation is the
    largest tensor of a block; the same kernel, so the same numbers, without a second buffer of its size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        return torch._C._nn.gelu_(x, approximate=self.approximate)


class SelfAttention(QKNormAttention):
    """Token self-attention with the towers' interleaved float64 RoPE on q and k."""

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        q, k, v = self.project(x, x)
        inplace = not torch.is_grad_enabled()  # q and k are this call's own buffers: rotated where they are
        return self.attend(apply_interleaved_rope(q, rope, inplace=inplace), apply_interleaved_rope(k, rope, inplace=inplace), v)


class DiTBlock(nn.Module):
    """Modulated self-attention, ungated text cross-attention (affine ``norm3``), modulated FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float, operations=nn, attention_backend: str = "sdpa"):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads, eps=eps, operations=operations, attention_backend=attention_backend)
        self.cross_attn = QKNormAttention(dim, num_heads, eps=eps, operations=operations, attention_backend=attention_backend)
        self.norm1 = operations.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm2 = operations.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm3 = operations.LayerNorm(dim, eps=eps)
        self.ffn = nn.Sequential(operations.Linear(dim, ffn_dim), InplaceGELU(approximate="tanh"), operations.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, context: torch.Tensor | TextKV, t_mod: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """``x`` [B, L, dim], ``context`` [B, L_text, dim] (already embedded) or its keys and values from
        :meth:`text_kv`, ``t_mod`` [B, 6, dim]."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (cast_like(self.modulation, t_mod) + t_mod).chunk(6, dim=1)
        # x + gate·update as one addcmul: one buffer instead of two (a fused multiply-add: last-bit differences)
        x = torch.addcmul(x, gate_msa, self.self_attn(fused_modulate(self.norm1(x), shift_msa, scale_msa), rope))
        k, v = self.text_kv(context) if isinstance(context, torch.Tensor) else context
        # x is this block's own buffer from here: without autograd (which keeps the norms' inputs) the two updates
        # are added in place (same kernels)
        in_place = not torch.is_grad_enabled()
        update = self.cross_attn.attend(self.cross_attn.project_q(self.norm3(x)), k, v)
        x = x.add_(update) if in_place and update.dtype == x.dtype else x + update
        update = self.ffn(fused_modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x.addcmul_(gate_mlp, update) if in_place and update.dtype == x.dtype else torch.addcmul(x, gate_mlp, update)

    def text_kv(self, context: torch.Tensor) -> TextKV:
        """Keys and values of the text cross-attention for an embedded prompt (constant for a generation)."""
        return self.cross_attn.project_kv(context)


class Head(nn.Module):
    """Output projection modulated by the time embedding ``t_emb`` (not ``t_mod``)."""

    def __init__(self, dim: int, out_features: int, eps: float, operations=nn):
        super().__init__()
        self.norm = operations.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = operations.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        # The official video Head adds t_emb [B, dim] to the [1, 2, dim] table without unsqueezing,
        # which only broadcasts correctly for B = 1 (spec 19.11); the audio Head has the fix. We use the
        # batched form for both towers: identical to the official numbers for B = 1.
        shift, scale = (cast_like(self.modulation, t_emb) + t_emb[:, None]).chunk(2, dim=1)
        return self.head(modulate(self.norm(x), shift, scale))


class DiTTower(nn.Module):
    """One MOVA DiT tower. Video when ``config.patch_size`` has 3 entries (input [B, in_dim, T, H, W]),
    audio when it has 1 (input [B, in_dim, L]).

    The joint forward (:func:`mova_core.joint.joint_forward`) drives the pieces directly:
    :meth:`embed_time`, :meth:`embed_text`, :meth:`patchify`, :meth:`rope_table`, ``blocks``,
    :meth:`project_out`.
    """

    def __init__(self, config: DiTConfig, *, operations=nn, attention_backend: str = "sdpa"):
        super().__init__()
        self.config = config
        dim, patch = config.dim, tuple(config.patch_size)
        patch_conv = operations.Conv1d if config.is_audio else operations.Conv3d
        self.patch_embedding = patch_conv(config.in_dim, dim, kernel_size=patch, stride=patch)
        self.text_embedding = nn.Sequential(
            operations.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), operations.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(operations.Linear(config.freq_dim, dim), nn.SiLU(), operations.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), operations.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(
            DiTBlock(dim, config.num_heads, config.ffn_dim, config.eps, operations, attention_backend)
            for _ in range(config.num_layers)
        )
        self.head = Head(dim, config.out_dim * math.prod(patch), config.eps, operations)
        self.compute_dtype_override: torch.dtype | None = None

    @property
    def compute_dtype(self) -> torch.dtype:
        """Activation dtype: ``compute_dtype_override`` when set (for example by an adapter whose
        operations cast fp16 storage to bf16), else the head modulation's dtype (bfloat16 if fp8)."""
        if self.compute_dtype_override is not None:
            return self.compute_dtype_override
        dtype = self.head.modulation.dtype
        return torch.bfloat16 if dtype.itemsize == 1 else dtype

    def embed_time(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t_emb [B, dim], t_mod [B, 6, dim])`` for raw timesteps [B]. The MLPs run in float32 (the
        official ``autocast(float32)``; weights are upcast by casting operations), then the results
        are cast to :attr:`compute_dtype`."""
        t_emb = self.time_embedding(timestep_sinusoid(timestep.reshape(-1), self.config.freq_dim))
        t_mod = self.time_projection(t_emb).unflatten(1, (6, self.config.dim))
        return t_emb.to(self.compute_dtype), t_mod.to(self.compute_dtype)

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings [B, L_text, text_dim] -> [B, L_text, dim]."""
        if context.ndim != 3 or context.shape[-1] != self.config.text_dim:
            raise ValueError(f"context must be [B, L_text, {self.config.text_dim}], got {tuple(context.shape)}.")
        return self.text_embedding(context.to(self.compute_dtype))

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Latents -> tokens [B, L, dim] ordered (f, h, w) and the token grid ((f, h, w) or (L,)).

        As the official code: the video convolution reads channels-last input (a fast kernel instead of
        ``slow_conv3d`` on the CPU) and the tokens are made contiguous, so every block and Bridge layer works
        on a dense [B, L, dim] stream (a transposed view would make each projection a batched matmul and each
        elementwise op strided)."""
        self._check_latents(x)
        x = x.to(self.compute_dtype)
        if not self.config.is_audio:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.patch_embedding(x)
        return x.flatten(2).transpose(1, 2).contiguous(), tuple(x.shape[2:])

    def rope_table(self, grid: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
        """complex128 self-attention RoPE table [L, head_dim // 2] for a token grid."""
        head_dim = self.config.head_dim
        if self.config.is_audio:
            return audio_rope_table(head_dim, grid[0], device)
        return video_rope_table(head_dim, grid, device)  # type: ignore[arg-type]

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Head output [B, L, prod(patch) * out_dim] (channel fastest) -> latents."""
        patch, channels = tuple(self.config.patch_size), self.config.out_dim
        x = x.reshape(x.shape[0], *grid, *patch, channels)
        if self.config.is_audio:  # b f p c -> b c (f p)
            return x.permute(0, 3, 1, 2).flatten(2)
        # b f h w pf ph pw c -> b c (f pf) (h ph) (w pw)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def project_out(self, x: torch.Tensor, t_emb: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Final head and unpatchify: tokens -> latents [B, out_dim, ...] in :attr:`compute_dtype`."""
        return self.unpatchify(self.head(x, t_emb), grid)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The tower alone (official ``WanModel.forward`` / ``WanAudioModel.forward``); returns
        :attr:`compute_dtype` latents."""
        t_emb, t_mod = self.embed_time(timestep)
        context = self.embed_text(context)
        tokens, grid = self.patchify(x)
        rope = self.rope_table(grid, tokens.device)
        for block in self.blocks:
            tokens = block(tokens, context, t_mod, rope)
        return self.project_out(tokens, t_emb, grid)

    def _check_latents(self, x: torch.Tensor) -> None:
        config = self.config
        kind = "audio" if config.is_audio else "video"
        spatial = tuple(x.shape[2:])
        if x.ndim != 2 + len(config.patch_size) or x.shape[1] != config.in_dim:
            layout = "[B, C, L]" if config.is_audio else "[B, C, T, H, W]"
            raise ValueError(f"{kind} DiT input must be {layout} with C={config.in_dim}, got {tuple(x.shape)}.")
        if any(size % p for size, p in zip(spatial, config.patch_size)):
            raise ValueError(
                f"{kind} DiT input sizes {spatial} must be multiples of the patch size {tuple(config.patch_size)}."
            )


def load_dit(
    path: ComponentPath,
    *,
    config: DiTConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations=None,
    attention_backend: str = "sdpa",
) -> DiTTower:
    """Load a DiT tower from an official component folder (``config.json`` + safetensors, sharded or
    not) or from a single ``.safetensors`` file with ``config`` given. ``dtype`` is the storage dtype
    (float8_e4m3fn: Linear weights only, computing in bfloat16)."""
    return load_network(DiTTower, DiTConfig, path, config=config, dtype=dtype, device=device, operations=operations,
                        attention_backend=attention_backend)
