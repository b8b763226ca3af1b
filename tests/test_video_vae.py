"""Wan 2.1 video VAE: parity with ``refs/video_vae.*`` (diffusers ``AutoencoderKLWan``) and unit tests."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_close_to_reference
from mova_core.config import ConfigError, VideoVAEConfig, read_json
from mova_core.ops import CastingOps
from mova_core.video_vae import VideoVAE, load_video_vae

# The reference's own float32 rounding error against a float64 run of the same weights is about
# 2e-6 (encode) and 4e-6 (decode) of the output scale on tiny-a, after ~30 convolutions; ours is the
# same size, and wider or longer configurations accumulate more. 2e-5 leaves room for that
# while a wrong formula (padding side, cache frame, norm scale) shows up as 1e-2 or more.
VAE_REL = 2e-5
# Per-channel affine maps (normalize/denormalize) are computed exactly as the reference does.
AFFINE_REL = 1e-6


@pytest.fixture(scope="module")
def video_vae_ref(reference):
    return reference("video_vae")


@pytest.fixture(scope="module")
def fixture_vae(video_vae_ref) -> VideoVAE:
    return load_video_vae(video_vae_ref.checkpoint / "video_vae")


def small_vae(base_dim: int = 2, z_dim: int = 4, seed: int = 0) -> VideoVAE:
    """A randomly initialised Wan 2.1-shaped VAE, small enough for CPU unit tests."""
    config = VideoVAEConfig(base_dim=base_dim, z_dim=z_dim, latents_mean=(0.5,) * z_dim, latents_std=(2.0,) * z_dim)
    torch.manual_seed(seed)
    return VideoVAE(config).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------- parity


@pytest.mark.parity
def test_config_matches_reference(video_vae_ref, fixture_vae):
    meta, config = video_vae_ref.meta, fixture_vae.config
    assert config.z_dim == meta["z_dim"]
    assert config.temporal_factor == meta["scale_factor_temporal"]
    assert config.spatial_factor == meta["scale_factor_spatial"]
    latent = (meta["latent_frames"], meta["latent_height"], meta["latent_width"])
    assert config.latent_shape(meta["num_frames"], meta["height"], meta["width"]) == latent
    assert torch.equal(torch.tensor(config.latents_mean), video_vae_ref["latents_mean"])
    assert torch.equal(torch.tensor(config.latents_std), video_vae_ref["latents_std"])


@pytest.mark.parity
def test_encode_matches_reference(video_vae_ref, fixture_vae):
    moments = fixture_vae.encode_moments(video_vae_ref["encode/video"])
    assert_close_to_reference(moments.mean, video_vae_ref["encode/mean"], VAE_REL, "encode mean")
    assert_close_to_reference(moments.logvar, video_vae_ref["encode/logvar"], VAE_REL, "encode logvar")
    assert_close_to_reference(moments.std, video_vae_ref["encode/std"], VAE_REL, "encode std")
    assert torch.equal(fixture_vae.encode(video_vae_ref["encode/video"]), moments.mean)


@pytest.mark.parity
def test_normalize_and_denormalize_match_reference(video_vae_ref, fixture_vae):
    normalized = fixture_vae.normalize(video_vae_ref["encode/mean"])
    assert_close_to_reference(normalized, video_vae_ref["encode/mean_normalized"], AFFINE_REL, "normalize")
    denormalized = fixture_vae.denormalize(video_vae_ref["decode/latent"])
    assert_close_to_reference(denormalized, video_vae_ref["denormalize/latent_denormalized"], AFFINE_REL, "denormalize")


@pytest.mark.parity
def test_decode_matches_reference(video_vae_ref, fixture_vae):
    sample = fixture_vae.decode(video_vae_ref["decode/latent"])
    assert sample.abs().max() <= 1.0
    assert_close_to_reference(sample, video_vae_ref["decode/sample"], VAE_REL, "decode sample")


@pytest.mark.parity
def test_single_file_loads_with_an_explicit_config(video_vae_ref, fixture_vae):
    folder = video_vae_ref.checkpoint / "video_vae"
    (weights,) = folder.glob("*.safetensors")
    vae = load_video_vae(weights, config=fixture_vae.config)
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), fixture_vae.state_dict().values()))


@pytest.mark.parity
def test_low_precision_storage_runs_close_to_reference(video_vae_ref):
    """bf16 weights with float32 compute through CastingOps (norm gammas cast in forward):
    only the bf16 rounding of the weights (~4e-3 relative each) separates it from the reference."""
    vae = load_video_vae(video_vae_ref.checkpoint / "video_vae", dtype=torch.bfloat16,
                         operations=CastingOps, compute_dtype=torch.float32)
    sample = vae.decode(video_vae_ref["decode/latent"])
    assert sample.dtype == torch.float32
    assert_close_to_reference(sample, video_vae_ref["decode/sample"], 0.1, "bf16-stored decode")


# ------------------------------------------------------------------------------------------ config


def _config_dict(**changes) -> dict:
    values = VideoVAEConfig().to_dict()
    values.update(changes)
    return values


@pytest.mark.parametrize("key, value, message", [
    ("is_residual", True, "is_residual"),
    ("patch_size", 2, "patch_size"),
    ("attn_scales", [0.5], "attn_scales"),
    ("scale_factor_temporal", 8, "scale_factor_temporal"),
    ("temperal_downsample", [False, True], "temperal_downsample"),
    ("latents_std", [1.0] * 15, "latents_std"),
    ("unknown_flag", 1, "unknown"),
])
def test_unsupported_config_values_raise(key, value, message):
    with pytest.raises(ConfigError, match=message):
        VideoVAEConfig.from_dict(_config_dict(**{key: value}))


def test_fixture_style_config_reads(parity_dir):
    config = VideoVAEConfig.from_file(parity_dir / "checkpoint" / "video_vae" / "config.json")
    assert config.z_dim == read_json(parity_dir / "checkpoint" / "video_vae" / "config.json")["z_dim"]


@pytest.mark.parametrize("frames, height, width, message", [
    (8, 32, 32, "num_frames"), (9, 36, 32, "height"), (0, 32, 32, "num_frames"),
])
def test_latent_shape_rejects_unencodable_sizes(frames, height, width, message):
    with pytest.raises(ValueError, match=message):
        VideoVAEConfig().latent_shape(frames, height, width)


# ------------------------------------------------------------------------------------ causality


def test_encode_is_causal_and_chunked_like_the_reference():
    """Encoding a prefix of 1 + 4k frames gives the first 1 + k latent frames of the whole video,
    and the output has the reference's (F - 1)/4 + 1 frames."""
    vae = small_vae()
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    whole = vae.encode_moments(video)
    assert whole.mean.shape == (1, 4, 3, 4, 4)
    prefix = vae.encode_moments(video[:, :, :5])
    torch.testing.assert_close(prefix.mean, whole.mean[:, :, :2], rtol=0, atol=1e-6)
    torch.testing.assert_close(prefix.logvar, whole.logvar[:, :, :2], rtol=0, atol=1e-6)


