"""Flow-matching pair scheduler: parity with ``refs/scheduler.*`` and the official config options."""

from __future__ import annotations

import math
from typing import Any, Mapping

import pytest
import torch

from conftest import assert_close_to_reference
from mova_core.config import ConfigError, SchedulerConfig
from mova_core.scheduler import FlowMatchPairScheduler

# Schedule maths is the official float32 arithmetic: agreement to float32 rounding.
REL = 1e-6
# Keys of a scheduler.json entry that are not SchedulerConfig fields.
CALL_KEYS = {"key", "num_inference_steps", "denoising_strength", "visual_shift", "audio_shift", "scheduler_shift"}


def build_scheduler(constants: Mapping[str, Any], entry: Mapping[str, Any]) -> FlowMatchPairScheduler:
    """Scheduler for one scheduler.json entry: the constants plus the entry's config keys."""
    values = dict(constants)
    values.update({k: v for k, v in entry.items() if k not in CALL_KEYS})
    if "scheduler_shift" in entry:
        values["shift"] = entry["scheduler_shift"]
    return FlowMatchPairScheduler(SchedulerConfig.from_dict(values, source=f"scheduler.json {entry.get('key', '')}"))


@pytest.mark.parity
def test_settings_match_reference(reference):
    ref = reference("scheduler")
    settings = ref.meta["settings"]
    assert settings, "scheduler.json lists no settings"
    for setting in settings:
        key, steps = setting["key"], setting["num_inference_steps"]
        scheduler = build_scheduler(ref.meta["constants"], setting)
        strength = setting.get("denoising_strength", 1.0)
        schedule = scheduler.schedule(steps, denoising_strength=strength)

        assert_close_to_reference(scheduler.train_timesteps, ref[f"{key}/train_timesteps"], REL, f"{key} train_timesteps")
        assert_close_to_reference(scheduler.train_sigmas, ref[f"{key}/train_sigmas"], REL, f"{key} train_sigmas")
        assert_close_to_reference(scheduler.sigmas(steps, denoising_strength=strength), ref[f"{key}/sigmas"], REL, f"{key} sigmas")
        assert_close_to_reference(schedule.video_timesteps, ref[f"{key}/timesteps"], REL, f"{key} timesteps")
        assert_close_to_reference(schedule.timesteps, ref[f"{key}/pair_timesteps"], REL, f"{key} pair_timesteps")
        assert_close_to_reference(schedule.sigmas, ref[f"{key}/pair_sigmas"], REL, f"{key} pair_sigmas")

        x, v = ref[f"{key}/x"], ref[f"{key}/v"]
        timesteps = [*schedule.video_timesteps, None]
        sigma_from = torch.stack([scheduler.sigma_at(t) for t in timesteps[:-1]])
        sigma_to = torch.stack([scheduler.sigma_at(t) for t in timesteps[1:]])
        x_next = torch.stack([scheduler.step(v, x, t_from, t_to) for t_from, t_to in zip(timesteps[:-1], timesteps[1:])])
        assert_close_to_reference(sigma_from, ref[f"{key}/step_sigma_from"], REL, f"{key} step_sigma_from")
        assert_close_to_reference(sigma_to, ref[f"{key}/step_sigma_to"], REL, f"{key} step_sigma_to")
        assert_close_to_reference(x_next, ref[f"{key}/step_x_next"], REL, f"{key} step_x_next")


@pytest.mark.parity
def test_dual_sigma_shift_matches_reference(reference):
    ref = reference("scheduler")
    dual = ref.meta["dual_sigma_shift"]
    key = dual["key"]
    scheduler = build_scheduler(ref.meta["constants"], dual)
    schedule = scheduler.schedule(
        dual["num_inference_steps"], video_shift=dual["visual_shift"], audio_shift=dual["audio_shift"]
    )
    assert_close_to_reference(schedule.timesteps, ref[f"{key}/pair_timesteps"], REL, "dual pair_timesteps")
    assert_close_to_reference(schedule.sigmas, ref[f"{key}/pair_sigmas"], REL, "dual pair_sigmas")
    audio_sigma_from = torch.stack([scheduler.sigma_at(t) for t in schedule.audio_timesteps])
    assert_close_to_reference(audio_sigma_from, ref[f"{key}/audio_step_sigma_from"], REL, "dual audio_step_sigma_from")


@pytest.mark.parity
def test_snap_probes_match_reference(reference):
    ref = reference("scheduler")
    scheduler = build_scheduler(ref.meta["constants"], ref.meta["snap"])
    snapped = torch.stack([scheduler.sigma_at(t) for t in ref["snap/probe_timesteps"]])
    assert_close_to_reference(snapped, ref["snap/probe_sigmas"], REL, "snap probe_sigmas")


