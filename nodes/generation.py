"""MOVA Sampler, Decode and Encode as calls of the core's generation stages (ComfyUI values in and out).

Every check, default and formula lives in :class:`mova_core.pipeline.MovaPipeline`; this module
converts ComfyUI values (widgets, CONDITIONING, IMAGE, LATENT, AUDIO) and adds what only ComfyUI has:
its memory management (:class:`~.comfy_model.ComfyResidency`), previews and interrupts.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import torch

import comfy.model_management as mm
import comfy.utils
import latent_preview

from ..mova_core.media import normalize_loudness
from ..mova_core.pipeline import DEFAULT_NEGATIVE_PROMPT, PreparedRun
from ..mova_core.sampler import HIGH_NOISE_EXPERT, Guidance, StepInfo
from ..mova_core.step_cache import PassStats
from .comfy_model import MovaModel
from .conditioning import embeddings_from_conditioning
from .latents import (GIVEN_WAVEFORM, MISSING_KEY, audio_latent, empty_latent, latent_samples, latent_settings,
                      plan_encode, video_latent)
from .widgets import NODE_NAMES, sampler_settings

log = logging.getLogger(__name__)


def _negative(model: MovaModel, negative: Any) -> torch.Tensor:
    if negative is not None:
        return embeddings_from_conditioning(negative, model.text_dim, "negative")
    return model.default_negative(DEFAULT_NEGATIVE_PROMPT)


def _init_samples(latent: Any, name: str, channels: int, ndim: int, denoise: float) -> torch.Tensor | None:
    """The samples of a LATENT the sampler re-generates (read only when denoise < 1 uses them)."""
    if latent is None or denoise >= 1.0:
        return None
    return latent_samples(latent, name, channels, ndim)


def _made_for(message: str, video_init: Any, audio_init: Any) -> str:
    """`` The video_latent was made for width=640, ...`` when ``message`` is about a MOVA LATENT of another video."""
    for name, latent in (("video_latent", video_init), ("audio_latent", audio_init)):
        info = latent_settings(latent) if isinstance(latent, dict) and message.startswith(f"{name} has shape") else {}
        made = ", ".join(f"{key}={info[key]:g}" for key in ("width", "height", "frames", "fps") if key in info)
        if made:
            return f" The {name} was made for {made}."
    return ""


def _latents_out(model: MovaModel, run: PreparedRun, video: torch.Tensor, audio: torch.Tensor,
                 kept_audio: torch.Tensor | None) -> tuple[dict, dict]:
    """MOVA Sampler's LATENT outputs: raw Wan 2.1 video latents and DAC latents, with the video's settings (and the
    given sound when it was frozen, which MOVA Decode then returns as it is)."""
    s, output = run.settings, mm.intermediate_device()
    return (video_latent(video.float().to(output), fps=s.fps, frames=s.num_frames, height=s.height, width=s.width),
            audio_latent(audio.float().to(output), sample_rate=model.pipeline.audio_vae.sample_rate,
                         num_samples=run.num_samples, fps=s.fps, frames=s.num_frames, waveform=kept_audio))


def sample_latents(model: MovaModel, positive: Any, negative: Any, widgets: Mapping[str, Any], *,
                start_image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                video_init: Any = None, audio_init: Any = None, audio: dict[str, Any] | None = None,
                audio_mode: str = "freeze", cache_threshold: float = 0.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Video and audio LATENTs for MOVA Sampler's ``widgets``; every check runs before the first model pass.

    ``end_image``: the last frame (first + last frame). ``video_init``/``audio_init``: the LATENTs to
    re-generate when ``denoise`` < 1 (0 returns them unchanged). ``audio``: an AUDIO that drives the picture
    (``audio_mode`` freeze: kept as given; strength: re-generated with the ``audio_strength`` widget).
    """
    pipe = model.pipeline
    settings = sampler_settings(widgets)
    if audio is None:  # audio_strength is the connected audio's
        settings = dataclasses.replace(settings, audio_strength=None)
    video_channels, audio_channels = pipe.video_vae.config.z_dim, pipe.audio_vae.latent_dim
    try:
        driving = pipe.drive(
            settings, audio=audio, audio_mode=audio_mode, names=NODE_NAMES, residency=model.residency,
            video_init=_init_samples(video_init, "video_latent", video_channels, 5, settings.strength("video")),
            audio_init=_init_samples(audio_init, "audio_latent", audio_channels, 3, settings.strength("audio")))
        run = pipe.prepare(driving.settings, image=start_image, last_image=end_image, names=NODE_NAMES,
                           video_init=driving.video_init, audio_init=driving.audio_init)
    except ValueError as error:
        raise ValueError(f"{error}{_made_for(str(error), video_init, audio_init)}") from None
    positive_context = embeddings_from_conditioning(positive, model.text_dim, "positive")
    negative_context = _negative(model, negative) if run.needs_negative and not run.unchanged else None
    preview = latent_preview.prepare_callback(model.patchers[HIGH_NOISE_EXPERT], settings.steps)

    def on_step(info: StepInfo) -> None:  # preview the middle latent frame (frame 0 is the start image)
        middle = info.video_denoised.shape[2] // 2
        preview(info.index, info.video_denoised[:, :, middle:middle + 1], info.video_latents, info.total)

    stats = PassStats()
    video, audio = pipe.sample(run, positive_context, negative_context, residency=model.residency, callback=on_step,
                               check_cancelled=mm.throw_exception_if_processing_interrupted,
                               cache_threshold=cache_threshold, stats=stats)
    log.info("MOVA Sampler: %s.", stats)
    return _latents_out(model, run, video, audio, driving.kept("audio"))


