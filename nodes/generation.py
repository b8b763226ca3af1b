"""Sampling and decoding of MOVA clips inside ComfyUI (progress, previews, interrupts, memory)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

import comfy.model_management as mm
import latent_preview

from ..mova_core.conditioning import image_condition, prepare_reference_image
from ..mova_core.media import normalize_loudness
from ..mova_core.pipeline import OFFICIAL_NEGATIVE_PROMPT, seeded_noise, velocity_model
from ..mova_core.sampler import HIGH_NOISE_EXPERT, Guidance, StepInfo, sample
from ..mova_core.video_vae import frames_from_pixels
from .comfy_model import MovaModel, activation_memory
from .conditioning import embeddings_from_conditioning
from .latents import (MISSING_KEY, audio_latent, clip_info, empty_latent, init_latents, latent_samples, plan_encode,
                      video_latent)
from .widgets import SAMPLER, clip_problem, range_problems

log = logging.getLogger(__name__)
# Peak activation bytes per output pixel of the Wan 2.1 VAE in a 2-byte dtype, measured on CPU with the
# real shapes: about 10,900 for decode and 8,200 for encode; doubled for float32.
_VAE_BYTES_PER_PIXEL_16BIT = 11_000


@dataclass(frozen=True)
class ClipSettings:
    """The sampler's widgets."""

    width: int
    height: int
    frames: int
    fps: float
    steps: int
    seed: int
    text_cfg: float
    bridge_cfg: float
    video_shift: float
    audio_shift: float
    boundary: float
    denoise: float = 1.0


def _vae_memory(model: MovaModel, height: int, width: int) -> int:
    dtype_bytes = torch.finfo(model.pipeline.video_vae.dtype).bits // 8
    return height * width * _VAE_BYTES_PER_PIXEL_16BIT * dtype_bytes // 2


def _negative(model: MovaModel, negative: Any) -> torch.Tensor:
    if negative is not None:
        return embeddings_from_conditioning(negative, model.text_dim, "negative")
    return model.default_negative(OFFICIAL_NEGATIVE_PROMPT)


def _shifts(model: MovaModel, settings: ClipSettings) -> tuple[float | None, float | None]:
    if model.pipeline.scheduler.config.exponential_shift:
        log.warning("MOVA Sampler: this scheduler derives its shift from exponential_shift_mu; "
                    "video_shift/audio_shift are ignored.")
        return None, None
    return settings.video_shift, settings.audio_shift


def _check_images(start_image: torch.Tensor | None, end_image: torch.Tensor | None, frames: int,
                  temporal_factor: int) -> None:
    if end_image is None:
        return
    if start_image is None:
        raise ValueError("end_image needs start_image: MOVA always conditions on a first frame; connect start_image "
                         "too, or leave end_image unconnected.")
    if frames < 2:
        raise ValueError(f"end_image needs a clip of more than one frame; frames={frames}, use "
                         f"{temporal_factor + 1} or more.")


def _clip_latents(pipe: Any, raw_video: torch.Tensor, audio: torch.Tensor, s: ClipSettings) -> tuple[dict, dict]:
    """MOVA Sampler's outputs for raw (Wan 2.1) ``raw_video`` and ``audio`` latents."""
    output = mm.intermediate_device()
    return (video_latent(raw_video.float().to(output), fps=s.fps, frames=s.frames, height=s.height, width=s.width),
            audio_latent(audio.float().to(output), sample_rate=pipe.audio_vae.sample_rate,
                         num_samples=pipe.audio_num_samples(s.frames, s.fps), fps=s.fps, frames=s.frames))


