"""MovaPipeline behaviour on a tiny random checkpoint: arguments, seeds, T2VA, the demo CLI."""

from __future__ import annotations

import subprocess
import sys

import av
import pytest
import torch

from conftest import REPO_ROOT
from mova_core.pipeline import MovaPipeline, seeded_noise
from mova_core.settings import ModelGeometry, GenerationSettings, check_settings, size_multiples
from mova_core.tiny import cached_tiny_checkpoint, write_tiny_checkpoint

SMALL = dict(height=32, width=48, num_frames=5, fps=24.0, steps=2)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")
    return MovaPipeline.from_pretrained(folder, dtype=torch.float32)


@pytest.mark.parametrize("argument, value, nearest", [
    ("height", 360, "352"), ("width", 100, "96"), ("num_frames", 192, "193"), ("steps", 0, "1"),
])
def test_bad_arguments_name_the_argument_and_nearest_value(pipe, argument, value, nearest):
    with pytest.raises(ValueError, match=rf"{argument}={value}.*nearest valid value: {nearest}"):
        pipe.generate("a cat", **{**SMALL, argument: value})


def test_height_and_width_follow_their_own_patch_side():
    """A (1, 2, 4) patch needs height % 16 and width % 32 only: 48 x 64 is valid, 48 x 48 is not."""
    assert size_multiples((1, 2, 2), 8) == (16, 16)
    assert size_multiples((1, 2, 4), 8) == (16, 32)
    assert size_multiples((2, 4, 1), 8) == (32, 16)
    geometry = ModelGeometry(size_multiples=(16, 32), temporal_factor=4)
    clip = dict(num_frames=13, fps=25.0, steps=4)
    check_settings(GenerationSettings(height=48, width=64, **clip), geometry)
    with pytest.raises(ValueError, match="width=48 must be a positive multiple of 32; nearest valid value: 32"):
        check_settings(GenerationSettings(height=48, width=48, **clip), geometry)


def test_bad_fps_image_and_options_are_refused(pipe):
    with pytest.raises(ValueError, match="fps=0"):
        pipe.generate("a cat", **{**SMALL, "fps": 0})
    with pytest.raises(ValueError, match="image"):
        pipe.generate("a cat", image=torch.zeros(8, 8, 4, dtype=torch.uint8), **SMALL)
    with pytest.raises(ValueError, match=r"unknown generate option\(s\) \['cfg'\]"):
        pipe.generate("a cat", cfg=3.0, **SMALL)
    with pytest.raises(ValueError, match="video_noise has shape"):
        pipe.generate("a cat", video_noise=torch.zeros(1, 2, 3), audio_noise=torch.zeros(1, 2, 3), **SMALL)


def test_output_layout_and_audio_trim(pipe):
    result = pipe.generate("a dog on the beach", seed=3, **SMALL)
    assert result.video.shape == (SMALL["num_frames"], SMALL["height"], SMALL["width"], 3)
    assert result.video.dtype == torch.float32 and 0 <= result.video.min() and result.video.max() <= 1
    expected_samples = int(pipe.audio_vae.sample_rate * SMALL["num_frames"] / SMALL["fps"])
    assert result.audio.shape == (1, expected_samples)
    assert result.sample_rate == pipe.audio_vae.sample_rate and result.seed == 3


def test_a_seed_draws_the_noise_of_seeded_noise(pipe):
    shapes = pipe.latent_shapes(SMALL["height"], SMALL["width"], SMALL["num_frames"], SMALL["fps"])
    video, audio = seeded_noise(123, *shapes)
    seeded = pipe.generate("a dog", seed=123, **SMALL)
    given = pipe.generate("a dog", video_noise=video, audio_noise=audio, **SMALL)
    assert torch.equal(seeded.video, given.video) and torch.equal(seeded.audio, given.audio)
    assert not torch.equal(seeded_noise(124, *shapes)[0], video)


def test_same_seed_same_clip_and_other_seed_differs(pipe):
    first = pipe.generate("a dog", seed=7, **SMALL)
    again = pipe.generate("a dog", seed=7, **SMALL)
    other = pipe.generate("a dog", seed=8, **SMALL)
    assert torch.equal(first.video, again.video) and torch.equal(first.audio, again.audio)
    assert not torch.equal(first.video, other.video)


def test_image_conditions_the_clip(pipe):
    red = torch.zeros(40, 60, 3, dtype=torch.uint8)
    red[..., 0] = 255
    t2va = pipe.generate("a dog", seed=1, **SMALL)
    i2va = pipe.generate("a dog", image=red, seed=1, **SMALL)
    assert not torch.equal(t2va.video, i2va.video)


def test_bridge_cfg_changes_the_result(pipe):
    plain = pipe.generate("a dog", seed=2, text_cfg=3.0, bridge_cfg=1.0, **SMALL)
    bridged = pipe.generate("a dog", seed=2, text_cfg=3.0, bridge_cfg=2.0, **SMALL)
    assert not torch.equal(plain.audio, bridged.audio)


