"""Audio-driven video and video-driven audio (``generate(audio=...)`` / ``generate(video=...)``) on the in-repo
reference checkpoints, whose sample rates, hops and fps differ from MOVA's (44.1 kHz / 735, 24 kHz / 480)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile
import torch

from conftest import IN_REPO_PARITY_DIR
from mova_core.media.audio_input import frames_covering
from mova_core.pipeline import MovaPipeline

CHECKPOINTS = sorted(p / "checkpoint" for p in IN_REPO_PARITY_DIR.iterdir() if (p / "checkpoint").is_dir())


@pytest.fixture(scope="module", params=CHECKPOINTS, ids=lambda path: path.parent.name)
def pipe(request) -> MovaPipeline:
    return MovaPipeline.from_pretrained(request.param, dtype=torch.float32)


def _clip(pipe: MovaPipeline) -> dict:
    height, width = pipe.geometry.size_multiples
    return dict(height=2 * height, width=2 * width, num_frames=2 * pipe.geometry.temporal_factor + 1, fps=20.0,
                steps=3, text_cfg=2.0, seed=5)


def _voice(pipe: MovaPipeline, seconds: float, channels: int = 1) -> torch.Tensor:
    rate = pipe.audio_vae.sample_rate
    time = torch.arange(int(seconds * rate)) / rate
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * time) * torch.sin(2 * torch.pi * 3 * time)
    return tone.repeat(channels, 1)


def test_frozen_audio_is_returned_bit_for_bit_never_changes_and_drives_the_video(pipe):
    clip = _clip(pipe)
    samples = pipe.audio_num_samples(clip["num_frames"], clip["fps"])
    voice = _voice(pipe, 2 * samples / pipe.audio_vae.sample_rate, channels=2)
    states = []
    driven = pipe.generate("a singer", audio=(voice, pipe.audio_vae.sample_rate), callback=states.append, **clip)
    plain = pipe.generate("a singer", **clip)
    assert torch.equal(driven.audio, voice[:, :samples]), "the given waveform, trimmed to the clip"
    encoded = pipe.encode_audio(voice[:, :samples])
    assert all(torch.equal(info.audio_latents, encoded) for info in states)
    assert {info.audio_timestep for info in states} == {0.0}
    assert not torch.equal(driven.video_latents, plain.video_latents), "the audio reaches the video through the Bridge"


def test_strength_0_keeps_the_audio_and_strength_1_is_plain_generation(pipe):
    clip = _clip(pipe)
    voice = _voice(pipe, 1.0)
    plain = pipe.generate("a singer", **clip)
    kept = pipe.generate("a singer", audio=(voice, pipe.audio_vae.sample_rate), audio_mode="strength",
                         audio_strength=0.0, **clip)
    frozen = pipe.generate("a singer", audio=(voice, pipe.audio_vae.sample_rate), **clip)
    fresh = pipe.generate("a singer", audio=(voice, pipe.audio_vae.sample_rate), audio_mode="strength",
                          audio_strength=1.0, **clip)
    half = pipe.generate("a singer", audio=(voice, pipe.audio_vae.sample_rate), audio_mode="strength",
                         audio_strength=0.5, **clip)
    assert torch.equal(kept.audio, frozen.audio) and torch.equal(kept.video_latents, frozen.video_latents)
    assert torch.equal(fresh.video_latents, plain.video_latents) and torch.equal(fresh.audio, plain.audio)
    given = pipe.encode_audio(kept.audio)
    distance = lambda result: (result.audio_latents - given).norm().item()  # noqa: E731
    assert distance(kept) == 0.0 < distance(half) < distance(fresh)


def test_no_frame_count_covers_the_audio_and_other_rates_are_resampled(pipe, tmp_path: Path):
    clip = {**_clip(pipe), "num_frames": None}
    rate, seconds = pipe.audio_vae.sample_rate, 0.83
    time = torch.arange(int(seconds * 2 * rate)) / (2 * rate)
    path = tmp_path / "voice.wav"
    soundfile.write(str(path), (0.3 * torch.sin(2 * torch.pi * 220 * time)).numpy(), 2 * rate, subtype="FLOAT")
    result = pipe.generate("a singer", audio=path, **clip)
    frames, factor = result.video.shape[0], pipe.geometry.temporal_factor
    resampled = int(seconds * rate)
    assert (frames - 1) % factor == 0
    assert pipe.audio_num_samples(frames, clip["fps"]) >= resampled > pipe.audio_num_samples(frames - factor, clip["fps"])
    assert frames == frames_covering(resampled, rate, clip["fps"], factor)
    assert result.audio.shape == (1, pipe.audio_num_samples(frames, clip["fps"]))
    torch.testing.assert_close(result.audio[0, 1000:2000], 0.3 * torch.sin(2 * torch.pi * 220 * torch.arange(1000, 2000) / rate),
                               atol=5e-3, rtol=0)


def test_frozen_video_gets_a_soundtrack_and_is_returned_as_given(pipe):
    clip = _clip(pipe)
    frames = torch.rand(clip["num_frames"], clip["height"], clip["width"], 3, generator=torch.Generator().manual_seed(1))
    states = []
    scored = pipe.generate("rain on a roof", video=frames, callback=states.append, **clip)
    plain = pipe.generate("rain on a roof", image=frames[0], **clip)
    assert torch.equal(scored.video, frames)
    encoded = pipe.video_vae.normalize(pipe.encode_video(frames))  # the sampler works on normalised video latents
    assert all(torch.equal(info.video_latents, encoded) for info in states)
    assert {info.expert for info in states} == {"video_dit_2"}, "a clean video is the low-noise expert's"
    assert not torch.equal(scored.audio_latents, plain.audio_latents)


def test_bad_driving_inputs_name_the_argument(pipe):
    clip = _clip(pipe)
    with pytest.raises(ValueError, match=r"audio_mode='loop' is not available; choose one of \['freeze', 'strength'\]"):
        pipe.generate("x", audio=(torch.zeros(1, 100), 8000), audio_mode="loop", **clip)
    with pytest.raises(ValueError, match="audio: contains NaN"):
        pipe.generate("x", audio=(torch.full((1, 100), float("nan")), 8000), **clip)
    with pytest.raises(FileNotFoundError, match="audio: .*missing.wav does not exist"):
        pipe.generate("x", audio="missing.wav", **clip)
    with pytest.raises(ValueError, match="video: frames are 8x8, but the clip is"):
        pipe.generate("x", video=torch.zeros(5, 8, 8, 3), **clip)
    with pytest.raises(ValueError, match="num_frames is left to the given audio, but no audio is given"):
        pipe.generate("x", **{**clip, "num_frames": None})
    with pytest.raises(ValueError, match="give audio or audio_init, not both"):
        pipe.generate("x", audio=(torch.zeros(1, 100), 8000), audio_init=torch.zeros(1, 2, 3), **clip)


def test_cli_audio_drives_a_clip_that_covers_it(tmp_path: Path):
    import subprocess
    import sys

    import av

    from conftest import REPO_ROOT
    from mova_core.tiny import cached_tiny_checkpoint

    rate, seconds = 48000, 1.3
    time = torch.arange(int(seconds * rate)) / rate
    soundfile.write(str(tmp_path / "voice.wav"), (0.3 * torch.sin(2 * torch.pi * 220 * time)).numpy(), rate)
    command = [sys.executable, "-m", "mova_core", "generate", "--model", str(cached_tiny_checkpoint()), "--prompt",
               "a man speaks", "--audio", str(tmp_path / "voice.wav"), "--height", "32", "--width", "48", "--steps",
               "2", "--fps", "24", "--dtype", "float32", "--out", str(tmp_path / "talk.mp4")]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with av.open(str(tmp_path / "talk.mp4")) as container:
        frames = container.streams.video[0].frames
    assert frames == frames_covering(int(seconds * rate), rate, 24.0, 4) == 33
    bad = subprocess.run(command[:-2] + ["--audio", str(tmp_path / "none.wav"), "--out", str(tmp_path / "x.mp4")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--audio" in bad.stderr and "none.wav does not exist" in bad.stderr


def test_cli_speed_options_run_and_a_bad_threshold_is_refused_before_loading(tmp_path: Path):
    import subprocess
    import sys

    from conftest import REPO_ROOT
    from mova_core.tiny import cached_tiny_checkpoint

    base = [sys.executable, "-m", "mova_core", "generate", "--model", str(cached_tiny_checkpoint()), "--prompt", "x",
            "--height", "32", "--width", "48", "--frames", "5", "--steps", "4", "--dtype", "float32"]
    done = subprocess.run(base + ["--cache-threshold", "1", "--batch-guidance", "--out", str(tmp_path / "a.mp4")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "step cache:" in done.stdout and "model passes computed" in done.stdout and (tmp_path / "a.mp4").is_file()
    bad = subprocess.run(base + ["--cache-threshold", "nan", "--out", str(tmp_path / "b.mp4")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--cache-threshold nan" in bad.stderr and not (tmp_path / "b.mp4").exists()
