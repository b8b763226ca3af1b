"""Clips longer than one window (``MovaPipeline.generate_long``): window plans, exact lengths, the crossfade, the
continued frames and kept audio, progress, cancellation and flat memory; on the in-repo reference checkpoints
(44.1 kHz / hop 735 and 24 kHz / hop 480) at fps other than 24."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import IN_REPO_PARITY_DIR, REPO_ROOT
from mova_core.long_clip import Window, crossfade_weights, plan_windows
from mova_core.pipeline import DEFAULT_NEGATIVE_PROMPT, MovaPipeline

CHECKPOINTS = sorted(p / "checkpoint" for p in IN_REPO_PARITY_DIR.iterdir() if (p / "checkpoint").is_dir())


@pytest.mark.parametrize("frames, window, overlap, expected", [
    (13, 13, 5, [(0, 13, 0)]),
    (29, 13, 5, [(0, 13, 0), (8, 13, 5), (16, 13, 5)]),
    (25, 13, 5, [(0, 13, 0), (8, 13, 5), (16, 9, 5)]),  # a last window shorter than the rest
    (9, 13, 5, [(0, 9, 0)]),
    (577, 193, 25, [(0, 193, 0), (168, 193, 25), (336, 193, 25), (504, 73, 25)]),  # 24 s at 24 fps
    (21, 9, 1, [(0, 9, 0), (8, 9, 1), (16, 5, 1)]),
])
def test_windows_cover_the_clip_exactly(frames, window, overlap, expected):
    windows = plan_windows(frames, window, overlap, 4)
    assert windows == [Window(*w) for w in expected]
    assert windows[-1].start + windows[-1].frames == frames


@pytest.mark.parametrize("arguments, message", [
    ((30, 13, 5), r"num_frames=30 must be 4k\+1"),
    ((29, 12, 5), r"window_frames=12 must be 4k\+1"),
    ((29, 13, 4), r"overlap_frames=4 must be 4k\+1"),
    ((29, 13, 13), r"overlap_frames=13 must be at least 1 and less than window_frames=13"),
])
def test_bad_window_plans_name_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        plan_windows(*arguments, 4)


def test_crossfade_weights_rise_linearly_and_exclude_the_ends():
    assert crossfade_weights(3).tolist() == [0.25, 0.5, 0.75]


@pytest.fixture(scope="module", params=CHECKPOINTS, ids=lambda path: path.parent.name)
def pipe(request) -> MovaPipeline:
    return MovaPipeline.from_pretrained(request.param, dtype=torch.float32)


def _size(pipe: MovaPipeline) -> dict:
    height, width = pipe.geometry.size_multiples
    return dict(height=2 * height, width=2 * width, steps=2, text_cfg=1.0)


class Recorded:
    """``pipe.generate`` recording each window's arguments and result."""

    def __init__(self, pipe: MovaPipeline, monkeypatch):
        self.calls: list[tuple[dict, object]] = []
        generate = pipe.generate

        def recording(prompt, **kwargs):
            result = generate(prompt, **kwargs)
            self.calls.append(({"prompt": prompt, **kwargs}, result))
            return result

        monkeypatch.setattr(pipe, "generate", recording)


@pytest.mark.parametrize("frames, window, overlap", [(25, 13, 5), (21, 9, 1)])
def test_lengths_continuation_kept_audio_and_crossfade(pipe, monkeypatch, frames, window, overlap):
    fps = 25.0
    record = Recorded(pipe, monkeypatch)
    clip = pipe.generate_long(["a", "b", "c"], frames, window_frames=window, overlap_frames=overlap, fps=fps, seed=3,
                              **_size(pipe))
    rate = pipe.audio_vae.sample_rate
    assert clip.video.shape[0] == frames and clip.audio.shape[1] == int(rate * frames / fps)
    windows = plan_windows(frames, window, overlap, pipe.geometry.temporal_factor)
    assert [kwargs["num_frames"] for kwargs, _ in record.calls] == [w.frames for w in windows]
    assert [kwargs["prompt"] for kwargs, _ in record.calls] == ["a", "b", "c"]
    assert [kwargs["seed"] for kwargs, _ in record.calls] == [3, 4, 5]

    video = torch.zeros_like(clip.video)
    audio = torch.zeros_like(clip.audio)
    for (kwargs, result), w in zip(record.calls, windows):
        first = int(rate * w.start / fps)
        kept = int(rate * w.overlap / fps)
        if w.overlap:  # continued from what the clip held before this window was blended in
            assert torch.equal(kwargs["lead_frames"], video[w.start: w.start + w.overlap])
            lead_audio, lead_rate = kwargs["lead_audio"]
            assert lead_rate == rate and torch.equal(lead_audio, audio[:, first: first + kept])
            whole = kept // pipe.audio_vae.hop_length
            encoded = pipe.encode_audio(lead_audio[:, : whole * pipe.audio_vae.hop_length])
            assert torch.equal(result.audio_latents[..., :whole], encoded), "the previous window's audio is kept"
        fade = crossfade_weights(w.overlap)
        window_video = result.video
        video[w.start: w.start + w.overlap] = (video[w.start: w.start + w.overlap] * (1 - fade[:, None, None, None])
                                               + window_video[: w.overlap] * fade[:, None, None, None])
        video[w.start + w.overlap: w.start + w.frames] = window_video[w.overlap:]
        samples = min(int(rate * w.frames / fps), audio.shape[1] - first)
        fade = crossfade_weights(kept)
        audio[:, first: first + kept] = audio[:, first: first + kept] * (1 - fade) + result.audio[:, :kept] * fade
        audio[:, first + kept: first + samples] = result.audio[:, kept:samples]
    torch.testing.assert_close(clip.video, video, rtol=0, atol=1e-6)
    torch.testing.assert_close(clip.audio, audio, rtol=0, atol=1e-6)


