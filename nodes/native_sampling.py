"""What the native-path nodes do: build and split the AV latent, MOVA's schedule and noise, bridge CFG as a patch.

Every decision is the core's (:class:`~mova_core.pipeline.MovaPipeline` stages, the scheduler, the seeded
noise, :class:`~mova_core.sampler.Guidance`); this module moves it into ComfyUI's values.
"""

from __future__ import annotations

import uuid
from typing import Any

import torch

from tqdm.auto import trange

import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import node_helpers

from ..mova_core.pipeline import seeded_noise
from ..mova_core.sampler import Guidance
from ..mova_core.settings import GenerationSettings
from .av_latent import AVLayout, av_latent, clip_settings, is_nested, layout_of
from .comfy_model import MovaModel
from .latents import GIVEN_WAVEFORM, audio_latent, video_latent
from .av_denoiser import BRIDGE_OPTION, CONDITION_KEY, FPS_KEY, GIVEN_AUDIO_KEY
from .native_model import MovaBaseModel, check_noise_mask, nested_tensor_class
from .widgets import NODE_NAMES


def build_av_latent(model: MovaModel, positive: Any, negative: Any, *, width: int, height: int, frames: int | None,
                    fps: float, start_image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                    audio: dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The conditioning with the I2V condition and fps added, and an AV LATENT of the clip (``frames`` None: as long
    as ``audio``). Connected ``audio`` is kept: its part of the noise mask is 0, so the model sees it clean."""
    pipe = model.pipeline
    settings = GenerationSettings(height=height, width=width, num_frames=frames, fps=fps)
    driving = pipe.drive(settings, audio=audio, audio_mode="freeze", names=NODE_NAMES, residency=model.residency)
    run = pipe.prepare(driving.settings, image=start_image, last_image=end_image, names=NODE_NAMES,
                       audio_init=driving.audio_init)
    condition = pipe.condition(run, residency=model.residency).to(mm.intermediate_device())
    layout = AVLayout(run.video_shape[1:], run.audio_shape[1:])  # type: ignore[arg-type]
    given = driving.audio_init
    sound = torch.zeros(run.audio_shape) if given is None else given.float().cpu()
    nested = nested_tensor_class()
    samples = layout.samples(torch.zeros(run.video_shape), sound, nested).to(mm.intermediate_device())
    s = run.settings
    clip = {"fps": s.fps, "frames": s.num_frames, "height": s.height, "width": s.width,
            "sample_rate": pipe.audio_vae.sample_rate, "num_samples": run.num_samples}
    values = {CONDITION_KEY: condition, FPS_KEY: s.fps}
    if given is not None:  # the model and MOVA Split AV Latent take the kept sound from here (see _kept_values)
        clip[GIVEN_WAVEFORM] = driving.kept("audio")
        clip[GIVEN_AUDIO_KEY] = values[GIVEN_AUDIO_KEY] = sound.to(mm.intermediate_device())
    return (node_helpers.conditioning_set_values(positive, values), node_helpers.conditioning_set_values(negative, values),
            av_latent(samples, layout, clip, None if given is None else layout.modality_values(1.0, 0.0, nested)))


def split_av_latent(model: MovaModel, latent: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An AV LATENT -> a raw Wan 2.1 video LATENT (native VAEDecode reads it) and an audio LATENT (MOVA Decode); a kept
    sound comes out as given (after a two-stage run the sampled latent's audio part holds leftover noise)."""
    layout = layout_of(latent, "av_latent")
    samples = latent["samples"]
    if samples.shape[0] != 1:
        raise ValueError(f"av_latent: holds a batch of {samples.shape[0]} videos; MOVA nodes take one video at a time.")
    video, audio = layout.streams(samples.float())
    clip = clip_settings(latent)
    output = mm.intermediate_device()
    frames = dict(fps=clip["fps"], frames=clip["frames"])
    return (video_latent(model.pipeline.video_vae.denormalize(video).to(output), height=clip["height"],
                         width=clip["width"], **frames),
            audio_latent(clip.get(GIVEN_AUDIO_KEY, audio).to(output), sample_rate=clip["sample_rate"], num_samples=clip["num_samples"],
                         waveform=clip.get(GIVEN_WAVEFORM), **frames))


def mova_base_model(model: comfy.model_patcher.ModelPatcher, name: str = "model") -> MovaBaseModel:
    """The MOVA model inside a MODEL input (ValueError naming ``name`` otherwise)."""
    base = getattr(model, "model", None)
    if not isinstance(base, MovaBaseModel):
        raise ValueError(f"{name}: expected MOVA's MODEL (from MOVA Native Model), got "
                         f"{type(base).__name__ if base is not None else type(model).__name__}.")
    return base


def mova_sigmas(model: comfy.model_patcher.ModelPatcher, steps: int, denoise: float) -> torch.Tensor:
    """The official schedule as SIGMAS, then the final sigma; the shift is the MODEL's (the checkpoint's, or what a
    ModelSamplingSD3 node set). The model sees the official timesteps (``sigma * 1000``). The official sampler steps
    between the training-grid sigmas nearest to them: the same sigmas when the schedule lies on the grid (the
    released ``extra_one_step`` scheduler with steps dividing 1000: 50, 25, 20...), slightly different steps
    otherwise (README, "Native sampling")."""
    scheduler = mova_base_model(model).mova_scheduler
    shift = float(model.get_model_object("model_sampling").shift)
    schedule = scheduler.schedule(steps, denoising_strength=denoise,
                                  video_shift=None if shift == scheduler.config.shift else shift)
    return torch.cat([schedule.sigmas[:, 0], torch.tensor([scheduler.final_sigma])]).float()


class MovaNoise:
    """NOISE for SamplerCustomAdvanced: the video and audio noise MOVA Sampler draws for ``seed``, packed or nested
    like the latent (nested: of the latent's own class)."""

    def __init__(self, seed: int):
        self.seed = seed

    def generate_noise(self, input_latent: dict[str, Any]) -> torch.Tensor:
        layout, samples = layout_of(input_latent, "latent_image"), input_latent["samples"]
        if samples.shape[0] != 1:
            raise ValueError("latent_image: MOVA Noise draws one video's noise; use a latent of batch 1.")
        if not is_nested(samples):
            check_noise_mask(input_latent.get("noise_mask"), samples)
        video, audio = seeded_noise(self.seed, (1, *layout.video_shape), (1, *layout.audio_shape))
        return layout.samples(video, audio, type(samples) if is_nested(samples) else None)


def with_bridge_guidance(model: comfy.model_patcher.ModelPatcher, bridge_cfg: float) -> comfy.model_patcher.ModelPatcher:
    """``model`` with bridge CFG after the sampler's CFG: one extra negative pass with the Bridge off per step
    (:meth:`~mova_core.sampler.Guidance.bridge_term`); ``bridge_cfg`` 1 returns ``model`` itself (no cost)."""
    mova_base_model(model)
    if bridge_cfg == 1.0:
        return model
    guidance = Guidance(bridge_cfg=bridge_cfg)

    def bridge_cfg_function(args: dict[str, Any]) -> torch.Tensor:
        if args["uncond"] is None:
            raise ValueError("MOVA Bridge Guidance needs the negative conditioning: connect a negative prompt.")
        conds = _bridge_off(args["uncond"])
        options = dict(args["model_options"])
        options["transformer_options"] = _skipping_with_the_step(
            {**options.get("transformer_options", {}), BRIDGE_OPTION: False}, [cond["uuid"] for cond in conds])
        (unbridged,) = comfy.samplers.calc_cond_batch(args["model"], [conds], args["input"], args["sigma"], options)
        return args["denoised"] + guidance.bridge_term(args["uncond_denoised"], unbridged)

    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(bridge_cfg_function, disable_cfg1_optimization=True)
    return patched


_BRIDGE_OFF = uuid.UUID("5a0f3c2e-9d1b-4c47-8e0a-6b2f1d7c9e31")


def _skipping_with_the_step(transformer_options: dict[str, Any], uuids: list[uuid.UUID]) -> dict[str, Any]:
    """``transformer_options`` for the bridge-off pass. When core's EasyCache skipped this step's CFG passes, the
    bridge-off pass is skipped too (its cached output is reused): EasyCache clears its "skip this step" flag whenever
    a cond batch starts, so an innermost cond-batch wrapper sets it again. Without EasyCache, or before it has cached
    an output for these uuids, the options are returned as they are."""
    step_cache = transformer_options.get("easycache")
    cached = getattr(step_cache, "uuid_cache_diffs", {})
    if getattr(step_cache, "skip_current_step", None) is not True or not all(key in cached for key in uuids):
        return transformer_options
    wrappers, cond_batch = transformer_options.get("wrappers", {}), comfy.patcher_extension.WrappersMP.CALC_COND_BATCH
    innermost = {**wrappers.get(cond_batch, {}), "mova_bridge_off_skip": [_skip_again]}
    return {**transformer_options, "wrappers": {**wrappers, cond_batch: innermost}}


def _skip_again(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """The cond-batch wrapper of :func:`_skipping_with_the_step` (its last argument: the model options)."""
    args[-1]["transformer_options"]["easycache"].skip_current_step = True
    return executor(*args, **kwargs)


def _bridge_off(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The negative conds under uuids of their own (the same at every step): wrappers that keep state per cond uuid
    (EasyCache's cached output) must not take the bridge-off prediction for the negative's."""
    return [{**cond, "uuid": uuid.uuid5(_BRIDGE_OFF, str(cond["uuid"]))} for cond in conds]


def mova_euler(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
               callback: Any = None, disable: bool | None = None) -> torch.Tensor:
    """The official sampler as a ComfyUI sampler function: Euler steps between the training-grid sigmas nearest to
    the schedule's (:meth:`~mova_core.scheduler.FlowMatchPairScheduler.step`), the model evaluated at the schedule's
    own timesteps. With MOVA Schedule it gives MOVA Sampler's result for any step count."""
    extra_args = {} if extra_args is None else extra_args
    base = model.inner_model.inner_model
    if not isinstance(base, MovaBaseModel):
        raise ValueError(f"sampler: MOVA Euler samples MOVA's MODEL (from MOVA Native Model), not "
                         f"{type(base).__name__}; use KSamplerSelect's euler for other models.")
    scheduler = base.mova_scheduler
    for index in trange(len(sigmas) - 1, disable=disable):
        sigma, following = sigmas[index], sigmas[index + 1]
        denoised = model(x, sigma * x.new_ones([x.shape[0]]), **extra_args)
        if callback is not None:
            callback({"x": x, "i": index, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        target = None if float(following) == scheduler.final_sigma else following * scheduler.config.num_train_timesteps
        x = scheduler.step((x - denoised) / sigma, x, sigma * scheduler.config.num_train_timesteps, target)
    return x
