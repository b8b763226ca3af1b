"""Attention kernels and the q/k-normalised attention layer shared by the DiTs and the bridge.

Tensor layout everywhere in this module: ``[batch, tokens, heads, head_dim]`` ("BLHD"), the
layout the projections produce with a plain ``view``. Attention is full (no mask) with the
softmax scale ``1 / sqrt(head_dim)``, as in the official MOVA code.

Every attention of the model (self and text attention of both towers, both Bridge directions and the
Bridge's per-frame pooling) calls :func:`attention` with the backend its layer was built with: ``sdpa``
(PyTorch, exact), ``flash`` (flash-attn), ``sage`` (sageattention, 8-bit q/k), or one registered by an
adapter (ComfyUI's ``comfy``, see ``nodes/comfy_model.py``).
"""

from __future__ import annotations

import importlib.util
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class AttentionBackendError(ValueError):
    """An attention backend that is unknown or not installed."""


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _check_cuda_half(name: str, q: torch.Tensor) -> None:
    """GPU kernels (flash, sage) take float16/bfloat16 CUDA tensors only."""
    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        raise AttentionBackendError(
            f"attention backend {name!r} needs float16/bfloat16 CUDA tensors, got {q.dtype} on {q.device}; "
            "use backend='sdpa' for other inputs."
        )


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    _check_cuda_half("flash", q)
    from flash_attn import flash_attn_func  # imported lazily: optional dependency

    return flash_attn_func(q, k, v)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SageAttention (8-bit quantised q/k; approximate, about 2x FlashAttention-2): head sizes up to 128,
    which every MOVA attention has (towers 128, Bridge 128 in the released shapes)."""
    _check_cuda_half("sage", q)
    from sageattention import sageattn  # imported lazily: optional dependency

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


# name -> (python module that must be importable, or None; kernel)
_BACKENDS: dict[str, tuple[str | None, AttentionKernel]] = {
    "sdpa": (None, _sdpa),
    "flash": ("flash_attn", _flash),
    "sage": ("sageattention", _sage),
}


def register_backend(name: str, kernel: AttentionKernel, *, requires: str | None = None) -> None:
    """Add (or replace) a backend: ``kernel(q, k, v)`` on [B, L, heads, head_dim] tensors, usable when
    the Python module ``requires`` (if given) is importable. For example a ComfyUI adapter can route
    attention through ``comfy.ldm.modules.attention.optimized_attention``."""
    _BACKENDS[name] = (requires, kernel)


def available_backends() -> tuple[str, ...]:
    """Names of the attention backends usable in this Python environment."""
    return tuple(
        name for name, (module, _) in _BACKENDS.items()
        if module is None or importlib.util.find_spec(module) is not None
    )


def check_backend(backend: str) -> None:
    """Raise :class:`AttentionBackendError` unless ``backend`` is known and installed."""
    installed = available_backends()
    if backend not in _BACKENDS:
        raise AttentionBackendError(
            f"unknown attention backend {backend!r}; known: {sorted(_BACKENDS)}, installed backends: {list(installed)}."
        )
    if backend not in installed:
        raise AttentionBackendError(
            f"attention backend {backend!r} needs the Python package {_BACKENDS[backend][0]!r}, which is not "
            f"installed; installed backends: {list(installed)}."
        )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "sdpa") -> torch.Tensor:
    """Unmasked softmax attention of ``q`` [B, Lq, H, D] over ``k``/``v`` [B, Lk, H, D] -> [B, Lq, H, D].

    Layers check that their backend is installed once, when they are built; a call only looks it up."""
    entry = _BACKENDS.get(backend)
    if entry is None:
        check_backend(backend)  # raises, naming the known and installed backends
    return entry[1](q, k, v)


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for an RMSNorm layer whose input ``x`` is a fresh buffer of the caller's (a projection's output).

    For a plain float32 ``nn.RMSNorm`` on the CPU without autograd or hooks, the operations of PyTorch's kernel
    (``x * rsqrt(mean(x^2) + eps)``, then ``* weight``) run in place on ``x``: the same values bit for bit,
    without the kernel's two intermediate buffers of x's size."""
    if (type(norm) is not nn.RMSNorm or norm.eps is None or len(norm.normalized_shape) != 1
            or norm._forward_hooks or norm._forward_pre_hooks
            or (norm.weight is not None and norm.weight.dtype != torch.float32)
            or torch.is_grad_enabled() or torch.compiler.is_compiling() or x.dtype != torch.float32 or x.device.type != "cpu"):
        return norm(x)
    x = x.mul_(torch.mean(x.pow(2), dim=-1, keepdim=True).add_(norm.eps).rsqrt_())
    return x if norm.weight is None else x.mul_(norm.weight)


class QKNormAttention(nn.Module):
    """Projections ``q``/``k``/``v``/``o`` with RMSNorm on q and k over the full width (official keys
    ``q, k, v, o, norm_q, norm_k``). Queries come from ``x`` (width ``dim``), keys/values from ``y``
    (width ``kv_dim``). ``forward`` is plain cross-attention; subclasses add positional rotations."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_dim: int | None = None,
        eps: float = 1e-6,
        operations=nn,
        attention_backend: str = "sdpa",
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads.")
        check_backend(attention_backend)
        kv_dim = dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attention_backend = attention_backend
        self.q = operations.Linear(dim, dim)
        self.k = operations.Linear(kv_dim, dim)
        self.v = operations.Linear(kv_dim, dim)
        self.o = operations.Linear(dim, dim)
        self.norm_q = operations.RMSNorm(dim, eps=eps)
        self.norm_k = operations.RMSNorm(dim, eps=eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def project(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q from ``x``, k and v from ``y``, each split into heads: [B, L, heads, head_dim]."""
        return (self.project_q(x), *self.project_kv(y))

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised queries from ``x``: [B, Lq, heads, head_dim]."""
        return self._heads(_rms_norm(self.norm_q, self.q(x)))

    def project_kv(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised keys and values from ``y``: [B, Lk, heads, head_dim] each (constant for a constant ``y``,
        such as the prompt of the towers' text cross-attention)."""
        return self._heads(_rms_norm(self.norm_k, self.k(y))), self._heads(self.v(y))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over heads, merged and projected by ``o``: [B, Lq, dim]."""
        return self.o(attention(q, k, v, backend=self.attention_backend).flatten(-2))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.attend(*self.project(x, y))
