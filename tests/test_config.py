"""Config parsing: official files load, unsupported values and unknown keys are refused."""

from __future__ import annotations

import pytest

from mova_core.config import BridgeConfig, ConfigError, DiTConfig, ModelIndex

VIDEO = dict(dim=96, in_dim=36, ffn_dim=192, out_dim=16, text_dim=32, freq_dim=32, num_heads=4,
             num_layers=2, patch_size=[1, 2, 2])


def test_dit_config_reads_official_keys_and_derives_head_dim():
    config = DiTConfig.from_dict({"_class_name": "WanModel", "in_dim_control_adapter": 24, **VIDEO})
    assert config.head_dim == 24
    assert config.patch_size == (1, 2, 2)
    assert not config.is_audio


@pytest.mark.parametrize("flag", ["has_image_input", "add_control_adapter", "seperated_timestep"])
def test_dit_config_refuses_unsupported_flags(flag):
    with pytest.raises(ConfigError, match=flag):
        DiTConfig.from_dict({**VIDEO, flag: True}, source="video_dit/config.json")


def test_dit_config_refuses_unknown_keys_and_bad_rope_split():
    with pytest.raises(ConfigError, match="unknown config keys"):
        DiTConfig.from_dict({**VIDEO, "sliding_window": 8})
    with pytest.raises(ConfigError, match="head_dim // 3 must be even"):
        DiTConfig.from_dict({**VIDEO, "dim": 64, "num_heads": 4})


@pytest.mark.parametrize("strategy, layers", [
    ("full", (0, 1, 2, 3)),
    ("distributed", (0, 3)),
    ("shallow_focus", (0,)),
    ("progressive", (0, 1, 2, 3)),
    ("custom", (0, 2)),
])
def test_bridge_interaction_layers(strategy, layers):
    config = BridgeConfig(visual_layers=5, audio_layers=4, visual_hidden_dim=96, audio_hidden_dim=48,
                          head_dim=24, interaction_strategy=strategy)
    assert config.interaction_layers == layers


def test_bridge_config_refuses_unknown_strategy():
    with pytest.raises(ConfigError, match="interaction_strategy"):
        BridgeConfig.from_dict({"interaction_strategy": "everywhere", "head_dim": 24,
                                "visual_hidden_dim": 96, "audio_hidden_dim": 48})


def test_model_index_boundary_and_components():
    index = ModelIndex.from_dict({"_class_name": "MOVA", "boundary_ratio": 0.875, "video_dit": ["a", "b"]})
    assert index.boundary_timestep == 875.0
    assert index.components == ("video_dit",)
    with pytest.raises(ConfigError, match="audio_vae_type"):
        ModelIndex.from_dict({"audio_vae_type": "oobleck"})
