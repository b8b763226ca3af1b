"""WAV output through soundfile."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
import soundfile

from .files import PathLike, write_atomically
from .loudness import LoudnessTarget, apply_loudness_target
from .signals import ArrayLike, audio_channels, check_sample_rate, pcm16

WavSampleFormat = Literal["pcm16", "float32"]
_SOUNDFILE_SUBTYPES = {"pcm16": "PCM_16", "float32": "FLOAT"}
_MAX_WAV_CHANNELS = 8  # 7.1; more almost certainly means a [samples, channels] array


def write_wav(
    path: PathLike,
    audio: ArrayLike,
    sample_rate: int,
    *,
    sample_format: WavSampleFormat = "pcm16",
    loudness: Optional[LoudnessTarget] = None,
    overwrite: bool = False,
) -> Path:
    """Write float audio [samples] or [channels, samples] as a WAV file; return the path written.

    "pcm16" (default) uses the official conversion: clip to [-1, 1], int16(x * 32767) truncating toward zero.
    "float32" stores the samples as they are (no clipping). `loudness` (off by default, like the official
    output) normalises first. An existing file is never replaced unless `overwrite=True`: the data goes to
    `unique_path(path)` instead (see `write_atomically`).
    """
    rate = check_sample_rate(sample_rate)
    if sample_format not in _SOUNDFILE_SUBTYPES:
        raise ValueError(f"sample_format must be one of {sorted(_SOUNDFILE_SUBTYPES)}; got {sample_format!r}")
    samples = apply_loudness_target(audio_channels(audio, max_channels=_MAX_WAV_CHANNELS), rate, loudness)
    data = pcm16(samples) if sample_format == "pcm16" else samples.astype(np.float32)

    def write(temp: Path) -> None:
        soundfile.write(temp, data.T, rate, subtype=_SOUNDFILE_SUBTYPES[sample_format], format="WAV")

    return write_atomically(path, write, overwrite=overwrite)