def test_progress_counts_over_the_whole_clip_and_cancel_stops_between_windows(pipe):
    steps = []
    pipe.generate_long("a", 21, window_frames=9, overlap_frames=5, fps=16.0, seed=1, callback=steps.append,
                       **_size(pipe))
    assert [(s.index, s.total) for s in steps] == [(i, 4 * 2) for i in range(8)]  # 4 windows of 2 steps
    calls = []

    def cancel_in_the_second_window():
        calls.append(1)
        if len(calls) > 3:
            raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        pipe.generate_long("a", 21, window_frames=9, overlap_frames=5, fps=16.0, seed=1,
                           check_cancelled=cancel_in_the_second_window, **_size(pipe))
    assert len(calls) == 4, "window check + 2 passes of window 1, then the check before window 2"
    with pytest.raises(ValueError, match="one prompt per window; this clip has 4 windows, got 2"):
        pipe.generate_long(["a", "b"], 21, window_frames=9, overlap_frames=5, fps=16.0, **_size(pipe))


def test_audio_drives_a_long_clip_and_comes_back_as_given(pipe):
    rate, fps = pipe.audio_vae.sample_rate, 16.0
    voice = 0.2 * torch.sin(torch.arange(int(rate * 21 / fps)) * 0.01)[None]
    clip = pipe.generate_long("a", 21, window_frames=9, overlap_frames=5, fps=fps, seed=2,
                              audio=(voice, rate), **_size(pipe))
    torch.testing.assert_close(clip.audio, voice, rtol=0, atol=1e-6)


PEAK_SCRIPT = """
import json, sys, torch
from mova_core.pipeline import DEFAULT_NEGATIVE_PROMPT, MovaPipeline
pipe = MovaPipeline.from_pretrained(sys.argv[1], dtype=torch.float32)
generate, peaks = pipe.generate, []
def measured(*args, **kwargs):
    result = generate(*args, **kwargs)
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    peaks.append(int(status["VmHWM"].split()[0]))
    return result
pipe.generate = measured
pipe.generate_long("a", 89, window_frames=17, overlap_frames=5, fps=25.0, height=96, width=128, steps=1,
                   text_cfg=1.0, seed=0)
print(json.dumps(peaks))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_does_not_grow_with_the_number_of_windows():
    """Peak RSS of a fresh process after each of 7 windows (96x128, 89 frames). The second window adds the
    continuation's work (encoding the kept frames and audio); from then on the peak stays within 1 % (plus the
    clip's own output, float32 frames + audio). glibc's dynamic mmap threshold otherwise lets freed large
    blocks stay in the heap and the peak drift by up to ~10 % at random windows, so the threshold is fixed."""
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(CHECKPOINTS[0])], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(peaks) == 7
    output_kib = 89 * 96 * 128 * 3 * 4 / 1024 + 44100 * 4 * 4 / 1024
    assert peaks[1] - peaks[0] < 0.1 * peaks[0], peaks
    assert peaks[-1] - peaks[1] < 0.01 * peaks[0] + output_kib, peaks


def test_image_opens_the_first_window_and_last_image_closes_the_last(pipe, monkeypatch):
    record = Recorded(pipe, monkeypatch)
    size = _size(pipe)
    red = torch.zeros(size["height"], size["width"], 3)
    red[..., 0] = 1.0
    pipe.generate_long("a", 21, window_frames=9, overlap_frames=5, fps=16.0, seed=1, image=red, last_image=1 - red,
                       **size)
    assert [("image" in kwargs, "last_image" in kwargs, "lead_frames" in kwargs) for kwargs, _ in record.calls] == [
        (True, False, False), (False, False, True), (False, False, True), (False, True, True)]


def test_the_windows_encode_each_prompt_once(pipe, monkeypatch):
    calls = []
    encode = pipe.text_encoder.encode
    monkeypatch.setattr(pipe.text_encoder, "encode", lambda prompts: calls.append(prompts) or encode(prompts))
    pipe._prompt_cache.clear()
    pipe.generate_long("rain", 21, window_frames=9, overlap_frames=5, fps=16.0, seed=1,
                       **{**_size(pipe), "text_cfg": 2.0})
    assert sorted(map(tuple, calls)) == sorted([("rain",), (DEFAULT_NEGATIVE_PROMPT,)]), \
        "the prompt and the negative prompt once each, not once per window"