def test_later_frames_see_earlier_ones():
    """Changing frame 0 changes later latent frames (the causal cache carries context)."""
    vae = small_vae()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    changed = video.clone()
    changed[:, :, 0] = 0.0
    assert (vae.encode(video)[:, :, 1:] - vae.encode(changed)[:, :, 1:]).abs().max() > 1e-4


def test_decode_is_causal_with_four_frames_per_latent_frame():
    vae = small_vae()
    latents = torch.randn(1, 4, 3, 4, 4)
    video = vae.decode(latents)
    assert video.shape == (1, 3, 9, 32, 32)
    assert video.abs().max() <= 1.0
    torch.testing.assert_close(vae.decode(latents[:, :, :2]), video[:, :, :5], rtol=0, atol=1e-6)


def test_bad_tensors_raise_value_errors():
    vae = small_vae()
    with pytest.raises(ValueError, match="video"):
        vae.encode(torch.zeros(1, 4, 5, 16, 16))
    with pytest.raises(ValueError, match="num_frames"):
        vae.encode(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(ValueError, match="chunk 0: expected 1 frame"):
        vae.encode_chunks([torch.zeros(1, 3, 4, 16, 16)])
    with pytest.raises(ValueError, match="latents"):
        vae.decode(torch.zeros(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="tile_overlap"):
        vae.decode(torch.zeros(1, 4, 1, 2, 2), tile_size=4, tile_overlap=4)


def test_compute_device_runs_encode_and_decode_there_whatever_holds_the_weights():
    """ComfyUI's low-VRAM modes leave some or all weights on the offload device and stream them to
    the load device layer by layer: the VAE must compute on the device it is told, not on the device
    of one of its weights (which put a whole decode on the CPU)."""
    config = VideoVAEConfig(base_dim=2, z_dim=4, latents_mean=(0.5,) * 4, latents_std=(2.0,) * 4)
    vae = VideoVAE(config, CastingOps).eval().requires_grad_(False)  # weights on the CPU, cast per layer
    vae.compute_device = torch.device("meta")
    assert vae.device == torch.device("meta")
    assert vae.decode(torch.zeros(1, 4, 2, 2, 2)).device.type == "meta"
    assert vae.encode(torch.zeros(1, 3, 5, 16, 16)).device.type == "meta"
    vae.compute_device = None
    assert vae.device == torch.device("cpu")


# ------------------------------------------------------------------------------------ tiling


def test_tiled_decode_with_one_tile_is_the_full_decode():
    vae = small_vae()
    latents = torch.randn(1, 4, 2, 6, 10)
    assert torch.equal(vae.decode(latents, tile_size=10, tile_overlap=4), vae.decode(latents))


def test_tile_blending_is_exact_for_a_pixelwise_decoder(monkeypatch):
    """With a stand-in decoder that maps each latent pixel to its own 8x8 block, tiles agree on
    their overlaps, so blending must give the full result: checks tile placement, edge tiles,
    overlaps shared by three tiles and the weight normalisation."""
    vae = small_vae()
    t, s = vae.config.temporal_factor, vae.config.spatial_factor

    def pixelwise(latents: torch.Tensor) -> torch.Tensor:
        frames = torch.sin(latents[:, :3] * 3).repeat_interleave(s, -1).repeat_interleave(s, -2)
        return torch.cat([frames[:, :, :1], frames[:, :, 1:].repeat_interleave(t, 2)], dim=2)

    monkeypatch.setattr(vae, "_decode_frames", pixelwise)
    latents = torch.randn(1, 4, 2, 13, 21)
    full = vae.decode(latents)
    for tile, overlap in ((6, 4), (8, 2), (20, 1)):
        torch.testing.assert_close(vae.decode(latents, tile_size=tile, tile_overlap=overlap), full, rtol=0, atol=1e-6)


def test_tiled_decode_differs_only_near_seams_and_through_attention():
    """Tiled decoding is not bit-identical to the full decode. Measured on this random VAE (its
    weights have no spatial smoothness, so this is a worst case) with a 32x32 latent frame, tiles
    of 24 overlapping by 16: max error 0.71, mean 0.031 (mean |output| 0.11) with the mid-block
    attention (tiny-a's random weights: max 0.29, mean 0.014); with the
    attention disabled, pixels farther from every tile border than the decoder's receptive radius
    (about 17.3 latent pixels: 11 3x3 convs at latent resolution, 7, 7 and 8 at 2x, 4x, 8x) are
    exact and the difference is confined to the seams."""
    vae = small_vae()
    latents = torch.randn(1, 4, 1, 32, 32)
    tiled = vae.decode(latents, tile_size=24, tile_overlap=16)
    error = (tiled - vae.decode(latents)).abs()
    assert 0 < error.mean() < 0.5, f"mean seam error {error.mean():.3f}"

    attention = vae.decoder.mid_block.attentions[0]
    attention.proj.weight.zero_()
    attention.proj.bias.zero_()
    vae, latents = vae.double(), latents.double()  # float64: separates seam effects from rounding
    full = vae.decode(latents)
    error = (vae.decode(latents, tile_size=24, tile_overlap=16) - full).abs()
    far = 6 * vae.config.spatial_factor  # latent rows/cols 0..5: only in the first tile, 18+ from its border
    assert error[..., :far, :far].max() <= 1e-12
    assert error.max() > 1e-3  # the seams do differ
