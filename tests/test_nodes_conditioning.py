"""CONDITIONING <-> MOVA prompt embeddings, and the LATENT dicts of the MOVA nodes (no ComfyUI needed)."""

from __future__ import annotations

import pytest
import torch

from comfyui_mova_av.nodes.conditioning import conditioning_from_embeddings, embeddings_from_conditioning
from comfyui_mova_av.nodes.latents import (audio_latent, clip_info, init_latents, latent_samples,
                                            video_latent)

WIDTH = 32


def native(rows: int, tokens: int, width: int = WIDTH) -> list:
    """What CLIPTextEncode with a wan CLIP gives: max(512, n) rows, zero past the prompt."""
    cond = torch.zeros(1, rows, width)
    cond[:, :tokens] = torch.randn(1, tokens, width)
    return [[cond, {"pooled_output": None}]]


def test_mova_text_encode_output_round_trips():
    embeddings = torch.randn(1, 512, WIDTH, dtype=torch.bfloat16)
    conditioning = conditioning_from_embeddings(embeddings)
    assert conditioning[0][1] == {"pooled_output": None}
    assert conditioning[0][0].dtype == torch.float32 and conditioning[0][0].device.type == "cpu"
    assert torch.equal(embeddings_from_conditioning(conditioning, WIDTH, "positive"), embeddings.float())


def test_native_512_row_conditioning_is_used_as_is():
    conditioning = native(512, 20)
    assert torch.equal(embeddings_from_conditioning(conditioning, WIDTH, "positive"), conditioning[0][0])


def test_long_native_prompts_are_cut_to_512_rows_and_short_ones_padded_with_zeros():
    long = native(700, 650)
    assert torch.equal(embeddings_from_conditioning(long, WIDTH, "positive"), long[0][0][:, :512])
    short = [[torch.randn(1, 77, WIDTH), {}]]
    context = embeddings_from_conditioning(short, WIDTH, "negative")
    assert context.shape == (1, 512, WIDTH)
    assert torch.equal(context[:, :77], short[0][0]) and not context[:, 77:].any()


@pytest.mark.parametrize("conditioning, message", [
    (native(512, 5, width=4096), r"positive: embeddings are 4096 wide but this model reads 32-wide"),
    (native(512, 5) + native(512, 5), r"positive: has 2 prompts .*Conditioning Combine"),
    ([[torch.zeros(2, 512, WIDTH), {}]], r"positive: has a batch of 2 prompts"),
    ([[torch.zeros(512, WIDTH), {}]], r"positive: expected prompt embeddings \[batch, tokens, width\]"),
    ([], r"positive: expected a CONDITIONING"),
    (None, r"positive: expected a CONDITIONING"),
])
def test_unusable_conditioning_names_the_input_and_the_fix(conditioning, message):
    with pytest.raises(ValueError, match=message):
        embeddings_from_conditioning(conditioning, WIDTH, "positive")


def test_latent_dicts_carry_the_clip_settings():
    video = video_latent(torch.zeros(1, 16, 2, 4, 6), fps=24.0, frames=5, height=32, width=48)
    audio = audio_latent(torch.zeros(1, 32, 11), sample_rate=48000, num_samples=10000, fps=24.0, frames=5)
    assert clip_info(video) == {"fps": 24.0, "frames": 5, "height": 32, "width": 48}
    assert clip_info(audio)["num_samples"] == 10000 and audio["type"] == "mova_audio"
    assert clip_info({"samples": torch.zeros(1)}) == {}  # a LATENT from elsewhere
    assert latent_samples(video, "video_latent", 16, 5) is video["samples"]


@pytest.mark.parametrize("latent, message", [
    ({"samples": torch.zeros(1, 8, 2, 4, 6)}, r"video_latent: expected a LATENT with samples \[1, C, T, h, w\], C=16"),
    ({"samples": torch.zeros(2, 16, 2, 4, 6)}, r"video_latent: holds a batch of 2 clips"),
    ({}, r"video_latent: expected a LATENT .*got NoneType"),
])
def test_bad_latents_name_the_input(latent, message):
    with pytest.raises(ValueError, match=message):
        latent_samples(latent, "video_latent", 16, 5)


VIDEO_SHAPE, AUDIO_SHAPE = (1, 16, 2, 4, 6), (1, 32, 11)
CLIP = {"width": 48, "height": 32, "frames": 5, "fps": 24.0}


def clip_latents(video_shape=VIDEO_SHAPE, audio_shape=AUDIO_SHAPE, **made_for) -> tuple[dict, dict]:
    settings = {**CLIP, **made_for}
    return (video_latent(torch.randn(video_shape), fps=settings["fps"], frames=settings["frames"],
                         height=settings["height"], width=settings["width"]),
            audio_latent(torch.randn(audio_shape), sample_rate=48000, num_samples=10000, fps=settings["fps"],
                         frames=settings["frames"]))


def _init(video, audio, denoise):
    return init_latents(video, audio, denoise, video_shape=VIDEO_SHAPE, audio_shape=AUDIO_SHAPE, clip=CLIP)


def test_init_latents_are_the_connected_samples_below_denoise_1():
    video, audio = clip_latents()
    raw_video, audio_samples = _init(video, audio, 0.4)
    assert raw_video is video["samples"] and audio_samples is audio["samples"]
    assert _init({"samples": video["samples"]}, audio, 0.0)[0] is video["samples"], "native LATENTs (VAEEncode) too"


def test_denoise_1_samples_from_noise_whatever_is_connected():
    assert _init(None, None, 1.0) is None
    assert _init(*clip_latents(video_shape=(1, 16, 9, 9, 9)), 1.0) is None


@pytest.mark.parametrize("connected, message", [
    ((None, None), r"denoise=0.5 re-generates given latents, but video_latent and audio_latent are not connected: "
                   r"connect both .* or set denoise to 1.0"),
    (("video", None), r"but audio_latent is not connected"),
    ((None, "audio"), r"but video_latent is not connected"),
])
def test_denoise_below_1_needs_both_latents(connected, message):
    video, audio = clip_latents()
    given = {"video": video, "audio": audio}
    with pytest.raises(ValueError, match=message):
        _init(*(given.get(name) for name in connected), 0.5)


def test_latents_of_another_clip_name_the_input_and_the_settings_they_were_made_for():
    video, _ = clip_latents(video_shape=(1, 16, 3, 4, 6), frames=9)
    _, audio = clip_latents()
    with pytest.raises(ValueError, match=r"^video_latent: latents of shape \(1, 16, 3, 4, 6\) do not fit width=48, "
                                         r"height=32, frames=5 \(they need \(1, 16, 2, 4, 6\)\) \(it was made for "
                                         r"width=48, height=32, frames=9\); set width, height and frames"):
        _init(video, audio, 0.5)
    video, _ = clip_latents()
    _, audio = clip_latents(audio_shape=(1, 32, 22), fps=12.0)
    with pytest.raises(ValueError, match=r"^audio_latent: 22 latent frames do not fit frames=5, fps=24 \(they need "
                                         r"11\) \(it was made for frames=5, fps=12\); set frames and fps"):
        _init(video, audio, 0.5)
    with pytest.raises(ValueError, match=r"^audio_latent: expected a LATENT with samples \[1, C, L\], C=32"):
        _init(video, {"samples": torch.zeros(1, 64, 11), "type": "audio"}, 0.5)
    with pytest.raises(ValueError, match=r"^video_latent: holds a batch of 2 clips; MOVA nodes take one clip"):
        _init({"samples": torch.zeros(2, *VIDEO_SHAPE[1:])}, audio, 0.5)


