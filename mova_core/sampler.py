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


def expert_at(video_timestep: float, boundary_timestep: float) -> str:
    """The video expert for a video timestep: ``video_dit`` at or above the boundary, ``video_dit_2`` below it. Along
    a decreasing schedule this is the official rule (switch at the first timestep below the boundary, never back)."""
    return LOW_NOISE_EXPERT if video_timestep < boundary_timestep else HIGH_NOISE_EXPERT


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
        return negative + text_term + self.bridge_term(negative, predictions[Pass.NEGATIVE_BRIDGE_OFF])

    def bridge_term(self, negative: torch.Tensor, unbridged: torch.Tensor) -> torch.Tensor:
        """What bridge CFG adds to text CFG's ``negative + text_cfg * (positive - negative)``:
        ``(bridge_cfg - 1) * (negative - unbridged)``, the formula above rearranged (velocities or clean estimates
        alike, both being linear in the prediction)."""
        return (self.bridge_cfg - 1.0) * (negative - unbridged)


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
    batch_guidance: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the guidance passes and return the guided (video, audio) velocities in float32.

    ``batch_guidance``: the bridge-on passes (positive and negative prompt) run as one model call with a
    batch of two, the model given the tuple of both contexts (and latents of batch 1, shared); the bridge-off
    pass runs alone. Contexts that cannot be stacked (not tensors of one shape) run one by one."""
    groups: list[tuple[Pass, ...]] = [(model_pass,) for model_pass in guidance.passes]
    bridged = tuple(model_pass for model_pass in guidance.passes if model_pass.bridge)
    stackable = {tuple(contexts[p.prompt].shape) if isinstance(contexts[p.prompt], torch.Tensor) else None
                 for p in bridged}
    if batch_guidance and len(bridged) > 1 and None not in stackable and len(stackable) == 1:
        groups = [bridged] + [(model_pass,) for model_pass in guidance.passes if not model_pass.bridge]
    video_predictions: dict[Pass, torch.Tensor] = {}
    audio_predictions: dict[Pass, torch.Tensor] = {}
    for group in groups:
        if check_cancelled is not None:
            check_cancelled()
        context = contexts[group[0].prompt] if len(group) == 1 else tuple(contexts[p.prompt] for p in group)
        v_video, v_audio = model(expert, video, audio, context, video_timestep, audio_timestep, bridge=group[0].bridge)
        for index, model_pass in enumerate(group):
            video_predictions[model_pass] = v_video[index:index + 1].float()
            audio_predictions[model_pass] = v_audio[index:index + 1].float()
    return guidance.combine(video_predictions), guidance.combine(audio_predictions)


@dataclasses.dataclass(frozen=True)
class Start:
    """How one modality starts and moves: ``strength`` 1 from noise; below 1 from ``init`` noised to the first
    sigma of its column (the official ``add_noise``); 0 = ``init`` held clean at timestep 0 for the whole run
    (re-imposed after every step, never stepped).

    ``kept``/``kept_mask`` (``[1, 1, L]``-broadcastable, 1 = kept): latents known in part (for example the
    audio a previous window already made); after every step the kept part is set to ``kept`` noised to the
    next step's sigma with this modality's noise, so at the end it equals ``kept``.
    """

    init: torch.Tensor | None = None
    strength: float = 1.0
    kept: torch.Tensor | None = None
    kept_mask: torch.Tensor | None = None

    @property
    def frozen(self) -> bool:
        return self.strength == 0.0


def _start_state(noise: torch.Tensor, start: Start, sigma: torch.Tensor, name: str) -> torch.Tensor:
    """Start state: the noise, ``(1 - sigma) * init + sigma * noise``, or the frozen ``init`` itself."""
    noise = noise.float()
    if start.strength < 1.0 and start.init is None:
        raise ValueError(f"{name} strength {start.strength:g} needs {name} latents to start from; use 1.0 to sample "
                         "from noise.")
    if start.strength >= 1.0:
        return noise
    if start.init.shape != noise.shape:
        raise ValueError(f"{name} init latents have shape {tuple(start.init.shape)} but the {name} noise has "
                         f"{tuple(noise.shape)}; pass init latents of the noise's shape.")
    if start.frozen:
        return start.init.float().to(noise.device)
    sigma = sigma.to(noise.device)
    return (1 - sigma) * start.init.float().to(noise.device) + sigma * noise


def _keep(state: torch.Tensor, start: Start, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``state`` with its kept part replaced by the kept latents noised to ``sigma`` (see :class:`Start`)."""
    if start.kept is None:
        return state
    mask = start.kept_mask.to(state.device, state.dtype)
    known = (1 - sigma) * start.kept.float().to(state.device) + sigma * noise.float().to(state.device)
    return mask * known + (1 - mask) * state


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
    video: Start = Start(),
    audio: Start = Start(),
    callback: Callable[[StepInfo], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    batch_guidance: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoise (video, audio) latents with ``steps`` steps; returns the final float32 latents.

    ``boundary_timestep``: expert switch (``scheduler.boundary_timestep(model_index.boundary_ratio)``), decided on
    the video timestep (a frozen video is at timestep 0: the low-noise expert throughout).
    ``video_shift``/``audio_shift``: per-modality "dual sigma shift" (None = official, config shift).
    ``video``/``audio``: how each modality starts (:class:`Start`: from noise, part-way from given latents with a
    strength per modality (the official ``dual_sigma_shift`` denoising strengths), or frozen).
    ``check_cancelled`` is called before every model pass and interrupts by raising.
    ``batch_guidance``: run the bridge-on guidance passes as one batch (see :func:`_predict`).
    """
    schedule = scheduler.schedule(
        steps, denoising_strength=video.strength or 1.0, audio_denoising_strength=audio.strength or 1.0,
        video_shift=video_shift, audio_shift=audio_shift,
    )
    video_state = _start_state(video_noise, video, schedule.sigmas[0, 0], "video")
    audio_state = _start_state(audio_noise, audio, schedule.sigmas[0, 1], "audio")
    contexts = {Pass.POSITIVE.prompt: positive, Pass.NEGATIVE.prompt: negative}
    clean = torch.zeros((), dtype=torch.float32)

    expert = HIGH_NOISE_EXPERT
    for index in range(schedule.steps):
        video_t, audio_t = (clean if start.frozen else t for start, t in zip((video, audio), schedule.timesteps[index]))
        if expert_at(video_t.item(), boundary_timestep) == LOW_NOISE_EXPERT:
            expert = LOW_NOISE_EXPERT
        video_v, audio_v = _predict(
            model, expert, guidance, video_state, audio_state, contexts,
            video_t.reshape(1).to(video_state.device), audio_t.reshape(1).to(audio_state.device), check_cancelled,
            batch_guidance,
        )
        last = index + 1 == schedule.steps
        next_video_t, next_audio_t = (None, None) if last else schedule.timesteps[index + 1]
        new_video = video_state if video.frozen else _keep(
            scheduler.step(video_v, video_state, video_t, next_video_t), video, video_noise,
            scheduler.sigma_at(next_video_t))
        new_audio = audio_state if audio.frozen else _keep(
            scheduler.step(audio_v, audio_state, audio_t, next_audio_t), audio, audio_noise,
            scheduler.sigma_at(next_audio_t))
        if callback is not None:
            callback(StepInfo(
                index=index, total=schedule.steps, video_timestep=video_t.item(), audio_timestep=audio_t.item(),
                expert=expert, video_latents=new_video, audio_latents=new_audio,
                video_velocity=video_v, audio_velocity=audio_v,
                video_denoised=video_state if video.frozen else
                video_state - scheduler.sigma_at(video_t).to(video_state.device) * video_v,
                audio_denoised=audio_state if audio.frozen else
                audio_state - scheduler.sigma_at(audio_t).to(audio_state.device) * audio_v,
            ))
        video_state, audio_state = new_video, new_audio
    return video_state, audio_state
