"""CONDITIONING <-> MOVA prompt embeddings, and the LATENT dicts of the MOVA nodes (no ComfyUI needed)."""

from __future__ import annotations

import pytest
import torch

from comfyui_mova_av.nodes.conditioning import conditioning_from_embeddings, embeddings_from_conditioning
from comfyui_mova_av.nodes.latents import audio_latent, latent_settings, latent_samples, video_latent

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
    assert latent_settings(video) == {"fps": 24.0, "frames": 5, "height": 32, "width": 48}
    assert latent_settings(audio)["num_samples"] == 10000 and audio["type"] == "mova_audio"
    assert latent_settings({"samples": torch.zeros(1)}) == {}  # a LATENT from elsewhere
    assert latent_samples(video, "video_latent", 16, 5) is video["samples"]


@pytest.mark.parametrize("latent, message", [
    ({"samples": torch.zeros(1, 8, 2, 4, 6)}, r"video_latent: expected a LATENT with samples \[1, C, T, h, w\], C=16"),
    ({"samples": torch.zeros(2, 16, 2, 4, 6)}, r"video_latent: holds a batch of 2 videos"),
    ({}, r"video_latent: expected a LATENT .*got NoneType"),
])
def test_bad_latents_name_the_input(latent, message):
    with pytest.raises(ValueError, match=message):
        latent_samples(latent, "video_latent", 16, 5)


