"""The released MOVA networks, built on the meta device from the presets: parameter counts, tensor
counts and key shapes must be those of the official checkpoints (spec sections 1-8), so the real
folders load key for key."""

from __future__ import annotations

import json

import pytest
import torch

from mova_core.audio_vae import DAC
from mova_core.bridge import DualTowerBridge
from mova_core.dit import DiTTower
from mova_core.presets import MOVA, PRESETS
from mova_core.text_encoder import UMT5Encoder
from mova_core.video_vae import VideoVAE

NETWORKS = {"video_dit": DiTTower, "audio_dit": DiTTower, "dual_tower_bridge": DualTowerBridge,
            "video_vae": VideoVAE, "audio_vae": DAC, "text_encoder": UMT5Encoder}

# (tensors in the state dict, parameters in billions to 4 decimals), spec sections 1-8.
OFFICIAL_COUNTS = {
    "video_dit": (1095, 14.2889),
    "audio_dit": (825, 1.4192),
    "dual_tower_bridge": (720, 2.6597),
    "audio_vae": (224, 0.3715),
    "video_vae": (194, 0.1269),
    "text_encoder": (None, 5.6809),  # 5,680,910,336 parameters (bf16 files of 11.36 GB)
}

OFFICIAL_SHAPES = {
    "video_dit": {
        "patch_embedding.weight": (5120, 36, 1, 2, 2), "time_projection.1.weight": (30720, 5120),
        "head.modulation": (1, 2, 5120), "head.head.weight": (64, 5120), "blocks.39.modulation": (1, 6, 5120),
        "blocks.0.self_attn.norm_q.weight": (5120,), "blocks.0.ffn.0.weight": (13824, 5120),
        "text_embedding.0.weight": (5120, 4096),
    },
    "audio_dit": {
        "patch_embedding.weight": (1536, 128, 1), "time_projection.1.weight": (9216, 1536),
        "head.head.weight": (128, 1536), "blocks.29.ffn.2.weight": (1536, 8960),
    },
    "dual_tower_bridge": {
        "audio_to_video_conditioners.29.inner.k.weight": (5120, 1536),
        "audio_to_video_conditioners.0.y_norm.weight": (1536,),
        "video_to_audio_conditioners.0.inner.v.weight": (1536, 5120),
        "video_to_audio_conditioners.29.inner.norm_q.weight": (1536,),
    },
    "audio_vae": {
        "encoder.block.5.block.4.weight": (4096, 2048, 16), "encoder.block.6.alpha": (1, 4096, 1),
        "quant_conv.weight": (256, 128, 1), "decoder.model.1.block.1.weight": (2048, 1024, 16),
        "decoder.model.7.weight": (1, 64, 7),
    },
    "video_vae": {
        "encoder.conv_out.weight": (32, 384, 3, 3, 3), "quant_conv.weight": (32, 32, 1, 1, 1),
        "decoder.conv_in.weight": (384, 16, 3, 3, 3), "decoder.up_blocks.0.upsamplers.0.time_conv.weight": (768, 384, 3, 1, 1),
        "decoder.conv_out.weight": (3, 96, 3, 3, 3),
    },
    "text_encoder": {
        "shared.weight": (256384, 4096),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (32, 64),
    },
}


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network(request):
    name = request.param
    with torch.device("meta"):
        module = NETWORKS[name](MOVA[name])
    return name, module.state_dict()


def test_tensor_and_parameter_counts_are_official(network):
    name, state = network
    tensors, billions = OFFICIAL_COUNTS[name]
    if tensors is not None:
        assert len(state) == tensors
    assert round(sum(t.numel() for t in state.values()) / 1e9, 4) == billions


def test_key_shapes_are_official(network):
    name, state = network
    for key, shape in OFFICIAL_SHAPES[name].items():
        assert tuple(state[key].shape) == shape, key


def test_presets_survive_the_official_config_json_and_bridge_every_audio_layer():
    """Each release's configs written as config.json and read back by the loaders' config classes are unchanged."""
    for release, configs in PRESETS.items():
        for name, config in configs.items():
            document = json.loads(json.dumps(config.to_dict()))
            assert type(config).from_dict(document, source=f"{release} {name}") == config, (release, name)
    assert MOVA["dual_tower_bridge"].interaction_layers == tuple(range(30))
    assert MOVA["audio_vae"].hop_length == 960 and MOVA["video_dit"].head_dim == 128
