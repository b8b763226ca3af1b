"""Layer namespaces ("operations") the models are built from.

Every model takes an ``operations`` argument: any object with ``Linear``, ``Conv1d``, ``Conv2d``,
``Conv3d``, ``ConvTranspose1d``, ``LayerNorm``, ``RMSNorm`` and ``Embedding`` attributes.
``torch.nn`` is the default; ComfyUI passes one of its ``comfy.ops`` classes.
:class:`CastingOps` stores weights in one dtype (for example float8) and computes in the
input's dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def cast_like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Return ``tensor`` on ``reference``'s device and dtype (no copy when they match).

    Used for parameters that live directly on non-leaf modules (modulation tables, probes),
    which an operations namespace cannot cast for us.
    """
    return tensor.to(device=reference.device, dtype=reference.dtype)


def operations_for(dtype: torch.dtype, operations: Any = None) -> Any:
    """``operations`` if given; otherwise ``torch.nn`` for float32 weights and :class:`CastingOps` for
    other storage dtypes (float32 time MLPs over bf16 weights, fp8 storage computed in bf16)."""
    if operations is not None:
        return operations
    return nn if dtype == torch.float32 else CastingOps


def _cast_weights(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = cast_like(module.weight, x)
    bias = None if module.bias is None else cast_like(module.bias, x)
    return weight, bias


class CastingOps:
    """``torch.nn`` layers that cast their stored weights to the input dtype in ``forward``."""

    class Linear(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, *_cast_weights(self, x))

    class Conv1d(nn.Conv1d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, *_cast_weights(self, x))

    class Conv2d(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, *_cast_weights(self, x))

    class Conv3d(nn.Conv3d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, *_cast_weights(self, x))

    class ConvTranspose1d(nn.ConvTranspose1d):
        def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
            padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 1, self.dilation)
            weight, bias = _cast_weights(self, x)
            return F.conv_transpose1d(x, weight, bias, self.stride, self.padding, padding, self.groups, self.dilation)

    class LayerNorm(nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.weight is None:
                return super().forward(x)
            return F.layer_norm(x, self.normalized_shape, *_cast_weights(self, x), self.eps)

    class RMSNorm(nn.RMSNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            weight = None if self.weight is None else cast_like(self.weight, x)
            return F.rms_norm(x, self.normalized_shape, weight, self.eps)

    Embedding = nn.Embedding
