"""Decode post-processing: frames from VAE pixels, and the VAEs' compute device."""

from __future__ import annotations

import torch

from mova_core.audio_vae import DAC
from mova_core.tiny import AUDIO_VAE
from mova_core.video_vae import frames_from_pixels


def test_frames_from_pixels_matches_the_reference_formula_for_every_dtype():
    pixels = torch.linspace(-1.3, 1.3, 3 * 5 * 4 * 6).reshape(1, 3, 5, 4, 6)
    for dtype in (torch.float32, torch.bfloat16):
        source = pixels.to(dtype)
        expected = (source[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0)
        frames = frames_from_pixels(source.clone(), torch.device("cpu"))
        assert frames.dtype == torch.float32 and frames.shape == (5, 4, 6, 3)
        assert torch.equal(frames, expected)


def test_dac_computes_where_it_is_told():
    with torch.device("meta"):
        dac = DAC(AUDIO_VAE)
    assert dac.device.type == "meta"
    dac.compute_device = torch.device("cpu")
    assert dac.device == torch.device("cpu")
