"""Continuous DAC audio VAE: parity with the official ``DAC`` and both weight spellings."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from conftest import assert_close_to_reference
from mova_core.audio_vae import DAC, fuse_weight_norm, load_audio_vae
from mova_core.config import ConfigError, DACConfig
from mova_core.loading import CheckpointError
from mova_core.ops import CastingOps

MODULE_TOLERANCE = 1e-5  # single module, fp32 (README section 4)
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

SMALL = DACConfig(encoder_dim=2, encoder_rates=(2, 3), latent_dim=4, decoder_dim=8, decoder_rates=(3, 2),
                  sample_rate=16000, continuous=True)


# ------------------------------------------------------------------------------ parity (tiny-a and others)


@pytest.fixture(scope="module")
def ref(reference):
    return reference("audio_vae")


@pytest.fixture(scope="module")
def dac(ref) -> DAC:
    return load_audio_vae(ref.checkpoint / "audio_vae")


@pytest.mark.parity
def test_properties_match_reference(dac, ref):
    assert dac.sample_rate == ref.meta["sample_rate"]
    assert dac.hop_length == ref.meta["hop_length"]
    assert dac.latent_dim == ref.meta["latent_dim"]


@pytest.mark.parity
def test_padding_matches_preprocess(dac, ref):
    padded = dac.pad_to_hop(ref["encode/audio"])
    assert padded.shape[-1] == ref.meta["padded_len"]
    assert torch.equal(padded, ref["encode/audio_padded"])


@pytest.mark.parity
@pytest.mark.parametrize("padded_input", [False, True], ids=["raw", "padded"])
def test_encode_matches_reference(dac, ref, padded_input):
    audio = ref["encode/audio_padded" if padded_input else "encode/audio"]
    with torch.no_grad():
        mean, logvar = dac.encode_moments(audio)
        encoded = dac.encode(audio)
    frames = math.ceil(ref["encode/audio"].shape[-1] / dac.hop_length)
    assert mean.shape == (1, dac.latent_dim, frames)
    assert torch.equal(encoded, mean)
    assert_close_to_reference(mean, ref["encode/mean"], MODULE_TOLERANCE, "mean")
    assert_close_to_reference(logvar, ref["encode/logvar"], MODULE_TOLERANCE, "logvar")
    assert_close_to_reference(torch.exp(0.5 * logvar), ref["encode/std"], MODULE_TOLERANCE, "std")


@pytest.mark.parity
def test_decode_matches_reference(dac, ref):
    latent = ref["decode/latent"]
    with torch.no_grad():
        audio = dac.decode(latent)
    assert audio.shape == (latent.shape[0], 1, latent.shape[-1] * dac.hop_length)
    assert_close_to_reference(audio, ref["decode/audio"], MODULE_TOLERANCE, "decode")


@pytest.mark.parity
def test_fused_copy_of_checkpoint_decodes_identically(dac, ref, tmp_path):
    """The fixture may store either spelling; re-save it fused and compare with the original."""
    (tmp_path / "config.json").write_text((ref.checkpoint / "audio_vae" / "config.json").read_text(encoding="utf-8"))
    save_file({k: v.contiguous() for k, v in dac.state_dict().items()}, str(tmp_path / WEIGHTS_FILE))
    fused = load_audio_vae(tmp_path)
    latent = ref["decode/latent"]
    with torch.no_grad():
        assert torch.equal(fused.decode(latent), dac.decode(latent))


# ------------------------------------------------------------------------------ unit tests


def torch_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """torch's own weight norm (dim 0) applied to ``(g, v)``, as an independent reference."""
    holder = nn.Conv1d(1, 1, 1)
    holder.weight = nn.Parameter(v.clone())
    weight_norm(holder, dim=0)
    holder.parametrizations.weight.original0.data = g.clone()
    holder.parametrizations.weight.original1.data = v.clone()
    return holder.weight.detach()


@pytest.mark.parametrize("shape", [(6, 3, 7), (4, 2, 6)], ids=["conv", "transposed_in_out_k"])
def test_fuse_weight_norm_matches_torch(shape):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(shape, generator=g)
    magnitude = torch.rand(shape[0], 1, 1, generator=g) + 0.5
    torch.testing.assert_close(fuse_weight_norm(magnitude, v), torch_weight_norm(magnitude, v), rtol=1e-6, atol=1e-7)


def write_component(folder, config: DACConfig, weights: dict[str, torch.Tensor]) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    save_file(weights, str(folder / WEIGHTS_FILE))


