"""Clips longer than one window: windows that each continue the previous one, crossfaded over their overlap.

Window ``k`` (after the first) starts ``overlap_frames`` frames before the previous window ends. Its I2V
condition marks those frames, taken from the previous window, as known (:func:`image_condition`'s
``lead_frames``), and the previous window's audio over the same span is kept in its audio latents
(re-imposed at every step, see :class:`~mova_core.sampler.Start`). Both streams are then crossfaded over
the overlap with a linear ramp (:func:`crossfade_weights`). Results go into buffers of the whole clip's
size, so the working memory of a window does not grow with the number of windows.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from .media.audio_input import fit_audio, load_audio
from .sampler import StepInfo

if TYPE_CHECKING:
    from .pipeline import Generation, MovaPipeline


@dataclasses.dataclass(frozen=True)
class Window:
    """Frames ``[start, start + frames)`` of the whole clip; the first ``overlap`` of them continue the previous
    window."""

    start: int
    frames: int
    overlap: int


def plan_windows(num_frames: int, window_frames: int, overlap_frames: int, temporal_factor: int) -> list[Window]:
    """The windows covering ``num_frames`` frames: each ``window_frames`` long but the last, which is shorter when
    the clip ends earlier (every window has ``temporal_factor``·k + 1 frames). ValueError naming the bad argument."""
    def valid(frames: int) -> bool:
        return frames >= 1 and (frames - 1) % temporal_factor == 0

    for name, value in (("num_frames", num_frames), ("window_frames", window_frames)):
        if not isinstance(value, int) or not valid(value):
            raise ValueError(f"{name}={value!r} must be {temporal_factor}k+1 frames (e.g. {4 * temporal_factor + 1}).")
    if not isinstance(overlap_frames, int) or overlap_frames % temporal_factor != 1 % temporal_factor:
        raise ValueError(f"overlap_frames={overlap_frames!r} must be {temporal_factor}k+1 frames, so the windows "
                         f"stay aligned to the video latents (e.g. {2 * temporal_factor + 1}).")
    if not 1 <= overlap_frames < window_frames:
        raise ValueError(f"overlap_frames={overlap_frames} must be at least 1 and less than "
                         f"window_frames={window_frames}.")
    stride = window_frames - overlap_frames
    windows = [Window(0, min(window_frames, num_frames), 0)]
    while windows[-1].start + windows[-1].frames < num_frames:
        start = windows[-1].start + stride
        windows.append(Window(start, min(window_frames, num_frames - start), overlap_frames))
    return windows


def crossfade_weights(length: int) -> torch.Tensor:
    """Weights of the new window over an overlap of ``length`` (frames or samples): ``(i + 1) / (length + 1)``,
    rising linearly; the previous window gets ``1 - w``."""
    return torch.arange(1, length + 1, dtype=torch.float32) / (length + 1)


def _prompts(prompt: Any, count: int) -> list[Any]:
    """One prompt (text or embeddings) per window."""
    if isinstance(prompt, (str, torch.Tensor)):
        return [prompt] * count
    prompts = list(prompt)
    if len(prompts) != count or not all(isinstance(p, (str, torch.Tensor)) for p in prompts):
        raise ValueError(f"prompt: a list needs one prompt per window; this clip has {count} windows, got "
                         f"{len(prompts)} prompts.")
    return prompts


def generate_long(pipe: "MovaPipeline", prompt: Any, num_frames: int | None, *, window_frames: int,
                  overlap_frames: int, fps: float, seed: int | None, callback: Callable[[StepInfo], None] | None,
                  check_cancelled: Callable[[], None] | None, audio: Any = None, image: Any = None,
                  last_image: Any = None, **options: Any) -> "Generation":
    """See :meth:`MovaPipeline.generate_long`."""
    from .pipeline import Generation  # the pipeline imports this module

    rate = pipe.audio_vae.sample_rate
    driving = None if audio is None else load_audio(audio, rate)
    num_frames = pipe.frame_count(num_frames, driving, None, fps)
    windows = plan_windows(num_frames, window_frames, overlap_frames, pipe.geometry.temporal_factor)
    prompts = _prompts(prompt, len(windows))
    total_samples = pipe.audio_num_samples(num_frames, fps)
    driving = None if driving is None else fit_audio(driving, total_samples)
    seed = random.randrange(2**63) if seed is None else seed
    steps_done = [0]
    video = audio_out = None
    for index, window in enumerate(windows):
        if check_cancelled is not None:
            check_cancelled()
        first_sample = pipe.audio_num_samples(window.start, fps)
        samples = pipe.audio_num_samples(window.frames, fps)
        overlap_samples = pipe.audio_num_samples(window.overlap, fps)
        ends = {**({"image": image} if index == 0 else {}),
                **({"last_image": last_image} if index + 1 == len(windows) else {})}
        lead = {} if index == 0 else {
            "lead_frames": video[window.start: window.start + window.overlap].clone(),  # the buffer changes later
            "lead_audio": (audio_out[:, first_sample: first_sample + overlap_samples].clone(), rate)}
        window_audio = {} if driving is None else {"audio": (driving[:, first_sample: first_sample + samples], rate)}
        result = pipe.generate(prompts[index], num_frames=window.frames, fps=fps, seed=seed + index,
                               callback=_whole_clip_progress(callback, steps_done, len(windows)),
                               check_cancelled=check_cancelled, **ends, **lead, **window_audio, **options)
        if video is None:  # the whole clip's buffers, sized by the first window
            video = result.video.new_zeros(num_frames, *result.video.shape[1:])
            audio_out = result.audio.new_zeros(result.audio.shape[0], total_samples)
        _blend(video, result.video, window.start, window.overlap)
        _blend(audio_out, result.audio[:, : min(samples, total_samples - first_sample)], first_sample,
               overlap_samples, dim=1)
    return Generation(video=video, audio=audio_out, sample_rate=rate, fps=fps, seed=seed)


def _blend(whole: torch.Tensor, part: torch.Tensor, start: int, overlap: int, dim: int = 0) -> None:
    """Write ``part`` into ``whole`` from ``start`` along ``dim``, crossfading its first ``overlap`` entries."""
    target = whole.narrow(dim, start, part.shape[dim])
    if overlap:
        shape = [1] * part.ndim
        shape[dim] = overlap
        weights = crossfade_weights(overlap).view(shape)
        head = target.narrow(dim, 0, overlap)
        head.mul_(1 - weights).add_(part.narrow(dim, 0, overlap) * weights)
    target.narrow(dim, overlap, part.shape[dim] - overlap).copy_(part.narrow(dim, overlap, part.shape[dim] - overlap))


def _whole_clip_progress(callback: Callable[[StepInfo], None] | None, steps_done: list[int],
                         windows: int) -> Callable[[StepInfo], None] | None:
    """``callback`` with each step counted over the whole clip (index and total over every window)."""
    if callback is None:
        return None

    def report(info: StepInfo) -> None:
        done = steps_done[0] + info.index
        callback(dataclasses.replace(info, index=done, total=info.total * windows))
        if info.index + 1 == info.total:
            steps_done[0] += info.total

    return report
