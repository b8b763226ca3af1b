"""Media output: MP4 (H.264 + AAC) and WAV writers, loudness normalisation, never-overwrite publishing."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
import soundfile
import torch

import mova_core.media.mp4 as mp4_module
import mova_core.media.wav as wav_module
from mova_core.media import (
    LoudnessTarget,
    audio_samples_for_frames,
    frame_rate,
    measure_true_peak_db,
    normalize_loudness,
    unique_path,
    write_atomically,
    write_mp4,
    write_wav,
)

AAC_FRAME = 1024  # samples per AAC frame
COLORS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0.2, 0.4, 0.6], [0, 0, 0]], dtype=np.float32)


def solid_color_video(frames: int = 6, height: int = 16, width: int = 24) -> np.ndarray:
    """[frames, height, width, 3] float32 clip, one solid colour per frame."""
    return np.broadcast_to(COLORS[np.arange(frames) % len(COLORS), None, None], (frames, height, width, 3)).copy()


def sine(seconds: float, sample_rate: int, hz: float = 440.0, amplitude: float = 0.5, channels: int = 1):
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return np.repeat(amplitude * np.sin(2 * np.pi * hz * t)[None], channels, axis=0).astype(np.float32)


def decoded_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1)


def seconds(stream) -> float:
    return float(stream.duration * stream.time_base)


def loudness(audio: np.ndarray, sample_rate: int) -> float:
    return pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(audio, np.float64).T)


# ---------------------------------------------------------------------------------------------- mp4


@pytest.mark.parametrize(
    "fps, sample_rate, channels",
    [(24, 48000, 1), (12.5, 48000, 2), (23.976, 44100, 2), (Fraction(24000, 1001), 24000, 1)],
)
def test_mp4_has_one_h264_and_one_aac_stream_with_matching_durations(tmp_path, fps, sample_rate, channels):
    frames = 9
    video_seconds = frames / frame_rate(fps)
    # Longer than the video, like MOVA's decoded audio: must be trimmed to the video's duration.
    audio = sine(float(video_seconds) + 0.3, sample_rate, channels=channels)
    path = write_mp4(tmp_path / "clip.mp4", solid_color_video(frames), audio, fps=fps, sample_rate=sample_rate)

    assert path == tmp_path / "clip.mp4"
    with av.open(str(path)) as container:
        assert len(container.streams) == 2
        (video,), (sound,) = container.streams.video, container.streams.audio
        assert video.codec_context.name == "h264"
        assert (video.width, video.height, video.format.name) == (24, 16, "yuv420p")
        assert video.average_rate == frame_rate(fps)
        assert abs(seconds(video) - video_seconds) <= 1 / frame_rate(fps)
        assert sound.codec_context.name == "aac"
        assert (sound.sample_rate, sound.channels) == (sample_rate, channels)
        assert abs(seconds(sound) - video_seconds) <= AAC_FRAME / sample_rate
    assert len(decoded_rgb(path)) == frames


def test_mp4_keeps_pixels_and_sound(tmp_path):
    video = solid_color_video(6)
    audio = sine(0.25, 48000, hz=440.0, amplitude=0.5, channels=2)
    path = write_mp4(tmp_path / "clip.mp4", video, audio, fps=24, sample_rate=48000)

    pixels = decoded_rgb(path).astype(np.float32)
    assert np.abs(pixels - video * 255).max() <= 6  # near-lossless CRF 5, RGB order kept
    sound = decoded_audio(path)[:, AAC_FRAME : AAC_FRAME + 8000]  # skip the encoder's priming frame
    spectrum = np.abs(np.fft.rfft(sound[0]))
    assert abs(np.argmax(spectrum) * 48000 / sound.shape[1] - 440.0) <= 48000 / sound.shape[1]
    assert np.sqrt(np.mean(sound**2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.05)


@pytest.mark.parametrize(
    "as_input",
    [lambda v: torch.from_numpy(v).to(torch.bfloat16), lambda v: (v * 255).round().astype(np.uint8)],
    ids=["torch-bfloat16", "uint8"],
)
def test_mp4_accepts_tensors_and_uint8(tmp_path, as_input):
    video = solid_color_video(4)
    path = write_mp4(tmp_path / "clip.mp4", as_input(video), None, fps=24)
    assert np.abs(decoded_rgb(path).astype(np.float32) - video * 255).max() <= 6


def test_mp4_pads_odd_sizes_to_even_by_repeating_the_edge(tmp_path):
    video = solid_color_video(3, height=15, width=21)
    video[:, :, -1] = 0.5  # a grey last column, repeated into the padding column
    path = write_mp4(tmp_path / "odd.mp4", video, None, fps=24)

    with av.open(str(path)) as container:
        (stream,) = container.streams.video
        assert (stream.width, stream.height) == (22, 16)
        assert not container.streams.audio
    pixels = decoded_rgb(path).astype(np.float32)
    assert np.abs(pixels[:, :15, :21] - video * 255).max() <= 12
    assert np.abs(pixels[:, :, 21] - 0.5 * 255).max() <= 12


def test_mp4_keeps_audio_shorter_than_the_video(tmp_path):
    audio = sine(0.1, 48000)
    path = write_mp4(tmp_path / "clip.mp4", solid_color_video(12), audio, fps=24, sample_rate=48000)
    with av.open(str(path)) as container:
        assert seconds(container.streams.video[0]) == pytest.approx(0.5)
        assert abs(seconds(container.streams.audio[0]) - 0.1) <= AAC_FRAME / 48000


def test_frame_rate_is_exact():
    assert frame_rate(23.976) == Fraction(2997, 125)
    assert frame_rate(24000 / 1001) == Fraction(24000, 1001)
    assert frame_rate(12.5) == Fraction(25, 2)
    assert audio_samples_for_frames(193, 24, 48000) == 386000


# ---------------------------------------------------------------------------------------------- wav


def test_wav_pcm16_uses_the_official_clip_and_truncation(tmp_path):
    audio = np.array([0.0, 0.5, -0.5, 0.99999, -0.99999, 1.5, -2.0, 1.5 / 32767], dtype=np.float32)
    path = write_wav(tmp_path / "a.wav", audio, 24000)

    data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    assert rate == 24000
    assert soundfile.info(path).subtype == "PCM_16"
    np.testing.assert_array_equal(data[:, 0], [0, 16383, -16383, 32766, -32766, 32767, -32767, 1])


def test_wav_float32_keeps_values_and_channel_order(tmp_path):
    audio = torch.tensor([[0.25, -1.5, 2.0], [0.0, 0.125, -0.75]])
    path = write_wav(tmp_path / "a.wav", audio, 48000, sample_format="float32")

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    assert (rate, soundfile.info(path).subtype) == (48000, "FLOAT")
    np.testing.assert_array_equal(data.T, audio.numpy())


def test_wav_loudness_option_normalises(tmp_path):
    audio = sine(2.0, 48000, hz=997.0, amplitude=0.01)
    path = write_wav(tmp_path / "a.wav", audio, 48000, sample_format="float32", loudness=LoudnessTarget(-20.0))
    data, _ = soundfile.read(path, dtype="float64", always_2d=True)
    assert loudness(data.T, 48000) == pytest.approx(-20.0, abs=0.5)


# ----------------------------------------------------------------------------------------- loudness


@pytest.mark.parametrize("target_lufs, sample_rate, channels", [(-16.0, 48000, 1), (-23.0, 44100, 2)])
def test_normalize_loudness_hits_the_target_under_the_ceiling(target_lufs, sample_rate, channels):
    audio = sine(2.0, sample_rate, hz=997.0, amplitude=0.01, channels=channels)
    result = normalize_loudness(audio, sample_rate, target_lufs=target_lufs, true_peak_db=-1.0)

    assert result.skipped_reason is None and not result.peak_limited
    assert result.audio.dtype == np.float32 and result.audio.shape == audio.shape
    assert loudness(result.audio, sample_rate) == pytest.approx(target_lufs, abs=0.5)
    assert result.gain_db == pytest.approx(target_lufs - result.input_lufs)
    assert measure_true_peak_db(result.audio) <= -1.0


def test_normalize_loudness_lowers_the_gain_to_respect_the_true_peak_ceiling():
    rng = np.random.default_rng(0)
    audio = 0.001 * rng.standard_normal((1, 96000))
    audio[0, ::9600] = 0.5  # sparse clicks: quiet overall, loud peaks
    result = normalize_loudness(audio, 48000, target_lufs=-16.0, true_peak_db=-1.0)

    assert result.peak_limited
    assert measure_true_peak_db(result.audio) == pytest.approx(-1.0, abs=1e-6)
    assert loudness(result.audio, 48000) < -16.0 - 1.0


def test_true_peak_sees_between_samples():
    rate = 48000
    t = np.arange(rate) / rate
    taper = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.1)  # fade in/out: no edge ringing
    audio = taper * np.sin(2 * np.pi * (rate / 4) * t + np.pi / 4)  # samples hit only +-0.707
    assert 20 * np.log10(np.abs(audio).max()) == pytest.approx(-3.01, abs=0.01)
    assert measure_true_peak_db(audio) == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize(
    "audio, reason",
    [(np.zeros((2, 48000), np.float32), "silent"), (sine(0.2, 48000), "too short")],
    ids=["silent", "too-short"],
)
def test_normalize_loudness_returns_unmeasurable_audio_unchanged(audio, reason):
    result = normalize_loudness(audio, 48000)
    assert reason in result.skipped_reason
    assert result.gain_db == 0.0 and result.input_lufs is None
    np.testing.assert_array_equal(result.audio, audio)


def test_normalize_loudness_returns_the_input_type():
    audio = torch.from_numpy(sine(1.0, 48000, amplitude=0.05)[0])
    result = normalize_loudness(audio, 48000)
    assert isinstance(result.audio, torch.Tensor)
    assert result.audio.dtype == torch.float32 and result.audio.shape == audio.shape
    assert torch.isfinite(result.audio).all()


# ---------------------------------------------------------------------------- never overwrite, atomic


def test_unique_path_counts_up_past_taken_names(tmp_path):
    target = tmp_path / "clip.mp4"
    assert unique_path(target) == target
    target.write_bytes(b"x")
    assert unique_path(target) == tmp_path / "clip_00001.mp4"
    (tmp_path / "clip_00001.mp4").write_bytes(b"x")
    assert unique_path(str(target)) == tmp_path / "clip_00002.mp4"


WRITERS = {
    "mp4": lambda path, **kw: write_mp4(path, solid_color_video(3), sine(0.2, 48000), fps=24, sample_rate=48000, **kw),
    "wav": lambda path, **kw: write_wav(path, sine(0.1, 48000), 48000, **kw),
}


@pytest.mark.parametrize("kind", WRITERS)
def test_writers_never_overwrite_an_existing_file(tmp_path, kind):
    existing = tmp_path / f"out.{kind}"
    existing.write_bytes(b"precious bytes")

    written = WRITERS[kind](existing)

    assert written == tmp_path / f"out_00001.{kind}"
    assert existing.read_bytes() == b"precious bytes"
    assert written.stat().st_size > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out.{kind}", f"out_00001.{kind}"]


@pytest.mark.parametrize("kind", WRITERS)
def test_writers_replace_only_when_asked(tmp_path, kind):
    existing = tmp_path / f"out.{kind}"
    existing.write_bytes(b"old")
    assert WRITERS[kind](existing, overwrite=True) == existing
    assert existing.read_bytes() != b"old"
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{kind}"]


def fail_on_third_frame(monkeypatch):
    real = mp4_module.rgb24_frame

    def flaky(frame, index, *args):
        if index == 2:
            raise RuntimeError("encoder exploded")
        return real(frame, index, *args)

    monkeypatch.setattr(mp4_module, "rgb24_frame", flaky)


def fail_after_partial_wav(monkeypatch):
    def flaky(file, *args, **kwargs):
        Path(file).write_bytes(b"RIFF partial")
        raise OSError("disk full")

    monkeypatch.setattr(wav_module.soundfile, "write", flaky)


@pytest.mark.parametrize("kind, break_writer", [("mp4", fail_on_third_frame), ("wav", fail_after_partial_wav)])
@pytest.mark.parametrize("overwrite", [False, True])
def test_failed_write_leaves_no_partial_file_and_the_old_file_intact(tmp_path, monkeypatch, kind, break_writer,
                                                                     overwrite):
    existing = tmp_path / f"out.{kind}"
    existing.write_bytes(b"precious bytes")
    break_writer(monkeypatch)

    with pytest.raises((RuntimeError, OSError), match="exploded|disk full"):
        WRITERS[kind](existing, overwrite=overwrite)

    assert [p.name for p in tmp_path.iterdir()] == [f"out.{kind}"]
    assert existing.read_bytes() == b"precious bytes"


def test_write_atomically_creates_folders_and_cleans_up(tmp_path):
    target = tmp_path / "new" / "folder" / "file.bin"
    assert write_atomically(target, lambda temp: temp.write_bytes(b"done")) == target
    assert target.read_bytes() == b"done"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


# ------------------------------------------------------------------------------------------ bad input

GOOD_VIDEO = solid_color_video(2)
GOOD_AUDIO = sine(0.1, 48000)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(video=GOOD_VIDEO[0]), "video must have shape"),
        (dict(video=GOOD_VIDEO[..., :2]), "video must have shape"),
        (dict(video=GOOD_VIDEO.astype(np.int32)), "video must be floating point"),
        (dict(video=np.full_like(GOOD_VIDEO, np.nan)), "video frame 0 contains NaN"),
        (dict(fps=0), "fps"),
        (dict(fps=-24), "fps"),
        (dict(fps=float("nan")), "fps"),
        (dict(fps="24"), "fps"),
        (dict(sample_rate=None), "sample_rate is required"),
        (dict(sample_rate=0), "sample_rate"),
        (dict(sample_rate=44100.5), "sample_rate"),
        (dict(audio=np.zeros((3, 4800), np.float32)), "audio must have shape"),
        (dict(audio=np.zeros((4800, 2), np.float32)), "needs transposing"),
        (dict(audio=np.zeros(4800, np.int16)), "audio must be floating point"),
        (dict(audio=np.full(4800, np.inf, np.float32)), "audio contains NaN"),
        (dict(crf=60), "crf"),
        (dict(preset="fastest"), "preset"),
        (dict(audio_bitrate=0), "audio_bitrate"),
    ],
)
def test_write_mp4_names_the_bad_argument(tmp_path, kwargs, match):
    arguments = dict(video=GOOD_VIDEO, audio=GOOD_AUDIO, fps=24, sample_rate=48000)
    with pytest.raises(ValueError, match=match):
        write_mp4(tmp_path / "clip.mp4", **{**arguments, **kwargs})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sample_rate=-1), "sample_rate"),
        (dict(sample_format="pcm24"), "sample_format"),
        (dict(audio=torch.zeros(4800, dtype=torch.int32)), "audio must be floating point"),
        (dict(audio=np.zeros((1, 0), np.float32)), "at least one sample"),
    ],
)
def test_write_wav_names_the_bad_argument(tmp_path, kwargs, match):
    arguments = dict(audio=GOOD_AUDIO, sample_rate=48000)
    with pytest.raises(ValueError, match=match):
        write_wav(tmp_path / "a.wav", **{**arguments, **kwargs})
    assert not list(tmp_path.iterdir())


def test_loudness_target_must_be_finite():
    with pytest.raises(ValueError, match="true_peak_db"):
        normalize_loudness(GOOD_AUDIO, 48000, true_peak_db=float("nan"))
