"""Sampling loop: replay of the official per-step predictions (refs/pipeline_cfg*) and loop behaviour."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import assert_close_to_reference
from mova_core.config import ModelIndex, SchedulerConfig
from mova_core.sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, Guidance, Pass, Start, StepInfo, sample
from mova_core.scheduler import FlowMatchPairScheduler

# The loop does the official float32 arithmetic on recorded predictions: float32 rounding only.
REL = 1e-5
PIPELINE_REFS = ("pipeline_cfg5", "pipeline_cfg1")


@dataclasses.dataclass
class Call:
    step: int
    context: str
    expert: str
    bridge: bool


class ReplayModel:
    """Returns the recorded official predictions of the step whose timestep it is given."""

    def __init__(self, ref):
        self.ref = ref
        self.steps = ref.meta["steps"]
        self.calls: list[Call] = []
        self.expected_video = ref["init/video_noise"]
        self.expected_audio = ref["init/audio_noise"]

    def __call__(self, expert, video_latents, audio_latents, context, video_timestep, audio_timestep, *, bridge):
        assert video_timestep.dtype == torch.float32 and video_timestep.shape == (1,)
        matches = [
            s["step"] for s in self.steps
            if abs(s["timestep"] - video_timestep.item()) < 1e-3 and abs(s["audio_timestep"] - audio_timestep.item()) < 1e-3
        ]
        assert len(matches) == 1, f"timesteps {video_timestep.item()}, {audio_timestep.item()} match steps {matches}"
        step = matches[0]
        if step > 0:
            self.expected_video = self.ref[f"step{step - 1}/latents"]
            self.expected_audio = self.ref[f"step{step - 1}/audio_latents"]
        assert_close_to_reference(video_latents, self.expected_video, REL, f"step {step} video input")
        assert_close_to_reference(audio_latents, self.expected_audio, REL, f"step {step} audio input")
        self.calls.append(Call(step, context, expert, bridge))
        return self.ref[f"step{step}/pred_{context}_video"], self.ref[f"step{step}/pred_{context}_audio"]


@pytest.mark.parity
@pytest.mark.parametrize("name", PIPELINE_REFS)
def test_replay_matches_official_loop(reference, name):
    ref = reference(name)
    meta = ref.meta
    scheduler = FlowMatchPairScheduler(SchedulerConfig.from_file(ref.checkpoint / "scheduler" / "scheduler_config.json"))
    boundary = scheduler.boundary_timestep(ModelIndex.from_file(ref.checkpoint / "model_index.json").boundary_ratio)
    assert boundary == pytest.approx(meta["boundary_timestep"])
    steps = meta["num_inference_steps"]
    assert_close_to_reference(scheduler.schedule(steps).timesteps, ref["paired_timesteps"], 1e-6, "paired_timesteps")

    model = ReplayModel(ref)
    infos: list[StepInfo] = []
    video, audio = sample(
        model, scheduler, ref["init/video_noise"], ref["init/audio_noise"], "posi", "nega",
        steps=steps, boundary_timestep=boundary, guidance=Guidance(text_cfg=meta["cfg_scale"]), callback=infos.append,
    )

    assert [info.index for info in infos] == list(range(steps))
    for info, expected in zip(infos, meta["steps"]):
        i = expected["step"]
        calls = [c for c in model.calls if c.step == i]
        assert [c.context for c in calls] == expected["model_calls"], f"step {i} model calls"
        assert {c.expert for c in calls} == {expected["expert"]} and info.expert == expected["expert"], f"step {i} expert"
        assert all(c.bridge for c in calls), f"step {i}: the official loop always runs with the bridge"
        assert info.video_timestep == pytest.approx(expected["timestep"], abs=1e-4)
        assert info.audio_timestep == pytest.approx(expected["audio_timestep"], abs=1e-4)
        for modality, t_from in (("video", info.video_timestep), ("audio", info.audio_timestep)):
            assert scheduler.sigma_at(t_from).item() == pytest.approx(expected[f"{modality}_sigma_from"], abs=1e-7)
        assert scheduler.sigma_at(expected["timestep"]).item() == pytest.approx(expected["video_sigma_from"], abs=1e-7)
        assert_close_to_reference(info.video_velocity, ref[f"step{i}/guided_video"], REL, f"step {i} guided video")
        assert_close_to_reference(info.audio_velocity, ref[f"step{i}/guided_audio"], REL, f"step {i} guided audio")
        assert_close_to_reference(info.video_latents, ref[f"step{i}/latents"], REL, f"step {i} video latents")
        assert_close_to_reference(info.audio_latents, ref[f"step{i}/audio_latents"], REL, f"step {i} audio latents")
    last = steps - 1
    assert_close_to_reference(video, ref[f"step{last}/latents"], REL, "final video latents")
    assert_close_to_reference(audio, ref[f"step{last}/audio_latents"], REL, "final audio latents")
    assert meta["steps"][-1]["video_sigma_to"] == 0.0 and meta["steps"][-1]["audio_sigma_to"] == 0.0


# ----------------------------------------------------------------------------------------------
# Loop behaviour with synthetic models.

SCHEDULER = FlowMatchPairScheduler(SchedulerConfig(shift=5.0))
BOUNDARY = 900.0


class ExactFlowModel:
    """Predicts the exact flow velocity ``noise - target`` for both modalities and records every call."""

    def __init__(self, video_noise, audio_noise, video_target, audio_target, offsets=None):
        self.velocity = (video_noise - video_target, audio_noise - audio_target)
        self.offsets = offsets or {}
        self.calls: list[tuple[str, object, bool, float, float]] = []

    def __call__(self, expert, video_latents, audio_latents, context, video_timestep, audio_timestep, *, bridge):
        self.calls.append((expert, context, bridge, video_timestep.item(), audio_timestep.item()))
        offset = self.offsets.get((context, bridge), 0.0)
        return self.velocity[0] + offset, self.velocity[1] + offset


def make_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for shape in ((1, 2, 2, 3, 4), (1, 3, 7), (1, 2, 2, 3, 4), (1, 3, 7))]


def run(model=None, *, steps=4, guidance=Guidance(), scheduler=SCHEDULER, **kwargs):
    video_noise, audio_noise, video_target, audio_target = make_inputs()
    model = model or ExactFlowModel(video_noise, audio_noise, video_target, audio_target)
    out = sample(model, scheduler, video_noise, audio_noise, "pos", "neg", steps=steps,
                 boundary_timestep=BOUNDARY, guidance=guidance, **kwargs)
    return model, out


@pytest.mark.parametrize(
    "text_cfg, bridge_cfg, passes",
    [(1.0, 1.0, [("pos", True)]),
     (5.0, 1.0, [("pos", True), ("neg", True)]),
     (1.0, 2.0, [("pos", True), ("neg", True), ("neg", False)]),
     (5.0, 0.0, [("pos", True), ("neg", True), ("neg", False)]),
     (4.0, 3.0, [("pos", True), ("neg", True), ("neg", False)])],
)
def test_runs_only_the_passes_the_guidance_needs(text_cfg, bridge_cfg, passes):
    model, _ = run(steps=3, guidance=Guidance(text_cfg, bridge_cfg))
    assert len(model.calls) == 3 * len(passes)
    for step in range(3):
        step_calls = model.calls[step * len(passes):(step + 1) * len(passes)]
        assert [(context, bridge) for _, context, bridge, _, _ in step_calls] == passes


def test_text_cfg_is_the_official_formula_at_bridge_cfg_one():
    pos, neg, off = torch.randn(3, 5, 6).unbind(0)
    guided = Guidance(text_cfg=5.0, bridge_cfg=1.0).combine({Pass.POSITIVE: pos, Pass.NEGATIVE: neg})
    assert torch.equal(guided, neg + 5.0 * (pos - neg))
    # The three-pass formula at sB = 1 is the same number up to rounding: the bridge-off pass cancels.
    three_pass = Guidance(text_cfg=5.0, bridge_cfg=1.0).combine(
        {Pass.POSITIVE: pos, Pass.NEGATIVE: neg, Pass.NEGATIVE_BRIDGE_OFF: off})
    torch.testing.assert_close(three_pass, guided)
    assert torch.equal(Guidance(1.0, 1.0).combine({Pass.POSITIVE: pos}), pos)


def test_bridge_guidance_formula_uses_the_bridge_off_pass():
    pos, neg, off = torch.randn(3, 5, 6).unbind(0)
    guidance = Guidance(text_cfg=4.0, bridge_cfg=2.5)
    guided = guidance.combine({Pass.POSITIVE: pos, Pass.NEGATIVE: neg, Pass.NEGATIVE_BRIDGE_OFF: off})
    torch.testing.assert_close(guided, off + 2.5 * (neg - off) + 4.0 * (pos - neg))

    # In the loop: shifting only the bridge-off prediction by d moves the velocity by (1 - sB) * d.
    video_noise, audio_noise, video_target, audio_target = make_inputs()
    infos = {}
    for d in (0.0, 1.0):
        model = ExactFlowModel(video_noise, audio_noise, video_target, audio_target, offsets={("neg", False): d})
        collected = []
        sample(model, SCHEDULER, video_noise, audio_noise, "pos", "neg", steps=2, boundary_timestep=BOUNDARY,
               guidance=guidance, callback=collected.append)
        infos[d] = collected[0]
    torch.testing.assert_close(infos[1.0].video_velocity - infos[0.0].video_velocity,
                               torch.full_like(video_noise, 1 - 2.5))
    torch.testing.assert_close(infos[1.0].audio_velocity - infos[0.0].audio_velocity,
                               torch.full_like(audio_noise, 1 - 2.5))


@pytest.mark.parametrize("guidance", [Guidance(1.0, 1.0), Guidance(5.0, 1.0), Guidance(5.0, 2.0)])
def test_cancellation_is_checked_before_every_pass(guidance):
    checks = []
    model, _ = run(steps=3, guidance=guidance, check_cancelled=lambda: checks.append(1))
    assert len(checks) == len(model.calls) == 3 * len(guidance.passes)


def test_cancellation_interrupts_before_the_first_pass_of_a_step():
    class Interrupted(Exception):
        pass

    passes = len(Guidance().passes)
    checks = []

    def check():
        checks.append(1)
        if len(checks) == passes + 1:  # first check of step 1
            raise Interrupted

    video_noise, audio_noise, video_target, audio_target = make_inputs()
    model = ExactFlowModel(video_noise, audio_noise, video_target, audio_target)
    steps_done = []
    with pytest.raises(Interrupted):
        sample(model, SCHEDULER, video_noise, audio_noise, "pos", "neg", steps=4, boundary_timestep=BOUNDARY,
               check_cancelled=check, callback=steps_done.append)
    assert len(model.calls) == passes
    assert [info.index for info in steps_done] == [0]


def test_callback_reports_states_and_exact_clean_estimate():
    video_noise, audio_noise, video_target, audio_target = make_inputs()
    infos: list[StepInfo] = []
    _, (video, audio) = run(steps=5, callback=infos.append)
    schedule = SCHEDULER.schedule(5)
    assert [info.index for info in infos] == list(range(5)) and {info.total for info in infos} == {5}
    assert [info.video_timestep for info in infos] == schedule.video_timesteps.tolist()
    assert [info.audio_timestep for info in infos] == schedule.audio_timesteps.tolist()
    # With the exact flow velocity every clean estimate is the target and the end state reaches it.
    for info in infos:
        torch.testing.assert_close(info.video_denoised, video_target, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(info.audio_denoised, audio_target, rtol=1e-5, atol=1e-5)
        assert info.video_latents.dtype == info.audio_latents.dtype == torch.float32
    assert torch.equal(infos[-1].video_latents, video) and torch.equal(infos[-1].audio_latents, audio)
    torch.testing.assert_close(video, video_target, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(audio, audio_target, rtol=1e-5, atol=1e-5)
    # Intermediate states lie on the snapped flow path.
    sigma = SCHEDULER.sigma_at(schedule.video_timesteps[1])
    torch.testing.assert_close(infos[0].video_latents, (1 - sigma) * video_target + sigma * video_noise)


def test_expert_switches_once_below_the_boundary():
    model, _ = run(steps=10, guidance=Guidance(1.0, 1.0))
    timesteps = SCHEDULER.schedule(10).video_timesteps.tolist()
    expected = [HIGH_NOISE_EXPERT if t >= BOUNDARY else LOW_NOISE_EXPERT for t in timesteps]
    assert expected.count(HIGH_NOISE_EXPERT) >= 1 and expected.count(LOW_NOISE_EXPERT) >= 1
    assert [call[0] for call in model.calls] == expected


def test_expert_never_switches_back():
    # inverse_timesteps runs upwards: the first step is below the boundary, later ones above it.
    upwards = FlowMatchPairScheduler(SchedulerConfig(shift=5.0, inverse_timesteps=True))
    timesteps = upwards.schedule(6).video_timesteps.tolist()
    assert timesteps[0] < BOUNDARY < timesteps[-1]
    model, _ = run(steps=6, guidance=Guidance(1.0, 1.0), scheduler=upwards)
    assert [call[0] for call in model.calls] == [LOW_NOISE_EXPERT] * 6


def test_dual_shift_changes_the_audio_timesteps_only():
    official, _ = run(steps=6, guidance=Guidance(1.0, 1.0))
    dual, _ = run(steps=6, guidance=Guidance(1.0, 1.0), audio_shift=2.0)
    assert [c[3] for c in dual.calls] == [c[3] for c in official.calls]
    assert [c[0] for c in dual.calls] == [c[0] for c in official.calls]
    assert [c[4] for c in official.calls] == [c[3] for c in official.calls]
    assert all(d[4] < o[4] for d, o in zip(dual.calls[1:], official.calls[1:]))


def test_denoising_strength_starts_from_noised_init():
    """Start = official ``add_noise`` at the first schedule sigma; steps then use grid-snapped sigmas."""
    video_noise, audio_noise, video_target, audio_target = make_inputs()
    model = ExactFlowModel(video_noise, audio_noise, video_target, audio_target)
    video, audio = sample(model, SCHEDULER, video_noise, audio_noise, "pos", "neg", steps=4,
                          boundary_timestep=BOUNDARY, video=Start(video_target, 0.6), audio=Start(audio_target, 0.6))
    schedule = SCHEDULER.schedule(4, denoising_strength=0.6)
    sigma_min = SCHEDULER.config.sigma_min
    start = sigma_min + (1 - sigma_min) * 0.6
    assert schedule.sigmas[0, 0].item() == pytest.approx(5 * start / (1 + 4 * start), abs=1e-6)
    assert model.calls[0][3] == schedule.video_timesteps[0].item()
    # x_end = x_start - sigma'(t0) * v with x_start = (1 - s0) * init + s0 * noise and v = noise - init.
    snap_gap = schedule.sigmas[0, 0] - SCHEDULER.sigma_at(schedule.video_timesteps[0])
    torch.testing.assert_close(video, video_target + snap_gap * (video_noise - video_target), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(audio, audio_target + snap_gap * (audio_noise - audio_target), rtol=1e-5, atol=1e-5)


def test_bad_init_arguments_raise():
    video_noise, audio_noise, video_target, _ = make_inputs()
    with pytest.raises(ValueError, match="video strength 0.5 needs video latents"):
        run(video=Start(strength=0.5))
    with pytest.raises(ValueError, match="audio init latents have shape"):
        run(video=Start(video_target, 0.5), audio=Start(torch.zeros(1, 3, 8), 0.5))


def test_each_modality_has_its_own_strength():
    """The audio column starts at its own sigma (official dual_sigma_shift audio_denoising_strength)."""
    video_noise, audio_noise, video_target, audio_target = make_inputs()
    model, _ = run(audio=Start(audio_target, 0.4), guidance=Guidance(1.0, 1.0))
    schedule = SCHEDULER.schedule(4, audio_denoising_strength=0.4)
    assert [c[3] for c in model.calls] == schedule.video_timesteps.tolist()
    assert [c[4] for c in model.calls] == schedule.audio_timesteps.tolist()
    assert schedule.audio_timesteps[0] < schedule.video_timesteps[0] == 1000.0


def test_a_frozen_modality_stays_clean_at_timestep_0_while_the_other_is_denoised():
    video_noise, audio_noise, video_target, audio_target = make_inputs()
    seen = []

    class Recording(ExactFlowModel):
        def __call__(self, expert, video_latents, audio_latents, *args, **kwargs):
            seen.append(audio_latents.clone())
            return super().__call__(expert, video_latents, audio_latents, *args, **kwargs)

    model = Recording(video_noise, audio_noise, video_target, audio_target)
    _, (video, audio) = run(model, audio=Start(audio_target, 0.0))
    assert all(torch.equal(latents, audio_target) for latents in seen) and torch.equal(audio, audio_target)
    assert {c[4] for c in model.calls} == {0.0}
    torch.testing.assert_close(video, video_target, rtol=1e-5, atol=1e-5)
    frozen_video, _ = run(video=Start(video_target, 0.0))
    assert {c[3] for c in frozen_video.calls} == {0.0}
    assert {c[0] for c in frozen_video.calls} == {LOW_NOISE_EXPERT}, "a clean video is the low-noise expert's"


def test_kept_latents_are_reimposed_at_the_next_sigma_and_end_exact():
    video_noise, audio_noise, video_target, audio_target = make_inputs()
    kept = torch.randn(audio_target.shape, generator=torch.Generator().manual_seed(9))
    mask = torch.zeros(1, 1, audio_target.shape[-1])
    mask[..., :3] = 1.0
    states = []
    _, (_, audio) = run(audio=Start(kept=kept, kept_mask=mask), callback=lambda info: states.append(info))
    assert torch.equal(audio[..., :3], kept[..., :3])
    torch.testing.assert_close(audio[..., 3:], audio_target[..., 3:], rtol=1e-5, atol=1e-5)
    sigma = SCHEDULER.sigma_at(SCHEDULER.schedule(4).audio_timesteps[1])
    torch.testing.assert_close(states[0].audio_latents[..., :3], (1 - sigma) * kept[..., :3] + sigma * audio_noise[..., :3])