def random_checkpoints(config: DACConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The same random DAC stored fused and as legacy ``weight_g``/``weight_v`` pairs."""
    g = torch.Generator().manual_seed(2)
    model = DAC(config)
    fused = {k: torch.rand(v.shape, generator=g) + 1.0 if k.endswith("alpha") else torch.randn(v.shape, generator=g) * 0.3
             for k, v in model.state_dict().items()}
    legacy = dict(fused)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            v = legacy.pop(f"{name}.weight")
            magnitude = 0.2 * torch.rand(v.shape[0], 1, 1, generator=g) + 0.2  # small gains: no chaotic amplification
            legacy[f"{name}.weight_g"], legacy[f"{name}.weight_v"] = magnitude, v
            fused[f"{name}.weight"] = torch_weight_norm(magnitude, v)
    return fused, legacy


def test_weight_norm_and_fused_spellings_give_same_output(tmp_path):
    fused, legacy = random_checkpoints(SMALL)
    write_component(tmp_path / "fused", SMALL, fused)
    write_component(tmp_path / "legacy", SMALL, legacy)
    models = [load_audio_vae(tmp_path / name) for name in ("fused", "legacy")]
    audio = torch.randn(2, 1, 50, generator=torch.Generator().manual_seed(3)) * 0.3
    with torch.no_grad():
        latents = [m.encode(audio) for m in models]
        decoded = [m.decode(latents[0]) for m in models]
    assert_close_to_reference(latents[1], latents[0], MODULE_TOLERANCE, "encode")
    assert_close_to_reference(decoded[1], decoded[0], MODULE_TOLERANCE, "decode")


def test_lengths_follow_hop():
    model = DAC(SMALL).eval()
    assert model.hop_length == math.prod(SMALL.encoder_rates)
    with torch.no_grad():
        for samples in (1, model.hop_length, 2 * model.hop_length + 1):
            latents = model.encode(torch.zeros(1, 1, samples))
            assert latents.shape == (1, SMALL.latent_dim, math.ceil(samples / model.hop_length))
        for frames in (1, 5):
            assert model.decode(torch.randn(3, SMALL.latent_dim, frames)).shape == (3, 1, frames * model.hop_length)


def test_bf16_weights_decode_in_input_dtype(tmp_path):
    """CastingOps: bf16-stored weights, fp32 latents -> fp32 compute (the official fp32-autocast decode)."""
    fused, _ = random_checkpoints(SMALL)
    write_component(tmp_path / "dac", SMALL, fused)
    full = load_audio_vae(tmp_path / "dac")
    half = load_audio_vae(tmp_path / "dac", dtype=torch.bfloat16, operations=CastingOps)
    latents = torch.randn(1, SMALL.latent_dim, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = half.decode(latents)
    assert out.dtype == torch.float32
    assert_close_to_reference(out, full.decode(latents).detach(), 0.05, "bf16 weights")


def test_latent_dim_defaults_to_encoder_width():
    config = DACConfig.from_dict({"encoder_dim": 4, "encoder_rates": [2, 2], "decoder_dim": 8,
                                  "decoder_rates": [2, 2], "continuous": True})
    assert config.latent_dim == 16


@pytest.mark.parametrize("change, message", [
    ({"continuous": False}, "continuous"),
    ({"decoder_rates": [3, 3]}, "decoder_rates"),
    ({"decoder_dim": 6}, "decoder_dim"),
    ({"hop": 4}, "unknown config keys"),
])
def test_bad_config_raises(change, message):
    with pytest.raises(ConfigError, match=message):
        DACConfig.from_dict({**SMALL.to_dict(), **change})


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        load_audio_vae(tmp_path)


def test_weight_g_without_weight_v_raises(tmp_path):
    _, legacy = random_checkpoints(SMALL)
    del legacy["quant_conv.weight_v"]
    write_component(tmp_path / "broken", SMALL, legacy)
    with pytest.raises(CheckpointError, match="quant_conv.weight_v"):
        load_audio_vae(tmp_path / "broken")


@pytest.mark.parametrize("shape", [(1, 100), (1, 2, 100)])
def test_encode_rejects_non_mono_audio(shape):
    with pytest.raises(ValueError, match="mono"):
        DAC(SMALL).encode(torch.zeros(shape))


def test_decode_rejects_wrong_latent_width():
    with pytest.raises(ValueError, match="latents"):
        DAC(SMALL).decode(torch.zeros(1, SMALL.latent_dim + 1, 3))
