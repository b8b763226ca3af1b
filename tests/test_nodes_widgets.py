"""Widget specs and the checks the MOVA nodes run before any model (no ComfyUI needed)."""

from __future__ import annotations

import re

import pytest

from comfyui_mova_av.nodes.widgets import (DECODE, LORA_STRENGTHS, SAMPLER, NumberSpec, choice_problem, clip_problem,
                                           range_problems, tile_problem)

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
    assert clip_problem(**{name: SAMPLER[name].default for name in GOOD_CLIP}) is None
    assert (SAMPLER["steps"].default, SAMPLER["video_shift"].default, SAMPLER["boundary"].default) == (50, 5.0, 0.9)
    for spec in [*SAMPLER.values(), *LORA_STRENGTHS.values(), *DECODE.values()]:
        assert spec.problem(spec.default) is None, spec.name


@pytest.mark.parametrize("changes, expected", [
    ({"width": 100}, r"width=100 must be a positive multiple of 16; nearest valid value: 96"),
    ({"height": 360}, r"height=360 .*nearest valid value: 352"),
    ({"frames": 192}, r"frames=192 must be 4k\+1 .*nearest valid value: 193"),
    ({"frames": 6}, r"frames=6 .*nearest valid value: 5"),
    ({"width": 5000}, r"width=5000 is outside 16 .. 4096; nearest valid value: 4096"),
    ({"steps": 0}, r"steps=0 is outside 1 .. 200; nearest valid value: 1"),
    ({"fps": 0.0}, r"fps=0 is outside 1 .. 120"),
    ({"fps": float("nan")}, r"fps=nan must be a number"),
    ({"frames": 5.5}, r"frames=5.5 must be a whole number"),
    ({"width": True}, r"width=True must be a whole number"),
])
def test_bad_clip_settings_name_the_input_and_the_fix(changes, expected):
    problem = clip_problem(**{**GOOD_CLIP, **changes})
    assert problem is not None and re.search(expected, problem), problem


def test_model_specific_multiples_are_used_when_given():
    assert clip_problem(**{**GOOD_CLIP, "width": 648}, spatial_multiple=8) is None
    assert "multiple of 32" in clip_problem(**{**GOOD_CLIP, "width": 656}, spatial_multiple=32)
    assert "8k+1" in clip_problem(**{**GOOD_CLIP, "frames": 197}, temporal_factor=8)


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
