"""Audio given to drive a generation: a file, a ``(waveform, sample_rate)`` pair or a ComfyUI AUDIO dict.

:func:`load_audio` turns any of them into float32 ``[channels, samples]`` at the model's sample rate
(resampled only when the rates differ, so audio already at that rate stays bit for bit);
:func:`fit_audio` trims or zero-pads it to a clip's length.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Union

import av
import numpy as np
import torch

from .resample import resample

AudioInput = Union[str, os.PathLike, tuple, dict]
"""A path to an audio (or video) file, ``(waveform [channels, samples], sample_rate)``, or a ComfyUI AUDIO."""


def read_audio_file(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Every channel of the first audio stream of ``path`` (any format FFmpeg reads) as float32 ``[C, n]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio: {path} does not exist; give the path of an audio file (wav, flac, mp3, ...).")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"audio: {path} has no audio stream.")
            stream = container.streams.audio[0]
            chunks = [frame.to_ndarray().reshape(-1, frame.samples) if frame.format.is_planar
                      else frame.to_ndarray().reshape(frame.samples, -1).T
                      for frame in container.decode(stream)]
            rate = stream.rate
    except av.error.FFmpegError as error:
        raise ValueError(f"audio: {path} cannot be read as audio ({error}); convert it to wav or flac.") from None
    if not chunks:
        raise ValueError(f"audio: {path} holds no samples.")
    samples = np.concatenate(chunks, axis=1)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), int(rate)


def _as_waveform(audio: Any) -> tuple[torch.Tensor, int]:
    if isinstance(audio, (str, os.PathLike)):
        return read_audio_file(audio)
    if isinstance(audio, dict) and "waveform" in audio and "sample_rate" in audio:
        waveform = audio["waveform"]
        if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or waveform.shape[0] != 1:
            shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ValueError(f"audio: a ComfyUI AUDIO of one sound has waveform [1, channels, samples], got {shape}.")
        return waveform[0], int(audio["sample_rate"])
    if isinstance(audio, tuple) and len(audio) == 2:
        waveform, rate = audio
        waveform = torch.as_tensor(waveform)
        if waveform.ndim == 1:
            waveform = waveform[None]
        if waveform.ndim != 2:
            raise ValueError(f"audio: expected a waveform [channels, samples], got shape {tuple(waveform.shape)}.")
        return waveform, int(rate)
    raise ValueError(f"audio: expected a file path, a (waveform, sample_rate) pair or a ComfyUI AUDIO dict, got "
                     f"{type(audio).__name__}.")


def load_audio(audio: AudioInput, sample_rate: int) -> torch.Tensor:
    """``audio`` as float32 ``[channels, samples]`` at ``sample_rate`` (untouched when already at that rate)."""
    waveform, rate = _as_waveform(audio)
    if waveform.shape[-1] == 0:
        raise ValueError("audio: holds no samples.")
    if rate <= 0:
        raise ValueError(f"audio: sample rate {rate} must be positive.")
    if not torch.isfinite(waveform).all():
        raise ValueError("audio: contains NaN or infinite samples.")
    waveform = waveform.float()
    return waveform if rate == sample_rate else resample(waveform, rate, sample_rate)


def frames_covering(num_samples: int, sample_rate: int, fps: float, temporal_factor: int) -> int:
    """The fewest frames (``temporal_factor``·k + 1) whose clip holds ``num_samples`` samples of audio."""
    frames = max(1, math.ceil(num_samples * fps / sample_rate - 1e-9))
    frames = math.ceil((frames - 1) / temporal_factor) * temporal_factor + 1
    while int(sample_rate * frames / fps) < num_samples:
        frames += temporal_factor
    return frames


def fit_audio(waveform: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``waveform`` trimmed, or zero-padded at the end, to ``num_samples``."""
    return torch.nn.functional.pad(waveform[:, :num_samples], (0, max(0, num_samples - waveform.shape[1])))