def test_cached_checkpoint_is_built_once(tmp_path):
    first = cached_tiny_checkpoint(tmp_path)
    stamp = (first / "video_dit" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert cached_tiny_checkpoint(tmp_path) == first
    assert (first / "video_dit" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no staging folders left behind"


def test_demo_cli_writes_an_mp4_with_sound_and_never_overwrites(tmp_path):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"precious")
    command = [sys.executable, "-m", "mova_core", "demo", "--out", str(out), "--cache", str(tmp_path / "cache"),
               "--steps", "2", "--frames", "9"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == b"precious"
    written = tmp_path / "clip_00001.mp4"
    assert f"wrote {written}" in done.stdout
    with av.open(str(written)) as container:
        kinds = sorted(stream.type for stream in container.streams)
    assert kinds == ["audio", "video"]


# --- first + last frame ------------------------------------------------------------------------

def _solid(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).expand(40, 60, 3).contiguous()


def test_last_image_conditions_the_end_of_the_clip(pipe):
    red, blue, green = _solid((255, 0, 0)), _solid((0, 0, 255)), _solid((0, 255, 0))
    i2va = pipe.generate("a dog", image=red, seed=1, **SMALL)
    to_blue = pipe.generate("a dog", image=red, seed=1, last_image=blue, **SMALL)
    to_green = pipe.generate("a dog", image=red, seed=1, last_image=green, **SMALL)
    again = pipe.generate("a dog", image=red, seed=1, last_image=blue, **SMALL)
    assert torch.equal(to_blue.video, again.video)
    assert not torch.equal(i2va.video[-1], to_blue.video[-1])
    assert not torch.equal(to_blue.video[-1], to_green.video[-1])


def test_last_image_needs_a_first_image_and_a_usable_picture(pipe):
    with pytest.raises(ValueError, match=r"last_image needs image \(the first frame\)"):
        pipe.generate("a dog", last_image=_solid((0, 0, 255)), **SMALL)
    with pytest.raises(ValueError, match=r"^last_image: .*4 channels"):
        pipe.generate("a dog", image=_solid((255, 0, 0)), last_image=torch.zeros(8, 8, 4, dtype=torch.uint8), **SMALL)


# --- re-generation with a denoising strength ---------------------------------------------------

@pytest.fixture(scope="module")
def original(pipe):
    return pipe.generate("a dog", seed=4, **SMALL)


def test_full_strength_from_given_latents_is_plain_sampling(pipe, original):
    plain = pipe.generate("a cat", seed=5, **SMALL)
    from_init = pipe.generate("a cat", seed=5, video_init=original.video_latents, audio_init=original.audio_latents,
                              denoising_strength=1.0, **SMALL)
    assert torch.equal(plain.video_latents, from_init.video_latents)
    assert torch.equal(plain.audio_latents, from_init.audio_latents)


def test_low_strength_stays_close_to_the_given_latents(pipe, original):
    """The distance to the init latents grows with the strength, and a tiny strength barely moves them."""
    def distances(strength: float) -> tuple[float, float]:
        result = pipe.generate("a cat", seed=5, video_init=original.video_latents, audio_init=original.audio_latents,
                               denoising_strength=strength, **SMALL)
        return ((result.video_latents - original.video_latents).norm() / original.video_latents.norm()).item(), \
            ((result.audio_latents - original.audio_latents).norm() / original.audio_latents.norm()).item()

    tiny, half, full = distances(0.01), distances(0.5), distances(1.0)
    assert tiny[0] < 0.1 * full[0] and tiny[1] < 0.1 * full[1], (tiny, full)
    assert tiny[0] < half[0] < full[0] and tiny[1] < half[1] < full[1], (tiny, half, full)


def test_given_latents_are_checked(pipe, original):
    with pytest.raises(ValueError, match="denoising_strength=0.5 re-generates given latents, but video_init and "
                                         "audio_init are missing"):
        pipe.generate("a cat", denoising_strength=0.5, **SMALL)
    with pytest.raises(ValueError, match="but audio_init is missing: give both video_init and audio_init"):
        pipe.generate("a cat", video_init=original.video_latents, denoising_strength=0.5, **SMALL)
    with pytest.raises(ValueError, match=r"video_init has shape .*, but height=32, width=48, num_frames=5, fps=24 needs"):
        pipe.generate("a cat", video_init=original.video_latents[:, :, :1], audio_init=original.audio_latents,
                      denoising_strength=0.5, **SMALL)


def test_zero_strength_returns_the_given_latents_without_running_a_model(pipe, original):
    def no_model_pass():
        raise AssertionError("a model pass ran")

    again = pipe.generate("a cat", video_init=original.video_latents, audio_init=original.audio_latents,
                          denoising_strength=0.0, check_cancelled=no_model_pass, **SMALL)
    assert torch.equal(again.video_latents, original.video_latents)
    assert torch.equal(again.audio_latents, original.audio_latents)
    assert torch.equal(again.video, original.video) and torch.equal(again.audio, original.audio)


def test_a_decoded_clip_encodes_to_init_latents(pipe, original):
    video_latents = pipe.encode_video(original.video)
    audio_latents = pipe.encode_audio(original.audio)
    video_shape, audio_shape = pipe.latent_shapes(SMALL["height"], SMALL["width"], SMALL["num_frames"], SMALL["fps"])
    assert video_latents.shape == video_shape and audio_latents.shape == audio_shape
    again = pipe.generate("a dog", seed=6, video_init=video_latents, audio_init=audio_latents, denoising_strength=0.3,
                          **SMALL)
    assert again.video.shape == original.video.shape
    with pytest.raises(ValueError, match=r"frames: expected float \[F, H, W, 3\]"):
        pipe.encode_video(original.video[0])
    with pytest.raises(ValueError, match=r"waveform: expected float \[channels, samples\]"):
        pipe.encode_audio(original.audio[0])