def test_extra_one_step_matches_spec_values():
    """Spec 9.2: N = 50, shift 5, extra_one_step gives t = 1000, 995.947, ..., 899.301 (index 18), ..., 105.035."""
    schedule = FlowMatchPairScheduler(SchedulerConfig(shift=5.0, extra_one_step=True)).schedule(50)
    t = schedule.video_timesteps
    assert t.dtype == torch.float32 and t.shape == (50,)
    assert t[0].item() == 1000.0
    assert t[1].item() == pytest.approx(995.947, abs=1e-3)
    assert t[18].item() == pytest.approx(899.301, abs=1e-3)
    assert t[-1].item() == pytest.approx(105.035, abs=1e-3)
    assert torch.equal(schedule.audio_timesteps, t)


def test_snap_uses_training_grid_not_schedule():
    scheduler = FlowMatchPairScheduler(SchedulerConfig(shift=5.0))
    t = scheduler.schedule(3).video_timesteps[1]
    assert scheduler.sigma_at(t).item() != pytest.approx(t.item() / 1000, abs=1e-5)
    assert scheduler.sigma_at(t).item() in scheduler.train_sigmas.tolist()


def test_snap_takes_first_index_on_ties():
    scheduler = FlowMatchPairScheduler(SchedulerConfig())
    scheduler.train_timesteps = torch.tensor([3.0, 2.0, 1.0, 0.0])
    scheduler.train_sigmas = torch.tensor([0.3, 0.2, 0.1, 0.0])
    assert scheduler.sigma_at(1.5).item() == pytest.approx(0.2)
    assert scheduler.sigma_at(torch.tensor(2.5)).item() == pytest.approx(0.3)


def test_last_step_goes_to_zero_or_one_when_backwards():
    x, v = torch.ones(2), torch.full((2,), 2.0)
    forward = FlowMatchPairScheduler(SchedulerConfig(shift=5.0))
    t_last = forward.schedule(4).video_timesteps[-1]
    assert torch.equal(forward.step(v, x, t_last, None), x - 2.0 * forward.sigma_at(t_last))
    for flag in ("inverse_timesteps", "reverse_sigmas"):
        backwards = FlowMatchPairScheduler(SchedulerConfig(shift=5.0, **{flag: True}))
        assert backwards.sigma_at(None).item() == 1.0


def test_inverse_and_reverse_options():
    base = FlowMatchPairScheduler(SchedulerConfig(shift=3.0)).sigmas(6)
    inverse = FlowMatchPairScheduler(SchedulerConfig(shift=3.0, inverse_timesteps=True)).sigmas(6)
    reverse = FlowMatchPairScheduler(SchedulerConfig(shift=3.0, reverse_sigmas=True)).sigmas(6)
    assert torch.equal(inverse, torch.flip(base, dims=[0]))
    assert torch.equal(reverse, 1 - base)


def test_exponential_shift_uses_mu_and_needs_it():
    mu = 0.7
    scheduler = FlowMatchPairScheduler(SchedulerConfig(exponential_shift=True, exponential_shift_mu=mu))
    s = torch.linspace(1.0, SchedulerConfig().sigma_min, 5, dtype=torch.float64)
    expected = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    torch.testing.assert_close(scheduler.sigmas(5).double(), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="exponential_shift_mu"):
        FlowMatchPairScheduler(SchedulerConfig(exponential_shift=True))
    with pytest.raises(ValueError, match="exponential_shift"):
        scheduler.schedule(5, audio_shift=2.0)


def test_shift_terminal_sets_last_sigma():
    sigmas = FlowMatchPairScheduler(SchedulerConfig(shift=5.0, shift_terminal=0.1)).sigmas(8)
    assert sigmas[-1].item() == pytest.approx(0.1, abs=1e-6)
    assert sigmas[0].item() == pytest.approx(1.0, abs=1e-6)


def test_denoising_strength_starts_lower():
    config = SchedulerConfig(shift=1.0)
    sigmas = FlowMatchPairScheduler(config).sigmas(4, denoising_strength=0.5)
    assert sigmas[0].item() == pytest.approx(config.sigma_min + (1 - config.sigma_min) * 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="denoising_strength"):
        FlowMatchPairScheduler(config).sigmas(4, denoising_strength=0.0)


def test_dual_shift_changes_audio_column_only():
    scheduler = FlowMatchPairScheduler(SchedulerConfig(shift=5.0))
    official = scheduler.schedule(6)
    dual = scheduler.schedule(6, audio_shift=2.0)
    assert torch.equal(official.video_timesteps, official.audio_timesteps)
    assert torch.equal(dual.video_timesteps, official.video_timesteps)
    assert (dual.audio_timesteps[1:] < official.audio_timesteps[1:]).all()


def test_bad_values_raise():
    with pytest.raises(ConfigError, match="shift"):
        FlowMatchPairScheduler(SchedulerConfig(shift=0.0))
    with pytest.raises(ValueError, match="steps"):
        FlowMatchPairScheduler(SchedulerConfig()).schedule(0)