def long_video(model: MovaModel, positive: Any, negative: Any, widgets: Mapping[str, Any], *, frames: int | None,
               window_frames: int, overlap_frames: int, start_image: torch.Tensor | None = None,
               audio: dict[str, Any] | None = None, audio_mode: str = "freeze") -> tuple[torch.Tensor, dict[str, Any]]:
    """MOVA Long Video: IMAGE and AUDIO of ``frames`` frames (None: as long as ``audio``) made window by window."""
    pipe = model.pipeline
    settings = sampler_settings(widgets)
    guidance = Guidance(text_cfg=settings.text_cfg, bridge_cfg=settings.bridge_cfg)
    progress: list[comfy.utils.ProgressBar] = []

    def on_step(info: StepInfo) -> None:
        if not progress:
            progress.append(comfy.utils.ProgressBar(info.total))
        progress[0].update_absolute(info.index + 1, info.total)

    clip = pipe.generate_long(
        embeddings_from_conditioning(positive, model.text_dim, "positive"), frames, window_frames=window_frames,
        overlap_frames=overlap_frames, fps=settings.fps, seed=settings.seed, callback=on_step,
        check_cancelled=mm.throw_exception_if_processing_interrupted, residency=model.residency,
        negative_prompt=_negative(model, negative) if len(guidance.passes) > 1 else "",
        image=start_image, audio=audio, audio_mode=audio_mode,
        audio_strength=None if audio is None else settings.audio_strength, height=settings.height,
        width=settings.width, steps=settings.steps, text_cfg=settings.text_cfg, bridge_cfg=settings.bridge_cfg,
        video_shift=settings.video_shift, audio_shift=settings.audio_shift, boundary_ratio=settings.boundary_ratio)
    return clip.video.to(mm.intermediate_device()), {"waveform": clip.audio[None].float().cpu(),
                                                     "sample_rate": clip.sample_rate}


def decode_video(model: MovaModel, latent: Any, tile: tuple[int, int] | None) -> torch.Tensor:
    """Video LATENT -> IMAGE ``[F, H, W, 3]``; ``tile`` = (size, overlap) in pixels for a tiled decode."""
    pipe = model.pipeline
    raw = latent_samples(latent, "video_latent", pipe.video_vae.config.z_dim, 5)
    factor = pipe.video_vae.config.spatial_factor
    tiling = {} if tile is None else {"tile_size": tile[0] // factor, "tile_overlap": tile[1] // factor}
    return pipe.decode_video(raw, residency=model.residency, output_device=mm.intermediate_device(), **tiling)


def decode_audio(model: MovaModel, latent: Any, target_lufs: float | None) -> dict[str, Any]:
    """Audio LATENT -> AUDIO ``{"waveform": [1, C, n], "sample_rate"}``, trimmed to the video, optionally normalised."""
    pipe = model.pipeline
    latents = latent_samples(latent, "audio_latent", pipe.audio_vae.latent_dim, 3)
    given = latent_settings(latent).get(GIVEN_WAVEFORM)  # frozen driving audio: the sound itself, not a VAE trip
    waveform = given if given is not None else pipe.decode_audio(
        latents, latent_settings(latent).get("num_samples"), residency=model.residency)
    sample_rate = pipe.audio_vae.sample_rate
    if target_lufs is not None:
        result = normalize_loudness(waveform, sample_rate, target_lufs=target_lufs)
        if result.skipped_reason:
            log.warning("MOVA Decode: loudness normalisation skipped: %s", result.skipped_reason)
        waveform = result.audio
    return {"waveform": waveform[None].float().cpu(), "sample_rate": sample_rate}


def encode_latents(model: MovaModel, images: torch.Tensor | None, audio: dict[str, Any] | None,
                fps: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """IMAGE and/or AUDIO -> the video and audio LATENTs MOVA Sampler re-generates with denoise < 1; an
    unconnected input gives an empty LATENT that tells the sampler what to connect instead."""
    pipe = model.pipeline
    plan = plan_encode(images, audio, fps, geometry=pipe.geometry, sample_rate=pipe.audio_vae.sample_rate,
                       num_samples_for=pipe.audio_num_samples)
    output = mm.intermediate_device()
    if plan.images is None:
        video = empty_latent("video_latent", plan, channels=pipe.video_vae.config.z_dim,
                             spatial_multiple=pipe.geometry.size_multiples)
    else:
        raw = pipe.encode_video(plan.images, residency=model.residency)
        video = video_latent(raw.to(output), fps=fps, frames=plan.frames, height=plan.height, width=plan.width)
    if plan.waveform is None:
        sound = empty_latent("audio_latent", plan, channels=pipe.audio_vae.latent_dim,
                             spatial_multiple=pipe.geometry.size_multiples)
    else:
        sound = audio_latent(pipe.encode_audio(plan.waveform, residency=model.residency).to(output),
                             sample_rate=pipe.audio_vae.sample_rate, num_samples=plan.num_samples, fps=fps,
                             frames=plan.frames)
    for latent in (video, sound):
        if MISSING_KEY in latent_settings(latent):
            log.warning("MOVA Encode: %s", latent_settings(latent)[MISSING_KEY])
    return video, sound
