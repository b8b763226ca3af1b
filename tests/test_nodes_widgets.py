"""Widget specs and the checks the MOVA nodes run before any model (no ComfyUI needed)."""

from __future__ import annotations

import re

import pytest

from comfyui_mova_av.mova_core.settings import BOUNDS, ModelGeometry, GenerationSettings
from comfyui_mova_av.nodes.widgets import (DECODE, LORA_STRENGTHS, SAMPLER, NODE_NAMES, NumberSpec, choice_problem,
                                           settings_problem, range_problems, sampler_settings, tile_problem)

GOOD_CLIP = dict(width=640, height=352, frames=193, fps=24.0, steps=50)


def test_guidance_sliders_match_the_front_end_contract():
    text, bridge = SAMPLER["text_cfg"], SAMPLER["bridge_cfg"]
    assert (text.default, text.low, text.high, text.step, text.integer) == (5.0, 0.0, 20.0, 0.1, False)
    assert (bridge.default, bridge.low, bridge.high, bridge.step, bridge.integer) == (1.0, 0.0, 10.0, 0.1, False)


def test_denoise_is_like_ksamplers():
    denoise = SAMPLER["denoise"]
    assert (denoise.default, denoise.low, denoise.high, denoise.step, denoise.integer) == (1.0, 0.0, 1.0, 0.01, False)
    assert "denoise=1.5 is outside 0 .. 1" in denoise.problem(1.5)


def test_defaults_are_official_and_valid():
    assert settings_problem(**{name: SAMPLER[name].default for name in GOOD_CLIP}) is None
    assert (SAMPLER["steps"].default, SAMPLER["video_shift"].default, SAMPLER["boundary"].default) == (50, 0.0, -1.0)
    for spec in [*SAMPLER.values(), *LORA_STRENGTHS.values(), *DECODE.values()]:
        assert spec.problem(spec.default) is None, spec.name


@pytest.mark.parametrize("changes, expected", [
    ({"width": 100}, r"width=100 must be a positive multiple of 16; nearest valid value: 96"),
    ({"height": 360}, r"height=360 .*nearest valid value: 352"),
    ({"frames": 192}, r"frames=192 must be 4k\+1 .*nearest valid value: 193"),
    ({"frames": 6}, r"frames=6 .*nearest valid value: 5"),
    ({"width": 5000}, r"width=5000 is outside 16 .. 4096; nearest valid value: 4096"),
    ({"steps": 0}, r"steps=0 is outside 1 .. 1000; nearest valid value: 1"),
    ({"fps": 0.0}, r"fps=0 is outside 1 .. 120"),
    ({"fps": float("nan")}, r"fps=nan must be a finite number"),
    ({"frames": 2}, r"frames=2 .*nearest valid value: 1"),
    ({"frames": 3}, r"frames=3 .*nearest valid value: 5"),
    ({"frames": 5.5}, r"frames=5.5 must be a whole number"),
    ({"width": True}, r"width=True must be a whole number"),
])
def test_bad_clip_settings_name_the_input_and_the_fix(changes, expected):
    problem = settings_problem(**{**GOOD_CLIP, **changes})
    assert problem is not None and re.search(expected, problem), problem


def test_model_specific_multiples_are_used_when_given():
    assert settings_problem(**{**GOOD_CLIP, "width": 648}, geometry=ModelGeometry((8, 8), 4)) is None
    assert "multiple of 32" in settings_problem(**{**GOOD_CLIP, "width": 656}, geometry=ModelGeometry((16, 32), 4))
    assert "8k+1" in settings_problem(**{**GOOD_CLIP, "frames": 197}, geometry=ModelGeometry((16, 16), 8))


def test_range_problems_ignores_unknown_names_and_lists_every_bad_value():
    problems = range_problems(SAMPLER, {"text_cfg": 25.0, "bridge_cfg": -1.0, "not_a_widget": 1e9})
    assert len(problems) == 2 and problems[0].startswith("text_cfg=25") and problems[1].startswith("bridge_cfg=-1")


def test_integer_spec_rejects_fractions_and_float_spec_accepts_them():
    integer = NumberSpec("n", 1, 0, 10, 1, "", integer=True)
    assert "whole number" in integer.problem(2.5) and integer.problem(3) is None and integer.problem(3.0) is None
    assert NumberSpec("x", 1.0, 0.0, 10.0, 0.1, "").problem(2.5) is None


def test_choice_problem_lists_the_options_and_the_fix():
    assert choice_problem("weight_dtype", "bf16", ["bf16", "fp16"]) is None
    message = choice_problem("weight_dtype", "int4", ["bf16", "fp16"], "Pick a dtype.")
    assert message == "weight_dtype='int4' is not available; choose one of ['bf16', 'fp16']. Pick a dtype."
    long = choice_problem("lora_name", "x", [f"l{i}" for i in range(30)])
    assert "(18 more)" in long


@pytest.mark.parametrize("size, overlap, expected", [
    (256, 64, None),
    (250, 64, r"tile_size=250 must be a multiple of 8 pixels; nearest valid value: 248"),
    (256, 60, r"tile_overlap=60 must be a multiple of 8"),
    (256, 256, r"tile_overlap=256 must be smaller than tile_size=256"),
    (32, 0, r"tile_size=32 is outside 64 .. 2048"),
])
def test_tile_settings(size, overlap, expected):
    problem = tile_problem(True, size, overlap)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and re.search(expected, problem), problem
    assert tile_problem(False, size, overlap) is None  # untiled decode ignores the tile widgets


def test_checkpoint_value_widgets_mean_none_and_other_values_override():
    defaults = {name: spec.default for name, spec in SAMPLER.items()}
    settings = sampler_settings({**defaults, "seed": 3})
    assert (settings.video_shift, settings.audio_shift, settings.boundary_ratio) == (None, None, None)
    assert settings.num_frames == 193 and settings.denoising_strength == 1.0 and settings.seed == 3
    overridden = sampler_settings({**defaults, "seed": 3, "video_shift": 3.0, "boundary": 0.0})
    assert (overridden.video_shift, overridden.audio_shift, overridden.boundary_ratio) == (3.0, None, 0.0)
    assert SAMPLER["boundary"].minimum == -1.0 and SAMPLER["boundary"].low == 0.0
    assert SAMPLER["boundary"].problem(-1.0) is None
    assert "(or -1 = the checkpoint's value)" in SAMPLER["boundary"].problem(-0.5)
    assert "(or 0 = the checkpoint's value)" in SAMPLER["video_shift"].problem(0.05)


def test_sampler_widgets_take_the_cores_documented_ranges():
    core_names = {widget: core for core, widget in NODE_NAMES.items()}
    for name, spec in SAMPLER.items():
        bounds = BOUNDS[core_names.get(name, name)]
        assert (spec.low, spec.high, spec.integer) == (bounds.low, bounds.high, bounds.integer), name
        assert name in {f.replace("num_frames", "frames") for f in GenerationSettings.__dataclass_fields__} | {
            "boundary", "denoise"}, name
