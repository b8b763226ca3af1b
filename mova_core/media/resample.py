"""Sample-rate conversion without torchaudio: libswresample through PyAV (already a dependency)."""

from __future__ import annotations

import av
import numpy as np
import torch


def resample(waveform: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """float ``[channels, samples]`` at ``source_rate`` -> float32 ``[channels, round(samples * target / source)]``
    at ``target_rate`` (band-limited, each channel on its own; same tensor back when the rates match)."""
    if waveform.ndim != 2:
        raise ValueError(f"waveform: expected float [channels, samples], got shape {tuple(waveform.shape)}.")
    for name, rate in (("source_rate", source_rate), ("target_rate", target_rate)):
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"{name}={rate!r} must be a positive whole number of Hz.")
    if source_rate == target_rate:
        return waveform.float()
    length = round(waveform.shape[1] * target_rate / source_rate)
    channels = [_resample_channel(channel, source_rate, target_rate, length)
                for channel in waveform.detach().float().cpu().numpy()]
    return torch.from_numpy(np.stack(channels)).to(waveform.device)


def _resample_channel(signal: np.ndarray, source_rate: int, target_rate: int, length: int) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal, dtype=np.float32)[None], format="flt",
                                       layout="mono")
    frame.sample_rate = source_rate
    frame.pts = 0
    pieces = [out.to_ndarray()[0] for out in [*resampler.resample(frame), *resampler.resample(None)]]
    out = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return np.pad(out[:length], (0, max(0, length - out.shape[0])))
