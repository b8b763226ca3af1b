"""MOVA Encode's logic without ComfyUI: fitting images/audio to one clip, resampling, empty LATENTs, and
that encoded latents are what MOVA Sampler's re-generation accepts."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_mova_av.mova_core.media.resample import resample
from comfyui_mova_av.mova_core.pipeline import MovaPipeline
from comfyui_mova_av.mova_core.tiny import cached_tiny_checkpoint
from comfyui_mova_av.mova_core.settings import ModelGeometry, GenerationSettings
from comfyui_mova_av.nodes.latents import audio_latent, empty_latent, latent_samples, plan_encode, video_latent

RATE = 48000
GEOMETRY = dict(geometry=ModelGeometry(size_multiples=(16, 16), temporal_factor=4), sample_rate=RATE,
                num_samples_for=lambda frames, fps: int(RATE * frames / fps))


def images(frames: int = 5, height: int = 32, width: int = 48, channels: int = 3) -> torch.Tensor:
    return torch.rand(frames, height, width, channels, generator=torch.Generator().manual_seed(0))


def audio(seconds: float, rate: int = RATE, channels: int = 2) -> dict:
    return {"waveform": torch.randn(1, channels, round(seconds * rate)), "sample_rate": rate}


def test_images_set_the_clip_and_longer_audio_is_trimmed_to_it():
    plan = plan_encode(images(channels=4), audio(1.0), 24.0, **GEOMETRY)
    assert (plan.frames, plan.height, plan.width, plan.num_samples) == (5, 32, 48, 10000)
    assert plan.images.shape == (5, 32, 48, 3) and plan.waveform.shape == (2, 10000)


def test_audio_up_to_a_frame_short_is_padded_with_silence_and_shorter_audio_is_refused():
    sound = audio(9000 / RATE)
    plan = plan_encode(images(), sound, 24.0, **GEOMETRY)
    assert plan.waveform.shape == (2, 10000) and torch.equal(plan.waveform[:, :9000], sound["waveform"][0])
    assert not plan.waveform[:, 9000:].any()
    with pytest.raises(ValueError, match=r"audio: 0\.100 s is shorter than the images: 5 frames at fps=24 need "
                                         r"0\.208 s \(10000 samples at 48000 Hz\)"):
        plan_encode(images(), audio(0.1), 24.0, **GEOMETRY)


def test_audio_alone_sets_the_frames_and_must_cover_4k_plus_1_of_them():
    plan = plan_encode(None, audio(9 / 24), 24.0, **GEOMETRY)
    assert (plan.frames, plan.num_samples, plan.images, plan.height) == (9, 18000, None, None)
    with pytest.raises(ValueError, match=r"audio: 0\.333 s at fps=24 is 8 frames, .* 4k\+1 frames; nearest valid "
                                         r"value: 9 frames = 0\.375 s \(18000 samples at 48000 Hz\)"):
        plan_encode(None, audio(8 / 24), 24.0, **GEOMETRY)


def test_other_sample_rates_are_resampled_to_the_models():
    plan = plan_encode(None, audio(5 / 24, rate=44100, channels=1), 24.0, **GEOMETRY)
    assert plan.frames == 5 and plan.waveform.shape == (1, 10000)


@pytest.mark.parametrize(("frames", "height", "width", "message"), [
    (6, 32, 48, r"images \(6 frames of 48x32\): frames=6 must be 4k\+1 .*nearest valid value: 5\."),
    (5, 32, 40, r"images \(5 frames of 40x32\): width=40 must be a positive multiple of 16; nearest valid value: 32\."),
    (5, 24, 48, r"images \(5 frames of 48x24\): height=24 .*nearest valid value: 16\."),
])
def test_images_of_invalid_frames_or_sizes_name_the_input_and_the_nearest_value(frames, height, width, message):
    with pytest.raises(ValueError, match=message):
        plan_encode(images(frames, height, width), None, 24.0, **GEOMETRY)


def test_bad_or_missing_inputs_are_named():
    with pytest.raises(ValueError, match="needs images, audio, or both"):
        plan_encode(None, None, 24.0, **GEOMETRY)
    with pytest.raises(ValueError, match=r"audio: expected a single AUDIO .*\(2, 1, 100\)"):
        plan_encode(None, {"waveform": torch.zeros(2, 1, 100), "sample_rate": RATE}, 24.0, **GEOMETRY)
    with pytest.raises(ValueError, match=r"images: expected an IMAGE batch"):
        plan_encode(torch.zeros(5, 32, 48), None, 24.0, **GEOMETRY)


def test_an_empty_latent_tells_the_sampler_what_to_connect():
    only_images = plan_encode(images(), None, 24.0, **GEOMETRY)
    empty_audio = empty_latent("audio_latent", only_images, channels=32, spatial_multiple=(16, 16))
    assert empty_audio["mova"]["frames"] == 5 and empty_audio["samples"].shape == (1, 32, 0)
    with pytest.raises(ValueError, match=r"audio_latent: MOVA Encode got only images, .* connect audio to MOVA "
                                         r"Encode \(0\.208 s; any sample rate\), or an audio_latent from a MOVA "
                                         r"Sampler with width=48, height=32, frames=5, fps=24\."):
        latent_samples(empty_audio, "audio_latent", 32, 3)
    only_audio = plan_encode(None, audio(5 / 24), 24.0, **GEOMETRY)
    empty_video = empty_latent("video_latent", only_audio, channels=16, spatial_multiple=(16, 16))
    with pytest.raises(ValueError, match=r"video_latent: MOVA Encode got only audio, .* connect images to MOVA "
                                         r"Encode \(5 frames, .*\), or a video_latent from a MOVA Sampler with frames=5"):
        latent_samples(empty_video, "video_latent", 16, 5)


def test_resampling_keeps_a_tone_in_place():
    seconds = torch.arange(44100) / 44100
    tone = torch.sin(2 * math.pi * 440 * seconds)[None]
    resampled = resample(tone, 44100, RATE)
    expected = torch.sin(2 * math.pi * 440 * torch.arange(RATE) / RATE)[None]
    assert resampled.shape == (1, RATE)
    assert (resampled - expected)[:, 50:-50].abs().max() < 5e-3  # band-limited, no delay
    assert torch.equal(resample(tone, RATE, RATE), tone)


@pytest.fixture(scope="module")
def tiny_pipeline() -> MovaPipeline:
    return MovaPipeline.from_pretrained(cached_tiny_checkpoint(), dtype=torch.float32)


def test_encoded_latents_are_what_the_samplers_re_generation_accepts(tiny_pipeline: MovaPipeline):
    pipe = tiny_pipeline
    rate = pipe.audio_vae.sample_rate
    fps = 24.0
    plan = plan_encode(images(), audio(0.3, rate=rate), fps, geometry=pipe.geometry, sample_rate=rate,
                       num_samples_for=pipe.audio_num_samples)
    video = pipe.encode_video(plan.images)
    sound = pipe.encode_audio(plan.waveform)
    settings = GenerationSettings(height=plan.height, width=plan.width, num_frames=plan.frames, fps=fps, steps=2,
                            denoising_strength=0.3)
    run = pipe.prepare(settings, video_init=video, audio_init=sound)
    assert torch.equal(run.video_init, video) and torch.equal(run.audio_init, sound)
