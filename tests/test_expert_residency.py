"""The native MODEL's expert residency plan (no ComfyUI): which experts are listed for loading in a run."""

from __future__ import annotations

from comfyui_mova_av.nodes.expert_residency import experts_needed, resident_experts, skipped_prefixes
from mova_core.sampler import HIGH_NOISE_EXPERT as HIGH, LOW_NOISE_EXPERT as LOW, expert_at

SIZES = {HIGH: 28, LOW: 28}


def test_the_needed_experts_follow_the_timesteps_in_order():
    at_875 = lambda t: expert_at(t, 875.0)  # noqa: E731
    assert experts_needed([1000.0, 900.0, 875.0, 874.9, 300.0], at_875) == [HIGH, LOW]
    assert experts_needed([800.0, 300.0], at_875) == [LOW], "a second stage below the boundary needs one expert"
    assert experts_needed([], at_875) == []


def test_everything_stays_resident_when_it_fits_or_there_is_no_device_limit():
    assert resident_experts([HIGH, LOW], SIZES, shared_bytes=6, free_bytes=None) is None
    assert resident_experts([HIGH, LOW], SIZES, shared_bytes=6, free_bytes=62) is None
    assert resident_experts([LOW], SIZES, shared_bytes=6, free_bytes=34) is None


def test_short_memory_lists_only_the_expert_in_use():
    assert resident_experts([HIGH, LOW], SIZES, shared_bytes=6, free_bytes=61) == frozenset({HIGH})
    assert resident_experts([LOW], SIZES, shared_bytes=6, free_bytes=33) == frozenset({LOW})


def test_the_left_out_expert_is_skipped_by_module_name():
    assert skipped_prefixes(None, (HIGH, LOW)) == ()
    prefixes = skipped_prefixes(frozenset({HIGH}), (HIGH, LOW))
    assert prefixes == (f"diffusion_model.{LOW}.",)
    assert not f"diffusion_model.{HIGH}.blocks.0.ffn.0".startswith(prefixes), "video_dit is a prefix of video_dit_2"
    assert f"diffusion_model.{LOW}.blocks.0.ffn.0".startswith(prefixes)
