"""MP4 output (H.264 yuv420p video + AAC audio) through PyAV."""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Optional, Union

import av
import numpy as np

from .files import PathLike, write_atomically
from .loudness import LoudnessTarget, apply_loudness_target
from .signals import ArrayLike, audio_channels, check_sample_rate, check_video, rgb24_frame

OFFICIAL_CRF = 5  # the official imageio quality=9 maps to libx264 -crf int((1 - 9 / 10) * 51)
OFFICIAL_AUDIO_BITRATE = 192_000  # the official ffmpeg mux: -c:a aac -b:a 192k
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)
_MAX_FPS_DENOMINATOR = 100_000  # 23.976 -> 2997/125, 24000/1001 stays exact; keeps MP4 timescales small
_AUDIO_LAYOUTS = {1: "mono", 2: "stereo"}

FrameRate = Union[int, float, Fraction]


def frame_rate(fps: FrameRate) -> Fraction:
    """`fps` as an exact Fraction (floats are read as the nearest fraction with a denominator <= 100000)."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number of frames per second (e.g. 24 or 23.976); got {fps!r}")
    return Fraction(fps).limit_denominator(_MAX_FPS_DENOMINATOR)


def audio_samples_for_frames(frames: int, fps: FrameRate, sample_rate: int) -> int:
    """Number of audio samples covering `frames` video frames (rounded to the nearest sample)."""
    return round(frames * sample_rate / frame_rate(fps))


def sync_problem(frames: int, samples: int, sample_rate: int, fps: FrameRate) -> str | None:
    """Why ``samples`` of audio and ``frames`` of video would not line up at ``fps`` (they differ by more than a
    frame: the mux would cut or desync the sound), naming the frame rate that fits; None when they fit."""
    rate = frame_rate(fps)
    if abs(samples - audio_samples_for_frames(frames, rate, sample_rate)) <= sample_rate / rate:
        return None
    fitting = frames * sample_rate / samples
    return (f"fps={float(rate):g} does not fit the clip: {frames} frames and {samples / sample_rate:.3f} s of audio "
            f"make {fitting:.4g} fps, while {frames} frames at fps={float(rate):g} last {float(frames / rate):.3f} s. Set fps "
            f"to {fitting:.4g} (connect MOVA Decode's fps output), or give audio of the clip's length.")


def write_mp4(
    path: PathLike,
    video: ArrayLike,
    audio: Optional[ArrayLike],
    *,
    fps: FrameRate,
    sample_rate: Optional[int] = None,
    crf: float = OFFICIAL_CRF,
    preset: str = "medium",
    audio_bitrate: int = OFFICIAL_AUDIO_BITRATE,
    loudness: Optional[LoudnessTarget] = None,
    overwrite: bool = False,
    metadata: Optional[Mapping[str, str]] = None,
) -> Path:
    """Encode a clip as MP4 (H.264 yuv420p + AAC); return the path written.

    video: [frames, height, width, 3] RGB, float in 0..1 (clipped, rounded to 8 bit) or uint8; tensor or
        ndarray, any device. yuv420p needs even sizes: an odd height/width is padded by repeating the last
        row/column, so the file is one pixel taller/wider.
    audio: float [samples] or [channels, samples] (mono or stereo), clipped to [-1, 1], or None for a silent
        file (then `sample_rate` is not needed). Audio longer than the video is trimmed to the video's
        duration (frames / fps), as the official mux does with ffmpeg -shortest; shorter audio is kept as is.
    fps: frames per second, fractional rates included (12.5, 23.976, Fraction(24000, 1001)).
    crf / preset: libx264 quality (0 = lossless .. 51; default 5 = the official imageio quality 9) and speed.
    loudness: optional normalisation of the (trimmed) audio; off by default like the official output.
    overwrite: False (default) never replaces an existing file; the clip goes to `unique_path(path)`.
    metadata: optional container tags (for example ComfyUI's "prompt"/"workflow" JSON), written with
        ``movflags=use_metadata_tags`` so players and ComfyUI can read them back.
    """
    video = check_video(video)
    rate = frame_rate(fps)
    _check_encoder_settings(crf, preset, audio_bitrate)
    samples = None
    if audio is not None:
        if sample_rate is None:
            raise ValueError("sample_rate is required when audio is given (e.g. sample_rate=48000)")
        sample_rate = check_sample_rate(sample_rate)
        samples = audio_channels(audio, max_channels=len(_AUDIO_LAYOUTS))
        samples = samples[:, : audio_samples_for_frames(len(video), rate, sample_rate)]
        samples = np.clip(apply_loudness_target(samples, sample_rate, loudness), -1.0, 1.0).astype(np.float32)

    def write(temp: Path) -> None:
        movflags = "+faststart+use_metadata_tags" if metadata else "+faststart"
        with av.open(str(temp), mode="w", format="mp4", options={"movflags": movflags}) as container:
            container.metadata.update(metadata or {})
            video_stream = _add_video_stream(container, video, rate, crf, preset)
            audio_stream = None
            if samples is not None:
                audio_stream = _add_audio_stream(container, samples, sample_rate, audio_bitrate)
            for index in range(len(video)):
                frame = av.VideoFrame.from_ndarray(rgb24_frame(video[index], index), format="rgb24")
                frame.pts = index
                container.mux(video_stream.encode(frame))
                if audio_stream is not None:  # interleave: the audio up to the end of this frame
                    start = audio_samples_for_frames(index, rate, sample_rate)
                    stop = audio_samples_for_frames(index + 1, rate, sample_rate)
                    if start < samples.shape[1]:
                        container.mux(audio_stream.encode(_audio_frame(samples[:, start:stop], start, sample_rate)))
            container.mux(video_stream.encode(None))
            if audio_stream is not None:
                container.mux(audio_stream.encode(None))

    return write_atomically(path, write, overwrite=overwrite)


def _check_encoder_settings(crf: float, preset: str, audio_bitrate: int) -> None:
    if isinstance(crf, bool) or not isinstance(crf, numbers.Real) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be a number from 0 (lossless) to 51 (worst); got {crf!r}")
    if preset not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}; got {preset!r}")
    if isinstance(audio_bitrate, bool) or not isinstance(audio_bitrate, numbers.Integral) or audio_bitrate <= 0:
        raise ValueError(f"audio_bitrate must be a positive whole number of bits per second; got {audio_bitrate!r}")


def _add_video_stream(container: av.container.OutputContainer, video: ArrayLike, rate: Fraction, crf: float,
                      preset: str) -> av.VideoStream:
    height, width = video.shape[1:3]
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height = width + width % 2, height + height % 2
    stream.pix_fmt = "yuv420p"
    stream.time_base = 1 / rate
    stream.options = {"crf": f"{crf:g}", "preset": preset}
    return stream


def _add_audio_stream(container: av.container.OutputContainer, samples: np.ndarray, sample_rate: int,
                      bitrate: int) -> av.AudioStream:
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = _AUDIO_LAYOUTS[samples.shape[0]]
    stream.bit_rate = bitrate
    return stream


def _audio_frame(chunk: np.ndarray, first_sample: int, sample_rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp",
                                       layout=_AUDIO_LAYOUTS[chunk.shape[0]])
    frame.sample_rate = sample_rate
    frame.pts = first_sample
    frame.time_base = Fraction(1, sample_rate)
    return frame
