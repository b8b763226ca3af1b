"""Step cache (EasyCache rule): off is bit-identical, warm-up / last step / expert switch are always computed,
a reused pass is input + cached residual, and on the tiny model a positive threshold skips passes and stays
close to the exact run."""

from __future__ import annotations

import pytest
import torch

from mova_core.pipeline import MovaPipeline
from mova_core.sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, Guidance, sample
from mova_core.step_cache import WARMUP_PASSES, PassStats, StepCache
from mova_core.tiny import write_tiny_checkpoint
from test_sampler import BOUNDARY, SCHEDULER, make_inputs

DEFAULT_THRESHOLD = 0.05  # the value the README recommends (EasyCache's for Wan); not tuned to this model
# A random network's velocity is no smooth function of its input: on the tiny model the measured
# transformation rate k is 5-70 and each step's predicted change 0.3-0.9, so the default threshold rightly
# reuses nothing. A threshold of 1 does reuse passes; measured there (12 steps, text CFG 4, seed 11): 9 of
# 24 passes reused, relative L2 deviation of the latents 0.40 (video) / 0.32 (audio), against 1.20 / 1.08
# between two seeds and 0.25 / 0.15 for an exact 8-step run.
REUSING_THRESHOLD = 1.0
SEED_DISTANCE_FRACTION = 0.5  # the cached run must stay well inside the distance between two seeds


class SmoothModel:
    """A nonlinear velocity of the latents and the timestep that records the step of every computed call."""

    def __init__(self):
        self.calls: list[tuple[str, object, bool, float]] = []

    def __call__(self, expert, video, audio, context, video_t, audio_t, *, bridge):
        self.calls.append((expert, context, bridge, video_t.item()))
        shift = 0.1 if context == "neg" else 0.0
        return torch.tanh(video) * (1 + video_t / 1000) + shift, torch.sin(audio) * (1 + audio_t / 1000) - shift


def _run(model, steps: int = 8):
    video_noise, audio_noise, _, _ = make_inputs()
    return sample(model, SCHEDULER, video_noise, audio_noise, "pos", "neg", steps=steps, boundary_timestep=BOUNDARY,
                  guidance=Guidance(text_cfg=4.0))


def test_threshold_zero_returns_the_model_outputs_and_counts_passes():
    stats = PassStats()
    cached = _run(StepCache(SmoothModel(), 0.0, 8, stats))
    plain = _run(SmoothModel())
    assert cached[0].equal(plain[0]) and cached[1].equal(plain[1])
    assert (stats.computed, stats.skipped) == (16, 0)


def test_warmup_last_step_and_expert_switch_are_always_computed():
    inner, stats, steps = SmoothModel(), PassStats(), 8
    _run(StepCache(inner, float("inf"), steps, stats), steps)  # an infinite threshold reuses whatever it may
    timesteps = sorted({t for _, _, _, t in inner.calls}, reverse=True)
    all_steps = sorted({float(t) for t in SCHEDULER.schedule(steps).timesteps[:, 0]}, reverse=True)
    high = [t for t in all_steps if t >= BOUNDARY]
    low = [t for t in all_steps if t < BOUNDARY]
    expected = high[:WARMUP_PASSES] + low[:WARMUP_PASSES] + low[-1:]
    assert timesteps == pytest.approx(expected)
    for expert in (HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT):  # both passes of those steps, per expert
        assert {(c, b) for e, c, b, _ in inner.calls if e == expert} == {("pos", True), ("neg", True)}
    assert stats.computed == 2 * len(expected) and stats.skipped == 2 * steps - stats.computed


def test_a_reused_pass_is_the_input_plus_the_last_computed_residual():
    inner = SmoothModel()
    cache = StepCache(inner, float("inf"), 10)
    t = [torch.tensor([v]) for v in (990.0, 980.0, 970.0)]
    video, audio = torch.randn(1, 2, 1, 2, 2), torch.randn(1, 3, 5)
    outputs = [cache(HIGH_NOISE_EXPERT, video * s, audio * s, "pos", t[i], t[i], bridge=True)
               for i, s in enumerate((1.0, 0.9, 0.8))]
    assert len(inner.calls) == 2
    computed = inner(HIGH_NOISE_EXPERT, video * 0.9, audio * 0.9, "pos", t[1], t[1], bridge=True)
    for out, x, last_x, last_out in zip(outputs[2], (video * 0.8, audio * 0.8), (video * 0.9, audio * 0.9), computed):
        torch.testing.assert_close(out, x + (last_out - last_x), rtol=0, atol=1e-6)


def test_the_threshold_bounds_the_accumulated_change():
    """A small threshold computes more passes than a large one; each skip keeps the sum under it."""
    counts = []
    for threshold in (0.01, 0.2):
        stats = PassStats()
        _run(StepCache(SmoothModel(), threshold, 16, stats), 16)
        counts.append(stats.skipped)
    assert counts[0] < counts[1]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return MovaPipeline.from_pretrained(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model"),
                                        dtype=torch.float32)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_cache_on_the_tiny_model_skips_passes_and_stays_close(pipe):
    settings = dict(height=32, width=48, num_frames=5, fps=24.0, steps=12, text_cfg=4.0)
    exact = pipe.generate("rain on a tin roof", **settings, seed=11)
    assert (exact.stats.computed, exact.stats.skipped) == (24, 0)
    default = pipe.generate("rain on a tin roof", **settings, seed=11, cache_threshold=DEFAULT_THRESHOLD)
    assert default.stats.skipped == 0 and default.video_latents.equal(exact.video_latents)
    cached = pipe.generate("rain on a tin roof", **settings, seed=11, cache_threshold=REUSING_THRESHOLD)
    other_seed = pipe.generate("rain on a tin roof", **settings, seed=12)
    assert cached.stats.skipped > 0 and cached.stats.computed + cached.stats.skipped == 24
    for modality in ("video_latents", "audio_latents"):
        out, ref = getattr(cached, modality), getattr(exact, modality)
        assert torch.isfinite(out).all()
        assert _relative(out, ref) < SEED_DISTANCE_FRACTION * _relative(getattr(other_seed, modality), ref)
        print(f"{modality}: threshold {REUSING_THRESHOLD}: {cached.stats}; relative deviation {_relative(out, ref):.3f}")


def test_a_negative_threshold_is_refused(pipe):
    with pytest.raises(ValueError, match="cache_threshold"):
        StepCache(SmoothModel(), -0.1, 4)
