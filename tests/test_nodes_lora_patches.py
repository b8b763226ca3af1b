"""LoRA strength plumbing of MOVA LoRA Loader: which patcher gets which weights at which strength."""

from __future__ import annotations

import os

import pytest
import torch

from comfyui_mova_av.mova_core.lora import LoraFile, LoraStrengths, LoraWeights
from comfyui_mova_av.nodes.lora_patches import (AUDIO_PATCHER, STRENGTH_INPUTS, LoraFileCache, patch_groups,
                                                strengths_from_widgets)


def weights(out_features: int = 4, in_features: int = 3, rank: int = 2, alpha: float | None = 1.0) -> LoraWeights:
    return LoraWeights(torch.randn(rank, in_features), torch.randn(out_features, rank), alpha)


@pytest.fixture
def lora() -> LoraFile:
    return LoraFile("/loras/demo.safetensors", {
        "video_dit": {"blocks.0.self_attn.q": weights(), "blocks.1.ffn.0": weights()},
        "video_dit_2": {"blocks.0.self_attn.q": weights()},
        "audio_dit": {"blocks.0.cross_attn.k": weights(alpha=None)},
        "dual_tower_bridge": {"audio_conditioners.0.q": weights()},
    })


def test_widgets_map_to_components():
    strengths = strengths_from_widgets({"strength_high_noise": 0.5, "strength_low_noise": 0.25,
                                        "strength_audio": -1.0, "strength_bridge": 2.0})
    assert strengths == LoraStrengths(video_dit=0.5, video_dit_2=0.25, audio_dit=-1.0, dual_tower_bridge=2.0)
    assert sorted(STRENGTH_INPUTS.values()) == ["audio_dit", "dual_tower_bridge", "video_dit", "video_dit_2"]


def test_each_component_goes_to_its_patcher_with_its_own_strength_and_key_prefix(lora):
    strengths = LoraStrengths(video_dit=0.5, video_dit_2=0.25, audio_dit=-1.0, dual_tower_bridge=2.0)
    groups = {group.component: group for group in patch_groups(lora, strengths)}
    assert [(g.patcher, g.strength) for g in groups.values()] == [
        ("video_dit", 0.5), ("video_dit_2", 0.25), (AUDIO_PATCHER, -1.0), (AUDIO_PATCHER, 2.0)]
    assert sorted(groups["video_dit"].patches) == ["diffusion_model.blocks.0.self_attn.q.weight",
                                                   "diffusion_model.blocks.1.ffn.0.weight"]
    assert list(groups["video_dit_2"].patches) == ["diffusion_model.blocks.0.self_attn.q.weight"]
    assert list(groups["audio_dit"].patches) == ["diffusion_model.audio_dit.blocks.0.cross_attn.k.weight"]
    assert list(groups["dual_tower_bridge"].patches) == ["diffusion_model.dual_tower_bridge.audio_conditioners.0.q.weight"]
    layer = lora.components["video_dit"]["blocks.0.self_attn.q"]
    assert groups["video_dit"].patches["diffusion_model.blocks.0.self_attn.q.weight"] is layer  # no copies


def test_zero_strength_components_are_left_alone(lora):
    groups = patch_groups(lora, LoraStrengths(video_dit=0.0, video_dit_2=1.0, audio_dit=0.0, dual_tower_bridge=0.0))
    assert [group.component for group in groups] == ["video_dit_2"]


def test_a_video_only_lora_does_not_touch_the_audio_patcher():
    video_only = LoraFile("v.safetensors", {"video_dit": {"blocks.0.self_attn.q": weights()}})
    assert [group.patcher for group in patch_groups(video_only, LoraStrengths())] == ["video_dit"]


def test_a_lora_for_another_model_is_refused_with_its_unused_keys():
    foreign = LoraFile("/loras/sdxl_style.safetensors", {}, unmatched={"lora_te1_text_model.q.lora_down.weight": "x"})
    with pytest.raises(ValueError, match=r"lora_name: sdxl_style.safetensors adapts no layer .*lora_te1_text_model"):
        patch_groups(foreign, LoraStrengths())


def test_file_cache_reads_once_until_the_file_changes(tmp_path, lora):
    path = tmp_path / "demo.safetensors"
    path.write_bytes(b"v1")
    reads = []
    cache = LoraFileCache(size=2)

    def read():
        reads.append(1)
        return lora

    assert cache.get(path, "model-a", read) is lora
    assert cache.get(path, "model-a", read) is lora
    assert len(reads) == 1
    cache.get(path, "model-b", read)  # matched against another model: read again
    assert len(reads) == 2
    path.write_bytes(b"version 2")
    os.utime(path, ns=(0, 10**9))
    cache.get(path, "model-a", read)
    assert len(reads) == 3
