"""MOVA Video VAE's key renaming (diffusers AutoencoderKLWan -> the original Wan 2.1 layout ComfyUI's VAE loader
detects); the integration test decodes with the renamed weights in a real ComfyUI."""

from __future__ import annotations

from types import ModuleType
from typing import Iterator

import pytest
import torch

from comfy_stub import loaded_pack
from mova_core.config import VideoVAEConfig
from mova_core.video_vae import VideoVAE


@pytest.fixture(scope="module")
def native_vae() -> Iterator[ModuleType]:
    with loaded_pack() as pack:
        yield pack.module("nodes.native_vae")


@pytest.mark.parametrize("config", [VideoVAEConfig(), VideoVAEConfig(base_dim=3, z_dim=8, num_res_blocks=1,
                                                                       dim_mult=(1, 2, 3, 3), latents_mean=(0.0,) * 8,
                                                                       latents_std=(1.0,) * 8)])
def test_every_weight_gets_its_own_original_name(native_vae: ModuleType, config: VideoVAEConfig):
    with torch.device("meta"):
        state = VideoVAE(config).state_dict()
    renamed = native_vae.wan_vae_state_dict(state, config)
    assert len(renamed) == len(state)
    assert all(renamed[native_vae.wan_vae_key(key, config.num_res_blocks)] is value for key, value in state.items())
    assert "decoder.middle.0.residual.0.gamma" in renamed  # what ComfyUI detects a Wan VAE by
    last = 3 * (config.num_res_blocks + 2) + config.num_res_blocks  # the decoder's layers: one sequence
    assert f"decoder.upsamples.{last}.residual.6.weight" in renamed
    assert f"decoder.upsamples.{last + 1}.residual.0.gamma" not in renamed


def test_names_follow_the_original_layout(native_vae: ModuleType):
    expected = {
        "encoder.conv_in.weight": "encoder.conv1.weight",
        "encoder.down_blocks.3.conv_shortcut.bias": "encoder.downsamples.3.shortcut.bias",
        "encoder.down_blocks.5.time_conv.weight": "encoder.downsamples.5.time_conv.weight",
        "encoder.mid_block.attentions.0.to_qkv.weight": "encoder.middle.1.to_qkv.weight",
        "encoder.mid_block.resnets.1.norm2.gamma": "encoder.middle.2.residual.3.gamma",
        "encoder.norm_out.gamma": "encoder.head.0.gamma",
        "quant_conv.weight": "conv1.weight",
        "post_quant_conv.bias": "conv2.bias",
        "decoder.conv_in.weight": "decoder.conv1.weight",
        "decoder.up_blocks.0.resnets.2.conv2.weight": "decoder.upsamples.2.residual.6.weight",
        "decoder.up_blocks.1.upsamplers.0.time_conv.bias": "decoder.upsamples.7.time_conv.bias",
        "decoder.up_blocks.2.upsamplers.0.resample.1.weight": "decoder.upsamples.11.resample.1.weight",
        "decoder.up_blocks.3.resnets.0.conv1.bias": "decoder.upsamples.12.residual.2.bias",
        "decoder.conv_out.weight": "decoder.head.2.weight",
    }
    assert {key: native_vae.wan_vae_key(key, 2) for key in expected} == expected
    with pytest.raises(ValueError, match="unexpected weight 'encoder.extra.weight'"):
        native_vae.wan_vae_key("encoder.extra.weight", 2)
