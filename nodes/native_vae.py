"""MOVA's video VAE as ComfyUI's own ``VAE``, for VAEDecode / VAEDecodeTiled / VAEEncode.

MOVA checkpoints store the Wan 2.1 video VAE in diffusers' ``AutoencoderKLWan`` layout, which ComfyUI's VAE loader
does not detect; ComfyUI reads the original Wan 2.1 layout. :func:`wan_vae_state_dict` renames the keys (the
tensors are the same), and :func:`native_video_vae` builds ComfyUI's VAE from them.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

import comfy.sd

from ..mova_core.config import VideoVAEConfig
from .comfy_model import MovaModel

_RESNET = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
           "conv_shortcut": "shortcut"}
"""diffusers resnet layers -> the original ``ResidualBlock.residual`` (RMS norm, SiLU, conv, RMS norm, SiLU, dropout,
conv) and ``shortcut``."""
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
_ENDS = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}
_COMFY_SHAPE = {"z_dim": 16, "dim_mult": (1, 2, 4, 4), "num_res_blocks": 2, "attn_scales": (),
                "temperal_downsample": (False, True, True), "decoder_base_dim": None, "in_channels": 3,
                "out_channels": 3}
"""The Wan 2.1 VAE ComfyUI builds (``comfy.sd.VAE``); 0.3.x also fixes ``base_dim`` at 96, newer ComfyUI reads it."""


def _layer(sub: list[str]) -> list[str]:
    return [*_RESNET[sub[0]].split("."), *sub[1:]] if sub[0] in _RESNET else sub


def wan_vae_key(key: str, num_res_blocks: int) -> str:
    """One diffusers ``AutoencoderKLWan`` key -> its original Wan 2.1 name. The original numbers the decoder's
    layers in one sequence: per up block its ``num_res_blocks + 1`` resnets, then its upsampler (none in the last)."""
    top, *parts = key.split(".")
    if top in _TOP:
        return ".".join([_TOP[top], *parts])
    name, *rest = parts
    if name in _ENDS:
        return ".".join([top, _ENDS[name], *rest])
    if name == "mid_block":  # resnet, attention, resnet
        kind, index, *sub = rest
        return ".".join([top, "middle", str(2 * int(index) if kind == "resnets" else 1), *_layer(sub)])
    if name == "down_blocks":
        index, *sub = rest
        return ".".join([top, "downsamples", index, *_layer(sub)])
    if name == "up_blocks":
        block, kind, index, *sub = rest
        per_block = num_res_blocks + 2
        position = int(block) * per_block + (per_block - 1 if kind == "upsamplers" else int(index))
        return ".".join([top, "upsamples", str(position), *_layer(sub)])
    raise ValueError(f"video VAE: unexpected weight {key!r} for the Wan 2.1 VAE.")


def wan_vae_state_dict(state: Mapping[str, torch.Tensor], config: VideoVAEConfig) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKLWan`` state dict with the original Wan 2.1 keys (the same tensors)."""
    return {wan_vae_key(key, config.num_res_blocks): tensor for key, tensor in state.items()}


def native_video_vae(model: MovaModel) -> Any:
    """The MOVA_MODEL's video VAE as a ``comfy.sd.VAE`` (a copy of its weights); ValueError naming the difference
    where ComfyUI cannot build that VAE."""
    vae = model.pipeline.video_vae
    config = vae.config
    different = {name: getattr(config, name) for name, value in _COMFY_SHAPE.items()
                 if (tuple(getattr(config, name)) if isinstance(value, tuple) else getattr(config, name)) != value}
    if different:
        raise ValueError(f"mova_model: its video VAE differs from the Wan 2.1 VAE ComfyUI builds ({different}; "
                         f"ComfyUI's: { {name: _COMFY_SHAPE[name] for name in different} }). Decode with MOVA Decode.")
    state = wan_vae_state_dict({key: tensor.detach() for key, tensor in vae.state_dict().items()}, config)
    try:
        return comfy.sd.VAE(sd=state)
    except RuntimeError as error:  # ComfyUI 0.3.x builds base_dim 96 whatever the weights hold
        raise ValueError(f"mova_model: this ComfyUI cannot build its video VAE (base_dim {config.base_dim}; ComfyUI "
                         f"0.3.x builds only the released 96). Decode with MOVA Decode.") from error
