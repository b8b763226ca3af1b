"""Flow-matching schedule of MOVA (the official ``FlowMatchPairScheduler``), float32 like the original.

A schedule of N steps is ``linspace(sigma_start, sigma_min, N)`` (``N + 1`` with the last point dropped
when ``extra_one_step``), optionally flipped (``inverse_timesteps``), shifted (``shift`` or
``exponential_shift`` with ``exponential_shift_mu``), stretched to ``shift_terminal`` and mirrored
(``reverse_sigmas``); timesteps are ``sigma * num_train_timesteps``. Video and audio each get a column of
timesteps; the released pipeline uses the same column twice, the optional "dual sigma shift" builds each
column with its own shift.

Stepping snaps sigmas to the 1000-point *training grid* (the schedule built at construction): the
sigma of a timestep is the grid sigma of the nearest grid timestep (first index on ties), not ``t / 1000``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .config import ConfigError, SchedulerConfig


@dataclasses.dataclass(frozen=True)
class PairSchedule:
    """Per-step (video, audio) timesteps and sigmas, float32 ``[steps, 2]`` (column 0 video, 1 audio)."""

    timesteps: torch.Tensor
    sigmas: torch.Tensor

    @property
    def steps(self) -> int:
        return self.timesteps.shape[0]

    @property
    def video_timesteps(self) -> torch.Tensor:
        return self.timesteps[:, 0]

    @property
    def audio_timesteps(self) -> torch.Tensor:
        return self.timesteps[:, 1]


class FlowMatchPairScheduler:
    """The official flow-matching pair scheduler, built from a :class:`SchedulerConfig`."""

    def __init__(self, config: SchedulerConfig):
        if config.shift <= 0:
            raise ConfigError(f"scheduler: shift must be positive, got {config.shift}.")
        if config.exponential_shift and config.exponential_shift_mu is None:
            raise ConfigError(
                "scheduler: exponential_shift is enabled but exponential_shift_mu is null; "
                "set exponential_shift_mu in scheduler_config.json (sequence-length dependent mu is not supported)."
            )
        if config.shift_terminal is not None and config.shift_terminal == 1:
            raise ConfigError("scheduler: shift_terminal must differ from 1 (it divides by 1 - shift_terminal).")
        self.config = config
        self.train_sigmas = self.sigmas(config.num_train_timesteps)
        self.train_timesteps = self.train_sigmas * config.num_train_timesteps

    @property
    def final_sigma(self) -> float:
        """Sigma reached after the last step: 0, or 1 when the schedule runs backwards."""
        return 1.0 if (self.config.inverse_timesteps or self.config.reverse_sigmas) else 0.0

    def boundary_timestep(self, boundary_ratio: float) -> float:
        """Expert-switch timestep of ``model_index.json``'s ``boundary_ratio`` (official: ratio * num_train_timesteps)."""
        return boundary_ratio * self.config.num_train_timesteps

    def sigmas(self, steps: int, *, denoising_strength: float = 1.0, shift: float | None = None) -> torch.Tensor:
        """Float32 sigmas of a ``steps``-step schedule; ``shift`` overrides the config shift."""
        cfg = self.config
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}.")
        if not 0.0 < denoising_strength <= 1.0:
            raise ValueError(f"denoising_strength must lie in (0, 1], got {denoising_strength}.")
        shift = cfg.shift if shift is None else shift
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}.")
        sigma_start = cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * denoising_strength
        if cfg.extra_one_step:
            sigmas = torch.linspace(sigma_start, cfg.sigma_min, steps + 1, dtype=torch.float32)[:-1]
        else:
            sigmas = torch.linspace(sigma_start, cfg.sigma_min, steps, dtype=torch.float32)
        if cfg.inverse_timesteps:
            sigmas = torch.flip(sigmas, dims=[0])
        if cfg.exponential_shift:
            exp_mu = math.exp(cfg.exponential_shift_mu)
            sigmas = exp_mu / (exp_mu + (1 / sigmas - 1))
        else:
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        if cfg.shift_terminal is not None:
            one_minus_sigmas = 1 - sigmas
            sigmas = 1 - one_minus_sigmas / (one_minus_sigmas[-1] / (1 - cfg.shift_terminal))
        if cfg.reverse_sigmas:
            sigmas = 1 - sigmas
        return sigmas

    def schedule(
        self,
        steps: int,
        *,
        denoising_strength: float = 1.0,
        video_shift: float | None = None,
        audio_shift: float | None = None,
        audio_denoising_strength: float | None = None,
    ) -> PairSchedule:
        """(video, audio) schedule of ``steps`` steps.

        ``video_shift``/``audio_shift`` = None keep the config shift for that column; both None is the
        released pipeline (same column twice). Setting either, or an ``audio_denoising_strength`` other
        than ``denoising_strength`` (None = the same), is the official ``dual_sigma_shift``.
        """
        self.check_shifts(video_shift, audio_shift)
        audio_strength = denoising_strength if audio_denoising_strength is None else audio_denoising_strength
        video = self.sigmas(steps, denoising_strength=denoising_strength, shift=video_shift)
        audio = video if (audio_shift, audio_strength) == (video_shift, denoising_strength) else self.sigmas(
            steps, denoising_strength=audio_strength, shift=audio_shift
        )
        sigmas = torch.stack([video, audio], dim=1)
        return PairSchedule(timesteps=sigmas * self.config.num_train_timesteps, sigmas=sigmas)

    def check_shifts(self, video_shift: float | None, audio_shift: float | None) -> None:
        """ValueError when a per-modality shift is set but this schedule takes no shift (exponential_shift)."""
        if self.config.exponential_shift and (video_shift is not None or audio_shift is not None):
            raise ValueError(
                "video_shift/audio_shift have no effect with exponential_shift (the shift comes from "
                "exponential_shift_mu in scheduler_config.json); leave them at the checkpoint's value."
            )

    def sigma_at(self, timestep: float | torch.Tensor | None) -> torch.Tensor:
        """Float32 0-d sigma of the training-grid timestep nearest to ``timestep`` (first on ties);
        ``None`` (after the last step) gives :attr:`final_sigma`."""
        if timestep is None:
            return torch.tensor(self.final_sigma, dtype=torch.float32)
        query = torch.tensor(float(timestep), dtype=torch.float32)
        return self.train_sigmas[torch.argmin((self.train_timesteps - query).abs())]

    def step(
        self,
        velocity: torch.Tensor,
        sample: torch.Tensor,
        timestep_from: float | torch.Tensor,
        timestep_to: float | torch.Tensor | None,
    ) -> torch.Tensor:
        """Euler step ``sample + velocity * (sigma(to) - sigma(from))`` with grid-snapped sigmas."""
        delta = self.sigma_at(timestep_to) - self.sigma_at(timestep_from)
        return sample + velocity * delta.to(sample.device)
