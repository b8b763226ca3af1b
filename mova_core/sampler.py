"""MOVA sampling loop, independent of the networks (official ``MOVA.__call__`` denoising loop).

Per step: pick the video expert (``video_dit`` until the first video timestep strictly below the
boundary, then ``video_dit_2`` for good), run the model passes the guidance needs, combine them in
float32 and take an Euler step of both modalities with grid-snapped sigmas (:mod:`.scheduler`).

Guidance (``sT`` = text_cfg, ``sB`` = bridge_cfg)::

    v = v(neg, bridge off) + sB * [v(neg, bridge on) - v(neg, bridge off)] + sT * [v(pos, bridge on) - v(neg, bridge on)]

With ``sB == 1`` this is exactly the released text CFG ``neg + sT * (pos - neg)`` (two passes) and with
``sT == sB == 1`` just the positive pass, as in the official code.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Mapping, Protocol

import torch

from .scheduler import FlowMatchPairScheduler

HIGH_NOISE_EXPERT = "video_dit"
LOW_NOISE_EXPERT = "video_dit_2"
AUDIO_TOWER_MODULES = ("audio_dit", "dual_tower_bridge")
"""The components that run at every model pass beside the active video expert."""


class VelocityModel(Protocol):
    """The joint networks as the sampler sees them: float32 latents in, float32 velocities out.

    ``expert`` is :data:`HIGH_NOISE_EXPERT` or :data:`LOW_NOISE_EXPERT`; ``context`` is the ``positive``
    or ``negative`` object given to :func:`sample`, passed through unchanged; timesteps are float32
    tensors of shape ``[1]``; ``bridge=False`` runs both towers without the cross-modal bridge.
    """

    def __call__(
        self,
        expert: str,
        video_latents: torch.Tensor,
        audio_latents: torch.Tensor,
        context: Any,
        video_timestep: torch.Tensor,
        audio_timestep: torch.Tensor,
        *,
        bridge: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class Pass(enum.Enum):
    """One model evaluation: (prompt, bridge on)."""

    POSITIVE = ("positive", True)
    NEGATIVE = ("negative", True)
    NEGATIVE_BRIDGE_OFF = ("negative", False)

    @property
    def prompt(self) -> str:
        return self.value[0]

    @property
    def bridge(self) -> bool:
        return self.value[1]


@dataclasses.dataclass(frozen=True)
class Guidance:
    """Text CFG scale ``text_cfg`` (official default 5) and bridge CFG scale ``bridge_cfg`` (1 = off, official)."""

    text_cfg: float = 5.0
    bridge_cfg: float = 1.0

    @property
    def passes(self) -> tuple[Pass, ...]:
        """The model passes the formula needs, in the order they run (positive first, as official)."""
        if self.bridge_cfg != 1.0:
            return (Pass.POSITIVE, Pass.NEGATIVE, Pass.NEGATIVE_BRIDGE_OFF)
        if self.text_cfg != 1.0:
            return (Pass.POSITIVE, Pass.NEGATIVE)
        return (Pass.POSITIVE,)

    def combine(self, predictions: Mapping[Pass, torch.Tensor]) -> torch.Tensor:
        """Guided float32 velocity from the predictions of :attr:`passes`."""
        positive = predictions[Pass.POSITIVE]
        if Pass.NEGATIVE not in predictions:
            return positive
        negative = predictions[Pass.NEGATIVE]
        text_term = self.text_cfg * (positive - negative)
        if Pass.NEGATIVE_BRIDGE_OFF not in predictions:
            return negative + text_term
        unbridged = predictions[Pass.NEGATIVE_BRIDGE_OFF]
        return unbridged + self.bridge_cfg * (negative - unbridged) + text_term


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What a per-step callback receives, after step ``index`` (0-based) of ``total``.

    ``*_latents`` are the states after the step, ``*_velocity`` the guided velocities of the step and
    ``*_denoised`` the clean estimates ``x - sigma * v`` from the states before it (for previews).
    """

    index: int
    total: int
    video_timestep: float
    audio_timestep: float
    expert: str
    video_latents: torch.Tensor
    audio_latents: torch.Tensor
    video_velocity: torch.Tensor
    audio_velocity: torch.Tensor
    video_denoised: torch.Tensor
    audio_denoised: torch.Tensor


