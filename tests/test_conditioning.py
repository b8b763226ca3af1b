"""Reference-image handling and the I2V / first+last-frame conditions: parity with ``refs/video_vae.*``,
``refs/pipeline_cfg5.*`` (official ``crop_and_resize`` + ``MOVA.prepare_latents``) and the official FLF
condition in ``refs/flf_condition.*`` (for tiny-a, which has none, ``tests/data/flf_condition_tiny_a.*``),
and unit tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from safetensors.torch import load_file

from conftest import Reference, assert_close_to_reference
from mova_core.conditioning import (
    condition_mask,
    crop_and_resize,
    image_condition,
    prepare_reference_image,
    preprocess_image,
    to_image_tensor,
    white_image,
)
from mova_core.config import VideoVAEConfig
from mova_core.video_vae import VideoVAE, load_video_vae

# The condition is a VAE encode (see tests/test_video_vae.py for why 2e-5): the reference's own
# float32 rounding is ~2e-6 of the scale on tiny-a.
CONDITION_REL = 2e-5
# tiny-a (in ../shared, which cannot be written from here) has no refs/flf_condition.*: its FLF
# condition was recorded separately, for its video VAE (matched by weight digest).
TINY_A_FLF = Path(__file__).resolve().parent / "data" / "flf_condition_tiny_a"


@pytest.fixture(scope="module")
def fixture_vae(reference) -> VideoVAE:
    return load_video_vae(reference("video_vae").checkpoint / "video_vae")


@pytest.fixture(scope="module")
def pipeline_ref(reference):
    return reference("pipeline_cfg5")


def _vae_digests_match(meta: dict, vae_folder: Path) -> bool:
    digests = {name: hashlib.sha256((vae_folder / name).read_bytes()).hexdigest()
               for name in meta["video_vae_sha256"] if (vae_folder / name).is_file()}
    return digests == meta["video_vae_sha256"]


class TinyAFLF(Reference):
    """``tests/data/flf_condition_tiny_a.*`` read like a folder's ``refs/flf_condition.*``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tensors = load_file(str(TINY_A_FLF.with_suffix(".safetensors")))
        self.meta = json.loads(TINY_A_FLF.with_suffix(".json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def flf_reference(parity_dir, reference):
    """The folder's ``refs/flf_condition.*`` (written by tools/record_parity.py), or, for a folder
    without one, ``tests/data/flf_condition_tiny_a.*`` when its video VAE is this folder's."""
    if (parity_dir / "refs" / "flf_condition.safetensors").is_file():
        return reference("flf_condition")
    ref = TinyAFLF(parity_dir)
    if not _vae_digests_match(ref.meta, parity_dir / "checkpoint" / "video_vae"):
        pytest.skip(f"{parity_dir} has no refs/flf_condition.* (re-record it with tools/record_parity.py)")
    return ref


def small_vae(z_dim: int = 4) -> VideoVAE:
    config = VideoVAEConfig(base_dim=2, z_dim=z_dim, latents_mean=(0.25,) * z_dim, latents_std=(1.5,) * z_dim)
    torch.manual_seed(0)
    return VideoVAE(config).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------- parity


@pytest.mark.parity
def test_crop_and_resize_matches_official(pipeline_ref):
    """Bit-exact: same crop arithmetic and PIL's bicubic resize (checked with Pillow 13.0)."""
    meta = pipeline_ref.meta
    image = crop_and_resize(pipeline_ref["source_image_uint8"], meta["height"], meta["width"])
    assert image.dtype == torch.uint8
    assert torch.equal(image, pipeline_ref["image_uint8"])


@pytest.mark.parity
def test_preprocessing_matches_official(pipeline_ref):
    meta = pipeline_ref.meta
    assert torch.equal(preprocess_image(pipeline_ref["image_uint8"]), pipeline_ref["image_preprocessed"])
    from_source = prepare_reference_image(pipeline_ref["source_image_uint8"], meta["height"], meta["width"])
    assert torch.equal(from_source, pipeline_ref["image_preprocessed"])
    pil = Image.fromarray(pipeline_ref["source_image_uint8"].numpy())
    assert torch.equal(prepare_reference_image(pil, meta["height"], meta["width"]), pipeline_ref["image_preprocessed"])


@pytest.mark.parity
def test_image_condition_matches_reference(reference, fixture_vae):
    ref = reference("video_vae")
    condition = image_condition(fixture_vae, ref["i2v/image"], ref.meta["num_frames"])
    assert condition.dtype == torch.float32
    assert_close_to_reference(condition, ref["i2v/condition"], CONDITION_REL, "i2v condition")


@pytest.mark.parity
def test_pipeline_condition_matches_reference(pipeline_ref, fixture_vae):
    """The whole official image path: source picture -> crop/resize -> preprocess -> condition."""
    meta = pipeline_ref.meta
    image = prepare_reference_image(pipeline_ref["source_image_uint8"], meta["height"], meta["width"])
    condition = image_condition(fixture_vae, image, meta["num_frames"])
    assert_close_to_reference(condition, pipeline_ref["init/condition"], CONDITION_REL, "pipeline init/condition")
    mask_channels = fixture_vae.config.temporal_factor
    assert torch.equal(condition[:, :mask_channels], pipeline_ref["init/condition"][:, :mask_channels])


@pytest.mark.parity
def test_first_last_frame_condition_matches_official(flf_reference):
    """Official ``prepare_latents(..., last_image=...)`` with both pictures through the official image
    path: each picture is cropped/resized and preprocessed exactly as the official code does, and the
    condition (mask + latents) matches for every recorded clip length."""
    ref = flf_reference
    assert _vae_digests_match(ref.meta, ref.root / "checkpoint" / "video_vae"), "recorded with another video VAE"
    vae = load_video_vae(ref.root / "checkpoint" / "video_vae")
    height, width = ref.meta["height"], ref.meta["width"]
    first = prepare_reference_image(ref["first_source_uint8"], height, width)
    last = prepare_reference_image(ref["last_source_uint8"], height, width, name="last_image")
    for which, prepared in (("first", first), ("last", last)):
        source = ref[f"{which}_source_uint8"]
        assert source.shape[0] * width != source.shape[1] * height, f"{which} source has the clip's aspect"
        if f"{which}_image_uint8" in ref.tensors:
            assert torch.equal(crop_and_resize(source, height, width), ref[f"{which}_image_uint8"]), which
        if f"{which}_image_preprocessed" in ref.tensors:
            assert torch.equal(prepared, ref[f"{which}_image_preprocessed"]), which
    mask_channels = vae.config.temporal_factor
    for frames in ref.meta["frame_counts"]:
        expected = ref[f"frames{frames}/condition"]
        condition = image_condition(vae, first, frames, last_image=last)
        assert torch.equal(condition[:, :mask_channels], expected[:, :mask_channels]), f"{frames} frames: mask"
        assert_close_to_reference(condition, expected, CONDITION_REL, f"FLF condition, {frames} frames")


# ------------------------------------------------------------------------------- image inputs


def test_accepted_image_forms_give_the_same_uint8_pixels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    expected = torch.from_numpy(pixels)
    comfy_batch = torch.stack([expected, 255 - expected]).float() / 255.0  # [B, H, W, C] 0..1, first used
    rgba = Image.fromarray(np.dstack([pixels, np.full((5, 7), 9, np.uint8)]), "RGBA")
    for image in (pixels, expected, Image.fromarray(pixels), rgba, comfy_batch, comfy_batch[0]):
        converted = to_image_tensor(image)
        assert converted.dtype == torch.uint8 and torch.equal(converted, expected)


def test_float_images_are_clamped_and_rounded():
    image = torch.tensor([[[-0.2, 0.5, 1.3]]])
    assert to_image_tensor(image).tolist() == [[[0, 128, 255]]]


def test_grayscale_pil_images_become_rgb():
    gray = Image.fromarray(np.full((4, 6), 77, np.uint8), "L")
    assert torch.equal(to_image_tensor(gray), torch.full((4, 6, 3), 77, dtype=torch.uint8))


@pytest.mark.parametrize("image, message", [
    (torch.zeros(1, 8, 8, 4), "4 channels.*3 channels"),
    (np.zeros((8, 8, 1), np.uint8), "1 channels.*3 channels"),
    (torch.zeros(8, 8), r"\[H, W, 3\]"),
    (torch.zeros(0, 8, 8, 3), "empty"),
    (torch.zeros(8, 8, 3, dtype=torch.int64), "dtype"),
    ([[0, 0, 0]], "PIL image"),
])
def test_bad_images_raise_value_errors_naming_the_argument(image, message):
    with pytest.raises(ValueError, match=f"^start_image: .*{message}"):
        to_image_tensor(image, name="start_image")
    with pytest.raises(ValueError, match="^start_image: "):
        prepare_reference_image(image, 16, 16, name="start_image")


# ----------------------------------------------------------------------------- crop and resize


@pytest.mark.parametrize("source_hw, target_hw", [((40, 97), (32, 64)), ((91, 40), (32, 64)), ((33, 51), (64, 32))])
def test_crop_keeps_exactly_the_centered_region(source_hw, target_hw):
    """Paint the region the official arithmetic keeps (int() truncation, offset excess // 2; the
    cases have odd excesses and a truncated crop size) in one
    colour and the rest in another: any off-by-one crop would blend the other colour in."""
    (src_h, src_w), (height, width) = source_hw, target_hw
    image = np.full((src_h, src_w, 3), 200, np.uint8)
    if src_h / src_w < height / width:
        kept = int(src_h / height * width)
        image[:, (src_w - kept) // 2:(src_w - kept) // 2 + kept] = 30
    else:
        kept = int(src_w / width * height)
        image[(src_h - kept) // 2:(src_h - kept) // 2 + kept] = 30
    result = crop_and_resize(image, height, width)
    assert result.shape == (height, width, 3)
    assert (result == 30).all()


def test_preprocess_maps_0_and_255_to_minus_one_and_one():
    image = torch.tensor([[[0, 255, 51]]], dtype=torch.uint8)
    out = preprocess_image(image)
    assert out.shape == (1, 3, 1, 1)
    assert out.flatten().tolist() == [-1.0, 1.0, pytest.approx(51 / 255 * 2 - 1, abs=1e-7)]


def test_no_image_gives_the_white_t2va_frame():
    assert torch.equal(prepare_reference_image(None, 16, 32), torch.ones(1, 3, 16, 32))
    assert torch.equal(white_image(16, 32), preprocess_image(torch.full((16, 32, 3), 255, dtype=torch.uint8)))


# ----------------------------------------------------------------------------- image condition


def test_condition_layout_and_streaming_equal_encoding_the_whole_video():
    """Mask channels (one per temporal factor) are 1 on latent frame 0 only; the latents equal the
    normalised mean of encoding the materialised [image, zeros] video."""
    vae = small_vae()
    image = torch.rand(1, 3, 16, 24) * 2 - 1
    condition = image_condition(vae, image, 9)
    t, z = vae.config.temporal_factor, vae.config.z_dim
    assert condition.shape == (1, t + z, 3, 2, 3)
    assert (condition[:, :t, 0] == 1).all() and (condition[:, :t, 1:] == 0).all()
    video = torch.cat([image.unsqueeze(2), torch.zeros(1, 3, 8, 16, 24)], dim=2)
    assert torch.equal(condition[:, t:], vae.normalize(vae.encode(video)))
    assert condition[:, t:, 1:].abs().max() > 0  # zero pixels are mid-grey, not zero latents


def test_t2va_condition_is_built_from_the_white_frame():
    vae = small_vae()
    condition = image_condition(vae, prepare_reference_image(None, 16, 16), 5)
    assert torch.equal(condition, image_condition(vae, torch.ones(1, 3, 16, 16), 5))


def test_flf_mask_marks_the_last_frame_in_the_last_channel_of_the_last_latent_frame():
    """Frame 0 fills latent frame 0; the last pixel frame is the last of the last latent frame's group."""
    assert condition_mask(9, 4).tolist() == [[1, 0, 0]] * 4
    assert condition_mask(9, 4, last_frame=True).tolist() == [[1, 0, 0]] * 3 + [[1, 0, 1]]
    assert condition_mask(5, 4, last_frame=True).tolist() == [[1, 0]] * 3 + [[1, 1]]
    assert condition_mask(7, 2, last_frame=True).tolist() == [[1, 0, 0, 0], [1, 0, 0, 1]]
    assert condition_mask(1, 4).tolist() == [[1]] * 4


def test_flf_condition_encodes_first_zeros_last_as_one_video():
    vae = small_vae()
    first, last = (torch.rand(1, 3, 16, 24) * 2 - 1 for _ in range(2))
    condition = image_condition(vae, first, 9, last_image=last)
    t = vae.config.temporal_factor
    assert torch.equal(condition[0, :t], condition_mask(9, t, last_frame=True)[:, :, None, None].expand(t, 3, 2, 3))
    video = torch.cat([first.unsqueeze(2), torch.zeros(1, 3, 7, 16, 24), last.unsqueeze(2)], dim=2)
    assert torch.equal(condition[:, t:], vae.normalize(vae.encode(video)))
    i2v = image_condition(vae, first, 9)
    assert torch.equal(condition[:, t:, :2], i2v[:, t:, :2]), "the causal encoder sees the last image only at the end"
    assert not torch.equal(condition[:, t:, 2], i2v[:, t:, 2])


@pytest.mark.parametrize("last, frames, message", [
    (torch.zeros(1, 3, 16, 32), 5, r"last_image: shape \(1, 3, 16, 32\) differs from image"),
    (torch.zeros(1, 4, 16, 16), 5, r"last_image: expected \[B, 3, H, W\]"),
    (torch.zeros(1, 3, 16, 16), 1, r"last_image needs a clip of more than one frame; num_frames=1, use 5"),
])
def test_flf_condition_rejects_bad_last_images(last, frames, message):
    with pytest.raises(ValueError, match=message):
        image_condition(small_vae(), torch.zeros(1, 3, 16, 16), frames, last_image=last)


@pytest.mark.parametrize("image, frames, message", [
    (torch.zeros(1, 3, 16, 16), 8, "num_frames"),
    (torch.zeros(1, 3, 12, 16), 9, "height"),
    (torch.zeros(3, 16, 16), 9, "image"),
    (torch.zeros(1, 4, 16, 16), 9, "image"),
])
def test_condition_rejects_bad_inputs(image, frames, message):
    with pytest.raises(ValueError, match=message):
        image_condition(small_vae(), image, frames)