def sample_clip(model: MovaModel, positive: Any, negative: Any, settings: ClipSettings, *,
                start_image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                video_init: Any = None, audio_init: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Video and audio LATENTs for ``settings``; every check runs before the first model pass.

    ``end_image``: the last frame (first + last frame). ``video_init``/``audio_init``: the LATENTs to
    re-generate when ``settings.denoise`` < 1 (0 returns them unchanged).
    """
    pipe = model.pipeline
    s = settings
    guidance_values = {"text_cfg": s.text_cfg, "bridge_cfg": s.bridge_cfg, "video_shift": s.video_shift,
                       "audio_shift": s.audio_shift, "boundary": s.boundary, "denoise": s.denoise}
    problem = clip_problem(s.width, s.height, s.frames, s.fps, s.steps, spatial_multiple=pipe.size_multiples,
                           temporal_factor=pipe.video_vae.config.temporal_factor) or " ".join(
        range_problems(SAMPLER, guidance_values))
    if problem:
        raise ValueError(problem)
    _check_images(start_image, end_image, s.frames, pipe.video_vae.config.temporal_factor)
    video_shape, audio_shape = pipe.latent_shapes(s.height, s.width, s.frames, s.fps)
    inits = init_latents(video_init, audio_init, s.denoise, video_shape=video_shape, audio_shape=audio_shape,
                         clip={"width": s.width, "height": s.height, "frames": s.frames, "fps": s.fps})
    if inits is not None and s.denoise == 0.0:
        return _clip_latents(pipe, *inits, s)
    guidance = Guidance(text_cfg=s.text_cfg, bridge_cfg=s.bridge_cfg)
    positive_context = embeddings_from_conditioning(positive, model.text_dim, "positive")
    reference = prepare_reference_image(start_image, s.height, s.width, name="start_image")
    last = None if end_image is None else prepare_reference_image(end_image, s.height, s.width, name="end_image")
    negative_context = _negative(model, negative) if len(guidance.passes) > 1 else None
    video_noise, audio_noise = seeded_noise(s.seed, video_shape, audio_shape)
    video_shift, audio_shift = _shifts(model, s)

    model.load_video_vae(_vae_memory(model, s.height, s.width))
    condition = image_condition(pipe.video_vae, reference, s.frames, last_image=last)
    device = model.load_device
    memory = activation_memory(model, video_shape, audio_shape)
    velocity = velocity_model(pipe.experts, pipe.audio_dit, pipe.bridge, condition.to(device), s.fps)
    loaded: list[str] = []

    def expert_velocity(expert: str, *args, **kwargs):
        if loaded[-1:] != [expert]:  # first pass of an expert: load it (ComfyUI frees what it must)
            model.load_expert(expert, memory)
            loaded.append(expert)
        return velocity(expert, *args, **kwargs)

    preview = latent_preview.prepare_callback(model.patchers[HIGH_NOISE_EXPERT], s.steps)

    def on_step(info: StepInfo) -> None:  # preview the middle latent frame (frame 0 is the start image)
        middle = info.video_denoised.shape[2] // 2
        preview(info.index, info.video_denoised[:, :, middle:middle + 1], info.video_latents, info.total)

    video, audio = sample(
        expert_velocity, pipe.scheduler, video_noise.to(device), audio_noise.to(device), positive_context.to(device),
        None if negative_context is None else negative_context.to(device),
        steps=s.steps, boundary_timestep=pipe.scheduler.boundary_timestep(s.boundary), guidance=guidance,
        video_shift=video_shift, audio_shift=audio_shift,
        denoising_strength=1.0 if inits is None else s.denoise,
        video_init=None if inits is None else pipe.video_vae.normalize(inits[0].float()).to(device),
        audio_init=None if inits is None else inits[1].float().to(device),
        callback=on_step, check_cancelled=mm.throw_exception_if_processing_interrupted,
    )
    return _clip_latents(pipe, pipe.video_vae.denormalize(video.float()), audio, s)


def decode_video(model: MovaModel, latent: Any, tile: tuple[int, int] | None) -> torch.Tensor:
    """Video LATENT -> IMAGE ``[F, H, W, 3]``; ``tile`` = (size, overlap) in pixels for a tiled decode."""
    vae = model.pipeline.video_vae
    raw = latent_samples(latent, "video_latent", vae.config.z_dim, 5)
    factor = vae.config.spatial_factor
    height, width = (side * factor for side in raw.shape[-2:])
    if tile is not None:
        height, width = min(height, tile[0]), min(width, tile[0])
    model.load_video_vae(_vae_memory(model, height, width))
    tiling = {} if tile is None else {"tile_size": tile[0] // factor, "tile_overlap": tile[1] // factor}
    pixels = vae.decode(raw.to(device=vae.device, dtype=vae.dtype), **tiling)
    return frames_from_pixels(pixels, mm.intermediate_device())


def decode_audio(model: MovaModel, latent: Any, target_lufs: float | None) -> dict[str, Any]:
    """Audio LATENT -> AUDIO ``{"waveform": [1, C, n], "sample_rate"}``, trimmed to the clip, optionally normalised."""
    pipe = model.pipeline
    latents = latent_samples(latent, "audio_latent", pipe.audio_vae.latent_dim, 3)
    model.load_audio_vae()
    waveform = pipe.decode_audio(latents)
    num_samples = clip_info(latent).get("num_samples")
    if num_samples is not None:
        waveform = waveform[:, :num_samples]
    sample_rate = pipe.audio_vae.sample_rate
    if target_lufs is not None:
        result = normalize_loudness(waveform, sample_rate, target_lufs=target_lufs)
        if result.skipped_reason:
            log.warning("MOVA Decode: loudness normalisation skipped: %s", result.skipped_reason)
        waveform = result.audio
    return {"waveform": waveform[None].float().cpu(), "sample_rate": sample_rate}


def encode_clip(model: MovaModel, images: torch.Tensor | None, audio: dict[str, Any] | None,
                fps: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """IMAGE and/or AUDIO -> the video and audio LATENTs MOVA Sampler re-generates with denoise < 1; an
    unconnected input gives an empty LATENT that tells the sampler what to connect instead."""
    pipe = model.pipeline
    plan = plan_encode(images, audio, fps, size_multiples=pipe.size_multiples,
                       temporal_factor=pipe.video_vae.config.temporal_factor, sample_rate=pipe.audio_vae.sample_rate,
                       num_samples_for=pipe.audio_num_samples)
    output = mm.intermediate_device()
    if plan.images is None:
        video = empty_latent("video_latent", plan, channels=pipe.video_vae.config.z_dim,
                             spatial_multiple=pipe.size_multiples)
    else:
        model.load_video_vae(_vae_memory(model, plan.height, plan.width))
        raw = pipe.video_vae.denormalize(pipe.encode_video(plan.images))
        video = video_latent(raw.float().to(output), fps=fps, frames=plan.frames, height=plan.height, width=plan.width)
    if plan.waveform is None:
        sound = empty_latent("audio_latent", plan, channels=pipe.audio_vae.latent_dim,
                             spatial_multiple=pipe.size_multiples)
    else:
        model.load_audio_vae()
        sound = audio_latent(pipe.encode_audio(plan.waveform).float().to(output), sample_rate=pipe.audio_vae.sample_rate,
                             num_samples=plan.num_samples, fps=fps, frames=plan.frames)
    for latent in (video, sound):
        if MISSING_KEY in clip_info(latent):
            log.warning("MOVA Encode: %s", clip_info(latent)[MISSING_KEY])
    return video, sound