def _predict(
    model: VelocityModel,
    expert: str,
    guidance: Guidance,
    video: torch.Tensor,
    audio: torch.Tensor,
    contexts: Mapping[str, Any],
    video_timestep: torch.Tensor,
    audio_timestep: torch.Tensor,
    check_cancelled: Callable[[], None] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the guidance passes and return the guided (video, audio) velocities in float32."""
    video_predictions: dict[Pass, torch.Tensor] = {}
    audio_predictions: dict[Pass, torch.Tensor] = {}
    for model_pass in guidance.passes:
        if check_cancelled is not None:
            check_cancelled()
        v_video, v_audio = model(
            expert, video, audio, contexts[model_pass.prompt], video_timestep, audio_timestep, bridge=model_pass.bridge
        )
        video_predictions[model_pass] = v_video.float()
        audio_predictions[model_pass] = v_audio.float()
    return guidance.combine(video_predictions), guidance.combine(audio_predictions)


def _noised_start(noise: torch.Tensor, init: torch.Tensor | None, sigma: torch.Tensor, name: str) -> torch.Tensor:
    """Start state ``(1 - sigma) * init + sigma * noise`` (the official scheduler's ``add_noise`` at the
    first schedule sigma, unsnapped), or the noise itself."""
    noise = noise.float()
    if init is None:
        return noise
    if init.shape != noise.shape:
        raise ValueError(
            f"{name}_init has shape {tuple(init.shape)} but {name}_noise has {tuple(noise.shape)}; "
            "pass init latents of the noise's shape."
        )
    sigma = sigma.to(noise.device)
    return (1 - sigma) * init.float() + sigma * noise


def sample(
    model: VelocityModel,
    scheduler: FlowMatchPairScheduler,
    video_noise: torch.Tensor,
    audio_noise: torch.Tensor,
    positive: Any,
    negative: Any,
    *,
    steps: int,
    boundary_timestep: float,
    guidance: Guidance = Guidance(),
    video_shift: float | None = None,
    audio_shift: float | None = None,
    denoising_strength: float = 1.0,
    video_init: torch.Tensor | None = None,
    audio_init: torch.Tensor | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoise (video, audio) latents with ``steps`` steps; returns the final float32 latents.

    ``boundary_timestep``: expert switch (``scheduler.boundary_timestep(model_index.boundary_ratio)``).
    ``video_shift``/``audio_shift``: per-modality "dual sigma shift" (None = official, config shift).
    ``denoising_strength`` < 1 with ``video_init``/``audio_init``: start part-way from given latents,
    noised to the first sigma of each column like the scheduler's ``add_noise``.
    ``check_cancelled`` is called before every model pass and interrupts by raising.
    """
    if (video_init is None) != (audio_init is None):
        raise ValueError("pass both video_init and audio_init, or neither.")
    if video_init is None and denoising_strength != 1.0:
        raise ValueError(
            f"denoising_strength={denoising_strength} needs video_init and audio_init latents to start from; "
            "use 1.0 to sample from noise."
        )
    schedule = scheduler.schedule(
        steps, denoising_strength=denoising_strength, video_shift=video_shift, audio_shift=audio_shift
    )
    video = _noised_start(video_noise, video_init, schedule.sigmas[0, 0], "video")
    audio = _noised_start(audio_noise, audio_init, schedule.sigmas[0, 1], "audio")
    contexts = {Pass.POSITIVE.prompt: positive, Pass.NEGATIVE.prompt: negative}

    expert = HIGH_NOISE_EXPERT
    for index in range(schedule.steps):
        video_t, audio_t = schedule.timesteps[index]
        if video_t.item() < boundary_timestep:
            expert = LOW_NOISE_EXPERT
        video_v, audio_v = _predict(
            model, expert, guidance, video, audio, contexts,
            video_t.reshape(1).to(video.device), audio_t.reshape(1).to(audio.device), check_cancelled,
        )
        last = index + 1 == schedule.steps
        next_video_t, next_audio_t = (None, None) if last else schedule.timesteps[index + 1]
        new_video = scheduler.step(video_v, video, video_t, next_video_t)
        new_audio = scheduler.step(audio_v, audio, audio_t, next_audio_t)
        if callback is not None:
            callback(StepInfo(
                index=index, total=schedule.steps, video_timestep=video_t.item(), audio_timestep=audio_t.item(),
                expert=expert, video_latents=new_video, audio_latents=new_audio,
                video_velocity=video_v, audio_velocity=audio_v,
                video_denoised=video - scheduler.sigma_at(video_t).to(video.device) * video_v,
                audio_denoised=audio - scheduler.sigma_at(audio_t).to(audio.device) * audio_v,
            ))
        video, audio = new_video, new_audio
    return video, audio
