"""Step caching for the joint model (EasyCache rule, opt-in): reuse a pass's last output-minus-input residual
while the output is predicted to change little.

For every (video expert, guidance pass) the cache keeps, per modality, the residual ``output - input`` of
the last computed pass and the transformation rate ``k = |Δoutput| / |Δinput|`` of the last two computed
passes (|·| = mean absolute value). At each later call it adds ``k · |Δinput| / |output|`` (Δinput since the
previous call, output of the last computed pass) to a per-modality sum; while both modalities' sums stay
under ``threshold`` the pass is skipped and its output is ``input + residual``. A computed pass resets the
sums. The first :data:`WARMUP_PASSES` calls of each expert's pass and every pass of the last step are always
computed; nothing carries over from one expert to the other (their residuals are kept apart).

``threshold = 0`` computes every pass and returns the model's outputs themselves (bit-identical to running
without the cache); it still counts passes (:class:`PassStats`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .sampler import VelocityModel

WARMUP_PASSES = 2
"""Calls of each (expert, guidance pass) that are always computed: two give the first transformation rate."""


@dataclasses.dataclass
class PassStats:
    """Model passes of a sampling run: ``computed`` ran the networks, ``skipped`` reused a cached residual
    (a batched guidance call counts as one pass)."""

    computed: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        total = self.computed + self.skipped
        return f"{self.computed} of {total} model passes computed, {self.skipped} reused from the step cache"


@dataclasses.dataclass
class _Track:
    """What one (expert, guidance pass) remembers, per modality (index 0 video, 1 audio)."""

    calls: int = 0
    last_input: tuple[torch.Tensor, ...] | None = None  # the previous call's inputs
    computed_input: tuple[torch.Tensor, ...] | None = None  # inputs and outputs of the last computed pass
    computed_output: tuple[torch.Tensor, ...] | None = None
    rate: tuple[float, ...] | None = None  # k per modality, from the last two computed passes
    accumulated: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0])


def _mean_abs(x: torch.Tensor) -> float:
    return x.abs().mean().item()


class StepCache:
    """A :class:`~mova_core.sampler.VelocityModel` that reuses residuals of ``model`` (see the module docstring).

    ``steps`` is the number of sampling steps (its last step is always computed); ``stats`` is filled in."""

    def __init__(self, model: VelocityModel, threshold: float, steps: int, stats: PassStats | None = None):
        if not threshold >= 0.0:
            raise ValueError(f"cache_threshold must be 0 (off) or positive, got {threshold}.")
        self.model, self.threshold, self.steps = model, float(threshold), steps
        self.stats = PassStats() if stats is None else stats
        self._tracks: dict[tuple, _Track] = {}
        self._expert: str | None = None
        self._step, self._timesteps = -1, None

    def __call__(self, expert: str, video_latents: torch.Tensor, audio_latents: torch.Tensor, context: Any,
                 video_timestep: torch.Tensor, audio_timestep: torch.Tensor, *, bridge: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        self._advance(expert, video_timestep, audio_timestep)
        if self.threshold == 0.0:
            self.stats.computed += 1
            return self.model(expert, video_latents, audio_latents, context, video_timestep, audio_timestep,
                              bridge=bridge)
        contexts = context if isinstance(context, tuple) else (context,)
        track = self._tracks.setdefault((expert, bridge, *map(id, contexts)), _Track())
        inputs = (video_latents, audio_latents)
        if self._reusable(track, inputs):
            self.stats.skipped += 1
            outputs = tuple(x + residual for x, residual in zip(inputs, self._residuals(track)))
        else:
            self.stats.computed += 1
            outputs = self.model(expert, video_latents, audio_latents, context, video_timestep, audio_timestep,
                                 bridge=bridge)
            self._remember(track, inputs, outputs)
        track.calls += 1
        track.last_input = inputs
        return outputs  # type: ignore[return-value]

    def _advance(self, expert: str, video_timestep: torch.Tensor, audio_timestep: torch.Tensor) -> None:
        """Count steps (a step's passes share their timesteps) and forget the other expert's tracks at a switch."""
        timesteps = (video_timestep.item(), audio_timestep.item())
        if timesteps != self._timesteps:
            self._step, self._timesteps = self._step + 1, timesteps
        if expert != self._expert:
            self._tracks = {key: track for key, track in self._tracks.items() if key[0] == expert}
            self._expert = expert

    def _reusable(self, track: _Track, inputs: tuple[torch.Tensor, ...]) -> bool:
        """Add this call's predicted change to the sums; whether the cached residuals may stand in for the pass."""
        if track.calls < WARMUP_PASSES or track.rate is None or self._step >= self.steps - 1:
            return False
        for index, (x, previous, output) in enumerate(zip(inputs, track.last_input, track.computed_output)):
            scale = _mean_abs(output)
            change = track.rate[index] * _mean_abs(x - previous) / scale if scale > 0 else float("inf")
            track.accumulated[index] += change
        return max(track.accumulated) < self.threshold

    @staticmethod
    def _residuals(track: _Track) -> tuple[torch.Tensor, ...]:
        return tuple(out.float() - x for out, x in zip(track.computed_output, track.computed_input))

    @staticmethod
    def _remember(track: _Track, inputs: tuple[torch.Tensor, ...], outputs: tuple[torch.Tensor, ...]) -> None:
        """Keep a computed pass: its inputs/outputs, the new transformation rates, sums back to zero."""
        outputs = tuple(out.float() for out in outputs)
        if track.computed_output is not None:
            rates = []
            for x, out, previous_x, previous_out in zip(inputs, outputs, track.computed_input, track.computed_output):
                input_change = _mean_abs(x - previous_x)
                rates.append(_mean_abs(out - previous_out) / input_change if input_change > 0 else 0.0)
            track.rate = tuple(rates)
        track.computed_input, track.computed_output = inputs, outputs
        track.accumulated = [0.0, 0.0]
