"""Validation and conversion of video frames and audio arrays (torch tensors or numpy arrays)."""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

_TORCH_VIDEO_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_video(video: ArrayLike, name: str = "video") -> ArrayLike:
    """Check an IMAGE-layout clip [frames, height, width, 3] (float in 0..1, or uint8); return it as tensor/ndarray."""
    if not isinstance(video, torch.Tensor):
        video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or min(video.shape) == 0:
        raise ValueError(
            f"{name} must have shape [frames, height, width, 3] (ComfyUI IMAGE layout, RGB) with no empty "
            f"dimension; got {tuple(video.shape)}"
        )
    dtype_ok = (
        video.dtype in _TORCH_VIDEO_DTYPES
        if isinstance(video, torch.Tensor)
        else video.dtype == np.uint8 or np.issubdtype(video.dtype, np.floating)
    )
    if not dtype_ok:
        raise ValueError(f"{name} must be floating point in 0..1 (or uint8 0..255); got dtype {video.dtype}")
    return video


def rgb24_frame(frame: ArrayLike, index: int, name: str = "video") -> np.ndarray:
    """One frame -> contiguous uint8 [H', W', 3] with H', W' rounded up to even by repeating the last row/column.

    Floats are clipped to 0..1 and rounded to 0..255 (as the official PIL conversion does).
    """
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().to("cpu", torch.float32 if frame.is_floating_point() else torch.uint8).numpy()
    if frame.dtype != np.uint8:
        if not np.isfinite(frame).all():
            raise ValueError(f"{name} frame {index} contains NaN or infinite values")
        frame = np.rint(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
    height, width = frame.shape[:2]
    frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def audio_channels(audio: ArrayLike, max_channels: Optional[int], name: str = "audio") -> np.ndarray:
    """Float audio [samples] or [channels, samples] -> float64 ndarray [channels, samples] (a copy).

    `max_channels` (None: no limit) also catches [samples, channels] arrays passed by mistake.
    """
    if isinstance(audio, torch.Tensor):
        if not audio.is_floating_point():
            raise ValueError(f"{name} must be floating point (about -1..1); got dtype {audio.dtype}")
        audio = audio.detach().to("cpu", torch.float64).numpy()
    audio = np.asarray(audio)
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{name} must be floating point (about -1..1); got dtype {audio.dtype}")
    if audio.ndim == 1:
        audio = audio[None]
    limit = max_channels if max_channels is not None else math.inf
    if audio.ndim != 2 or not 1 <= audio.shape[0] <= limit or audio.shape[1] == 0:
        channels = f"1..{max_channels}" if max_channels is not None else "at least one"
        raise ValueError(
            f"{name} must have shape [samples] or [channels, samples] with {channels} channels and at "
            f"least one sample; got {tuple(audio.shape)}{_shape_hint(audio.shape, limit)}"
        )
    if not np.isfinite(audio).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return audio.astype(np.float64)


def _shape_hint(shape: tuple[int, ...], max_channels: float) -> str:
    """What probably went wrong with a refused audio shape."""
    if len(shape) == 2 and shape[0] > shape[1]:
        return " (a [samples, channels] array needs transposing)"
    if len(shape) == 2 and shape[0] > max_channels:
        return f" ({shape[0]} channels, e.g. 5.1 surround: downmix it to stereo or mono first)"
    return ""


def restore_array_type(audio: np.ndarray, like: ArrayLike) -> ArrayLike:
    """Give float64 [channels, samples] audio the container type, dtype, device and rank of `like`."""
    audio = audio.reshape(like.shape)
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(audio).to(like.device, like.dtype)
    return audio.astype(np.asarray(like).dtype)


def check_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """A positive whole number of samples per second, as int."""
    whole = isinstance(sample_rate, numbers.Integral) or (
        isinstance(sample_rate, float) and math.isfinite(sample_rate) and sample_rate.is_integer()
    )
    if isinstance(sample_rate, bool) or not whole or sample_rate <= 0:
        raise ValueError(f"{name} must be a positive whole number of Hz (e.g. 48000); got {sample_rate!r}")
    return int(sample_rate)


def pcm16(audio: np.ndarray) -> np.ndarray:
    """The official float -> int16 conversion: clip to [-1, 1], scale by 32767, truncate toward zero."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
