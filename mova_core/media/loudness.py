"""Loudness normalisation: BS.1770 integrated loudness (pyloudnorm) with a true-peak ceiling.

Not part of the official pipeline (its output is not normalised), so every writer leaves it off by default.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyloudnorm
import torch

from .signals import ArrayLike, audio_channels, check_sample_rate, restore_array_type

TRUE_PEAK_OVERSAMPLING = 4  # BS.1770-4 Annex 2 asks for at least 4x at 48 kHz
_EDGE_PADDING = 32  # zeros around the clip so the FFT's wrap-around does not join its two ends
_MAX_CHANNELS = 5  # BS.1770 defines channel weights for up to 5 channels (L, R, C, Ls, Rs)

_log = logging.getLogger(__name__)
LUFS_RANGE = (-70.0, 0.0)  # BS.1770's absolute gate .. full scale
TRUE_PEAK_RANGE = (-70.0, 0.0)


@dataclass(frozen=True)
class LoudnessTarget:
    """Where to bring a clip: integrated loudness in LUFS, and the true-peak ceiling in dBTP."""

    lufs: float = -16.0
    true_peak_db: float = -1.0

    def __post_init__(self) -> None:
        for field, (low, high) in (("lufs", LUFS_RANGE), ("true_peak_db", TRUE_PEAK_RANGE)):
            value = getattr(self, field)
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"LoudnessTarget.{field} must be a number from {low:g} to {high:g}; got {value!r} "
                                 "(e.g. -16 LUFS, -1 dBTP)")


@dataclass(frozen=True)
class LoudnessResult:
    """Outcome of `normalize_loudness`.

    audio:          the result, same container type, dtype, device and shape as the input.
    input_lufs:     measured integrated loudness of the input (None when it could not be measured).
    gain_db:        gain applied (0.0 when skipped).
    peak_limited:   True when the true-peak ceiling, not the loudness target, set the gain.
    skipped_reason: why the input was returned unchanged (None when a gain was applied).
    """

    audio: ArrayLike
    input_lufs: Optional[float]
    gain_db: float
    peak_limited: bool = False
    skipped_reason: Optional[str] = None


def measure_true_peak_db(audio: ArrayLike) -> float:
    """Estimated true peak in dBTP (-inf for silence): max |x| after 4x band-limited (FFT) oversampling."""
    samples = audio_channels(audio, max_channels=None)
    padded = np.pad(samples, ((0, 0), (_EDGE_PADDING, _EDGE_PADDING)))
    length = padded.shape[1]
    spectrum = np.fft.rfft(padded, axis=1)
    if length % 2 == 0:
        spectrum[:, -1] *= 0.5  # split the Nyquist bin between its two mirror images
    upsampled = np.fft.irfft(spectrum, n=length * TRUE_PEAK_OVERSAMPLING, axis=1) * TRUE_PEAK_OVERSAMPLING
    peak = float(np.abs(upsampled).max())
    return 20.0 * math.log10(peak) if peak > 0.0 else -math.inf


def normalize_loudness(
    audio: ArrayLike, sample_rate: int, *, target_lufs: float = -16.0, true_peak_db: float = -1.0
) -> LoudnessResult:
    """Apply one gain so integrated loudness hits `target_lufs`, lowered if needed to keep the true peak
    at or below `true_peak_db` (then the result is quieter than the target; no limiter, no compression).

    audio: float [samples] or [channels, samples] (1..5 channels), tensor or ndarray.
    Silent audio (gated away, -inf LUFS) and clips not longer than the 0.4 s BS.1770 block are returned
    unchanged with `skipped_reason` set; the result never contains NaN.
    """
    target = LoudnessTarget(target_lufs, true_peak_db)
    rate = check_sample_rate(sample_rate)
    samples = audio_channels(audio, max_channels=_MAX_CHANNELS)
    original = audio if isinstance(audio, torch.Tensor) else np.asarray(audio)
    meter = pyloudnorm.Meter(rate)
    if samples.shape[1] < meter.block_size * rate:
        reason = (
            f"too short for loudness measurement: {samples.shape[1] / rate:.3f} s, "
            f"BS.1770 needs at least {meter.block_size} s"
        )
        return LoudnessResult(original, None, 0.0, skipped_reason=reason)
    input_lufs = float(meter.integrated_loudness(samples.T))
    if not math.isfinite(input_lufs):
        return LoudnessResult(original, None, 0.0, skipped_reason="silent: nothing above the -70 LUFS gate")
    gain_db = target.lufs - input_lufs
    peak_after_gain = measure_true_peak_db(samples) + gain_db
    peak_limited = peak_after_gain > target.true_peak_db
    if peak_limited:
        gain_db -= peak_after_gain - target.true_peak_db
    scaled = samples * 10.0 ** (gain_db / 20.0)
    return LoudnessResult(restore_array_type(scaled, original), input_lufs, gain_db, peak_limited)


def apply_loudness_target(audio: np.ndarray, sample_rate: int, target: Optional[LoudnessTarget]) -> np.ndarray:
    """Writers' hook: `audio` normalised to `target`, or unchanged when `target` is None or normalising is skipped."""
    if target is None:
        return audio
    result = normalize_loudness(audio, sample_rate, target_lufs=target.lufs, true_peak_db=target.true_peak_db)
    if result.skipped_reason is not None:
        _log.warning("loudness normalisation skipped: %s", result.skipped_reason)
    return result.audio
