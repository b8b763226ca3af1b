"""More of ComfyUI's own nodes on MOVA's native MODEL, in a real ComfyUI (own server at DEBUG, as
``test_native_path.py``: model passes counted from the log, LATENTs read back through SaveLatent).

Two-stage sampling, MOVA Euler (official) off the training grid, SkipLayerGuidanceDiT, the CFG patches of 0.3.64,
MOVA Video VAE with VAEDecode / VAEDecodeTiled / VAEEncode, and what SetLatentNoiseMask does to the AV latent.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mova_core.config import VideoVAEConfig
from mova_core.tiny import WEIGHTS_FILE, cached_tiny_checkpoint, random_state_dict
from mova_core.video_vae import VideoVAE

from . import native_graphs as ng
from .comfy_server import ComfyServer, WorkflowFailed
from .conftest import PACK_DIR
from .test_native_path import CHECKPOINTS, PARITY_TOLERANCE, PASS_LINE, VOICE, max_diff, native_only, run

WAN_VAE_MODEL = "tiny-mova-wan21-vae"
"""The tiny MOVA with a video VAE of the released Wan 2.1 shape (base_dim 96, z 16; random weights): ComfyUI
0.3.64's VAE loader builds only that shape."""


def write_wan_vae_checkpoint(folder: Path) -> Path:
    """The tiny MOVA with its video VAE replaced by a Wan 2.1-shaped one (bf16 on disk, 254 MB)."""
    shutil.copytree(cached_tiny_checkpoint(), folder, ignore=shutil.ignore_patterns("video_vae"))
    config = VideoVAEConfig()
    with torch.device("meta"):
        shapes = VideoVAE(config)
    (folder / "video_vae").mkdir()
    weights = {name: tensor.to(torch.bfloat16) for name, tensor in random_state_dict(shapes, seed=5).items()}
    save_file(weights, str(folder / "video_vae" / WEIGHTS_FILE))
    (folder / "video_vae" / "config.json").write_text(json.dumps(
        {"_class_name": "AutoencoderKLWan", **config.to_dict(), "is_residual": False}), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def server(comfyui_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A server at DEBUG (the pass lines) with the parity checkpoints, the tiny MOVA with a Wan 2.1 VAE, a sound."""
    comfy = ComfyServer(comfyui_path, os.environ.get("COMFYUI_PYTHON", sys.executable),
                        tmp_path_factory.mktemp("comfyui-native-more"), PACK_DIR)
    models = {**CHECKPOINTS, WAN_VAE_MODEL: write_wan_vae_checkpoint(tmp_path_factory.mktemp("wan-vae") / "model")}
    with ng.debug_server(comfy, models, VOICE) as started:
        yield started


def ksampler_advanced(model: list, latent: list, *, steps: int, start: int, end: int, add_noise: bool,
                      leftover: bool, seed: int = 7, cfg: float = 4.0) -> dict[str, Any]:
    """KSamplerAdvanced (euler, simple) on MOVA AV Latent's conditioning."""
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": "enable" if add_noise else "disable", "noise_seed": seed, "steps": steps,
        "cfg": cfg, "sampler_name": "euler", "scheduler": "simple", "positive": [ng.AV_LATENT_ID, 0],
        "negative": [ng.AV_LATENT_ID, 1], "latent_image": latent, "start_at_step": start, "end_at_step": end,
        "return_with_leftover_noise": "enable" if leftover else "disable"}}


def add_two_stages(graph: dict[str, Any], step: int, prefix: str) -> None:
    """:func:`ng.add_native`'s noise, guider, sampler and sigmas in two SamplerCustomAdvanced: SplitSigmas at ``step``,
    the high sigmas from MOVA AV Latent's latent, the low ones (DisableNoise) from that output; saved as ``prefix``."""
    graph["61"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": [ng.SIGMAS_ID, 0], "step": step}}
    graph["63"] = {"class_type": "DisableNoise", "inputs": {}}
    for node, noise, sigmas, latent in (("62", "24", 0, [ng.AV_LATENT_ID, 2]), ("64", "63", 1, ["62", 0])):
        graph[node] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": [noise, 0], "guider": ["26", 0], "sampler": ["25", 0], "sigmas": ["61", sigmas],
            "latent_image": latent}}
    ng.save_latent(graph, "66", ["64", 0], prefix)


def timesteps(passes: list[tuple]) -> list[float]:
    return [t for _, t, _ in passes]


# -- 1. two-stage sampling -------------------------------------------------------------------------------------------
# Euler is a one-step method: each step depends only on (x, sigma_i, sigma_i+1), so stopping after step k with the
# leftover noise and going on from sigma_k gives the one-stage result. ComfyUI's flow-model noise scaling divides the
# first stage's output by 1 - sigma_k and the second stage (no noise added) multiplies it back: float rounding only.
# (Multistep samplers, e.g. dpmpp_2m / uni_pc, restart their history at the split; ancestral / SDE ones draw noise per
# step: neither is exact.) The split at step 3 of 4 on tiny-e is where the MODEL switches to video_dit_2 (the Wan 2.2
# "high-noise steps, then the rest" place; MOVA's MODEL switches experts itself, so one MODEL drives both stages).

def test_ksampler_advanced_two_stages_equal_one_stage(server: ComfyServer):
    """KSamplerAdvanced over all steps equals KSampler bit for bit; high-noise steps (leftover noise) then the rest (no
    noise added) equal the one-stage run within 1e-4, with the same model passes."""
    graph = ng.base_graph("tiny-e")
    model = ng.add_model(graph)
    ng.add_av_latent(graph)
    latent = [ng.AV_LATENT_ID, 2]
    graph["50"] = ksampler_advanced(model, latent, steps=4, start=0, end=10000, add_noise=True, leftover=False)
    graph["51"] = ksampler_advanced(model, latent, steps=4, start=0, end=3, add_noise=True, leftover=True)
    graph["52"] = ksampler_advanced(model, ["51", 0], steps=4, start=3, end=10000, add_noise=False, leftover=False)
    for node, source in (("53", "50"), ("54", "52")):
        ng.save_latent(graph, node, [source, 0], f"ksa/{source}")
    ng.add_ksampler(graph, "ksa/ksampler", steps=4, seed=7, cfg=4.0)
    entry, passes = run(server, graph)
    latents = ng.saved_latents(server, entry)
    one, two = latents["ksa/50"], latents["ksa/52"]
    gap = max_diff(two, one)
    print(f"\nKSamplerAdvanced 3 + 1 steps vs 4 steps (tiny-e): max |latent diff| {gap:.1e}, latent max "
          f"{one.abs().max():.2f}")
    assert gap <= PARITY_TOLERANCE and one.abs().max() > 0.5
    assert max_diff(latents["ksa/ksampler_av"], one) == 0.0
    steps = Counter(round(t, 1) for t in timesteps(passes))  # each step's timestep once per run: 3 runs
    assert len(passes) == 12 and len(steps) == 4 and set(steps.values()) == {3}


def test_two_stages_keep_the_given_audio(server: ComfyServer):
    """With a kept sound (MOVA AV Latent's audio), the first stage's output holds the kept audio plus that stage's
    leftover noise (ComfyUI's inpainting blend: sigma_k / (1 - sigma_k) times the noise), and the second stage samples
    that latent. The model takes the kept audio from the conditioning MOVA AV Latent made, so the two-stage video
    equals the one-stage video within 1e-4 (it differed by 4.4 when the model read the kept audio from the latent)."""
    graph = ng.base_graph("tiny-d")
    audio = ng.add_audio(graph, VOICE)
    model = ng.add_model(graph)
    ng.add_av_latent(graph, audio=audio)
    latent = [ng.AV_LATENT_ID, 2]
    graph["50"] = ksampler_advanced(model, latent, steps=4, start=0, end=10000, add_noise=True, leftover=False)
    graph["51"] = ksampler_advanced(model, latent, steps=4, start=0, end=2, add_noise=True, leftover=True)
    graph["52"] = ksampler_advanced(model, ["51", 0], steps=4, start=2, end=10000, add_noise=False, leftover=False)
    for index, (source, name) in enumerate(((["50", 0], "one"), (["52", 0], "two"), (latent, "given"))):
        split = str(60 + index)
        graph[split] = {"class_type": "MOVASplitAVLatent", "inputs": {"mova_model": ["1", 0], "av_latent": source}}
        for output, part in enumerate(("video", "audio")):
            ng.save_latent(graph, f"{7 + output}{index}", [split, output], f"kept/{name}_{part}")
    entry, passes = run(server, graph)
    latents = ng.saved_latents(server, entry)
    gap = max_diff(latents["kept/two_video"], latents["kept/one_video"])
    print(f"\nkept audio, KSamplerAdvanced 2 + 2 steps vs 4 (tiny-d): max |video diff| {gap:.1e}")
    assert gap <= PARITY_TOLERANCE and latents["kept/one_video"].abs().max() > 0.5
    assert max_diff(latents["kept/one_audio"], latents["kept/given_audio"]) <= 1e-6
    assert torch.equal(latents["kept/two_audio"], latents["kept/given_audio"]), "MOVA Split returns the kept sound"
    assert len(passes) == 8


def test_sampler_custom_and_split_sigmas_two_stages_equal_mova_sampler(server: ComfyServer):
    """SamplerCustom (its own seeded noise, = MOVA Noise) with euler and MOVA Schedule, and SplitSigmas(3) into two
    SamplerCustomAdvanced (MOVA Noise, then DisableNoise on the first one's output), each give MOVA Sampler's latents
    within 1e-4."""
    graph = ng.base_graph("tiny-e")
    ng.add_mova_sampler(graph, "split/ref", steps=4, seed=7, text_cfg=4.0)
    ng.add_native(graph, "split/one", steps=4, seed=7, cfg=4.0)
    model = [ng.NATIVE_ID, 0]
    graph["60"] = {"class_type": "SamplerCustom", "inputs": {
        "model": model, "add_noise": True, "noise_seed": 7, "cfg": 4.0, "positive": [ng.AV_LATENT_ID, 0],
        "negative": [ng.AV_LATENT_ID, 1], "sampler": ["25", 0], "sigmas": [ng.SIGMAS_ID, 0],
        "latent_image": [ng.AV_LATENT_ID, 2]}}
    ng.save_latent(graph, "65", ["60", 0], "split/sampler_custom")
    add_two_stages(graph, 3, "split/two")
    entry, passes = run(server, graph)
    latents = ng.saved_latents(server, entry)
    one = latents["split/one_av"]
    for name in ("split/sampler_custom", "split/two"):
        assert max_diff(latents[name], one) <= PARITY_TOLERANCE, name
    assert max_diff(latents["split/one_video"], latents["split/ref_video"]) <= PARITY_TOLERANCE
    assert len(passes) == 12  # one-stage, SamplerCustom, 3 + 1


# -- 2. MOVA Euler (official) off the training grid ------------------------------------------------------------------

@pytest.mark.parametrize("model, steps", [("tiny-e", 7), ("tiny-d", 5)])
def test_mova_euler_matches_mova_sampler_off_the_grid(server: ComfyServer, model: str, steps: int):
    """At step counts whose schedule is off the training grid, MOVA Euler (official) + MOVA Schedule gives MOVA
    Sampler's latents within 1e-4 (it steps between the snapped sigmas, as the official sampler does), where
    KSamplerSelect's euler differs by more than 1e-3; split in two stages (SplitSigmas) it is unchanged."""
    graph = ng.base_graph(model)
    ng.add_mova_sampler(graph, f"euler/{model}_ref", steps=steps, seed=7, text_cfg=4.0, bridge_cfg=1.5)
    ng.add_native(graph, f"euler/{model}_official", steps=steps, seed=7, cfg=4.0, bridge_cfg=1.5, sampler=ng.MOVA_EULER)
    add_two_stages(graph, 2, f"euler/{model}_two")
    entry, passes = run(server, graph)
    latents = ng.saved_latents(server, entry)
    gaps = {part: max_diff(latents[f"euler/{model}_official_{part}"], latents[f"euler/{model}_ref_{part}"])
            for part in ("video", "audio")}
    assert max(gaps.values()) <= PARITY_TOLERANCE, gaps
    assert max_diff(latents[f"euler/{model}_two"], latents[f"euler/{model}_official_av"]) <= PARITY_TOLERANCE
    assert len(passes) == 4 * steps  # text CFG and bridge-off, one-stage and two-stage

    euler, prefix = native_only(model, f"euler/{model}_ksampler_select", steps=steps, seed=7, cfg=4.0, bridge_cfg=1.5)
    stock = ng.saved_latents(server, run(server, euler)[0])[f"{prefix}_video"]
    stock_gap = max_diff(stock, latents[f"euler/{model}_ref_video"])
    print(f"\n{model}, {steps} steps: MOVA Euler (official) vs MOVA Sampler max |diff| {max(gaps.values()):.1e}; "
          f"KSamplerSelect euler {stock_gap:.1e}")
    assert stock_gap > 1e-3


# -- 3. SkipLayerGuidanceDiT ------------------------------------------------------------------------------------------

def skip_layers(double_layers: str) -> dict[str, Any]:
    """SkipLayerGuidanceDiT over the whole schedule (its defaults: 1-15 %), no single blocks (MOVA has none)."""
    return {"class_type": "SkipLayerGuidanceDiT", "inputs": {
        "double_layers": double_layers, "single_layers": "", "scale": 3.0, "start_percent": 0.0, "end_percent": 1.0,
        "rescaling_scale": 0.0}}


def test_skip_layer_guidance_skips_a_video_block(server: ComfyServer):
    """SkipLayerGuidanceDiT's double_layers address the video DiT's blocks (tiny-e has 3): skipping block 1 adds one
    positive-only pass per step and changes the output; an index past the last block skips nothing, so its extra
    pass repeats the positive's prediction and the output stays the plain one (up to the rounding of a batch-1
    against a batch-2 pass)."""
    settings = dict(steps=4, seed=7, cfg=4.0)
    results = {}
    for name, patches in (("plain", ()), ("block1", (skip_layers("1"),)), ("block9", (skip_layers("9"),))):
        graph, prefix = native_only("tiny-e", f"slg/{name}", patches=patches, **settings)
        entry, passes = run(server, graph)
        results[name] = ng.saved_latents(server, entry)[f"{prefix}_av"], sorted(batch for batch, _, _ in passes)
    plain, plain_passes = results["plain"]
    assert plain_passes == [2] * 4
    for name in ("block1", "block9"):
        assert results[name][1] == [1] * 4 + [2] * 4, name  # the skip-layer pass: the positive alone
    skipped, missing = max_diff(results["block1"][0], plain), max_diff(results["block9"][0], plain)
    print(f"\nSkipLayerGuidanceDiT scale 3 on tiny-e: block 1 max |latent diff| {skipped:.3f}, block 9 {missing:.1e}")
    assert skipped > 1e-2 and missing <= PARITY_TOLERANCE and torch.isfinite(results["block1"][0]).all()


# -- 4. CFG patches of ComfyUI 0.3.64 ---------------------------------------------------------------------------------
# They see MOVA's packed latent [B, 1, N] (video values, then audio): a norm "over channels" (dim 1: CFGNorm, Mahiro's
# similarity) is taken per value there, a norm over the last three dims (APG) spans the whole clip, video and audio
# together, and TCFG / CFGZeroStar flatten each prediction as they do for any latent.

CFG_PATCHES = {
    "CFGNorm": {"strength": 1.0},
    "APG": {"eta": 1.0, "norm_threshold": 5.0, "momentum": 0.0},
    "Mahiro": {},
    "TCFG": {},
    "CFGZeroStar": {},
}


@pytest.mark.parametrize("patch", list(CFG_PATCHES))
def test_cfg_patches_change_the_guidance_alone_and_with_bridge_guidance(server: ComfyServer, patch: str):
    """Each patch runs to finite latents and changes the output, on its own and after MOVA Bridge Guidance (whose
    bridge-off pass still runs at every step)."""
    node = {"class_type": patch, "inputs": CFG_PATCHES[patch]}
    settings = dict(steps=4, seed=7, cfg=4.0)
    outputs = {}
    for bridge_cfg in (1.0, 2.0):
        for patches in ((), (node,)):
            graph, prefix = native_only("tiny-e", f"cfg/{patch}_{bridge_cfg}_{len(patches)}", bridge_cfg=bridge_cfg,
                                        patches=patches, **settings)
            entry, passes = run(server, graph)
            outputs[bridge_cfg, bool(patches)] = ng.saved_latents(server, entry)[f"{prefix}_av"]
            assert sum(not on for _, _, on in passes) == (4 if bridge_cfg != 1.0 else 0)
    gaps = {bridge_cfg: max_diff(outputs[bridge_cfg, True], outputs[bridge_cfg, False]) for bridge_cfg in (1.0, 2.0)}
    print(f"\n{patch}: max |latent diff| to plain CFG {gaps[1.0]:.3f}, to bridge CFG 2 alone {gaps[2.0]:.3f}")
    assert all(torch.isfinite(output).all() for output in outputs.values())
    assert min(gaps.values()) > 1e-3


def test_apg_without_projection_limits_is_cfg_one_higher(server: ComfyServer):
    """APG at eta 1, no norm threshold, no momentum leaves the guidance vector as it is; its pre-CFG step then gives
    the positive prediction + guidance / cfg, so CFG at cfg gives uncond + (cfg + 1) * guidance: plain CFG at cfg + 1
    within 1e-4. The patch reaches MOVA's two predictions exactly as it reaches any model's."""
    apg = {"class_type": "APG", "inputs": {"eta": 1.0, "norm_threshold": 0.0, "momentum": 0.0}}
    graph, prefix = native_only("tiny-e", "apg/plain_cfg", steps=4, seed=7, cfg=4.0, patches=(apg,))
    patched = ng.saved_latents(server, run(server, graph)[0])[f"{prefix}_av"]
    graph, prefix = native_only("tiny-e", "apg/cfg5", steps=4, seed=7, cfg=5.0)
    higher = ng.saved_latents(server, run(server, graph)[0])[f"{prefix}_av"]
    assert max_diff(patched, higher) <= PARITY_TOLERANCE


# -- 5. MOVA Video VAE: ComfyUI's VAE nodes with MOVA's own video VAE ------------------------------------------------

def saved_images(server: ComfyServer, entry: dict[str, Any], node: str) -> np.ndarray:
    """The frames a SaveImage node wrote (8-bit PNG), as float ``[F, H, W, 3]`` in 0..1."""
    files = entry["outputs"][node]["images"]
    return np.stack([np.asarray(Image.open(server.output_dir / saved["subfolder"] / saved["filename"]), np.float32)
                     for saved in files]) / 255.0


def test_video_vae_decodes_and_encodes_as_mova_does(server: ComfyServer):
    """MOVA Video VAE gives ComfyUI's own VAE the checkpoint's video VAE (keys renamed from diffusers' layout to the
    original Wan 2.1 one). VAEDecode of MOVA Split AV Latent's video LATENT gives MOVA Decode's frames (8-bit PNGs
    equal within one level; re-encoded by MOVA Encode, the two decodes' latents agree within 1e-4, so the float frames
    agree far below a PNG level), VAEDecodeTiled with one tile gives the same frames (smaller tiles run; ComfyUI's
    temporal tiles restart the causal decoder, so 8-frame tiles change frames a lot on these random weights), and
    VAEEncode of MOVA Decode's frames equals MOVA Encode's latents within 1e-4."""
    graph = ng.base_graph(WAN_VAE_MODEL)
    ng.add_native(graph, "vae/run", steps=2, seed=7, cfg=4.0)
    graph["70"] = {"class_type": "MOVADecode", "inputs": {
        "mova_model": ["1", 0], "video_latent": [ng.SPLIT_ID, 0], "audio_latent": [ng.SPLIT_ID, 1],
        "normalize_loudness": False, "target_lufs": -16.0, "tiled_decode": False, "tile_size": 256, "tile_overlap": 64}}
    graph["71"] = {"class_type": "MOVAVideoVAE", "inputs": {"mova_model": ["1", 0]}}
    graph["72"] = {"class_type": "VAEDecode", "inputs": {"samples": [ng.SPLIT_ID, 0], "vae": ["71", 0]}}
    graph["73"] = {"class_type": "VAEDecodeTiled", "inputs": {
        "samples": [ng.SPLIT_ID, 0], "vae": ["71", 0], "tile_size": 512, "overlap": 64, "temporal_size": 64,
        "temporal_overlap": 8}}
    graph["81"] = {"class_type": "VAEDecodeTiled", "inputs": {
        "samples": [ng.SPLIT_ID, 0], "vae": ["71", 0], "tile_size": 64, "overlap": 16, "temporal_size": 8,
        "temporal_overlap": 4}}
    graph["82"] = {"class_type": "SaveImage", "inputs": {"images": ["81", 0], "filename_prefix": "vae/small_tiles"}}
    graph["74"] = {"class_type": "SaveImage", "inputs": {"images": ["70", 0], "filename_prefix": "vae/mova"}}
    graph["75"] = {"class_type": "SaveImage", "inputs": {"images": ["72", 0], "filename_prefix": "vae/native"}}
    graph["76"] = {"class_type": "SaveImage", "inputs": {"images": ["73", 0], "filename_prefix": "vae/tiled"}}
    graph["77"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["70", 0], "vae": ["71", 0]}}
    for node, images, prefix in (("78", ["70", 0], "vae/mova_encode"), ("79", ["72", 0], "vae/mova_encode_native")):
        graph[node] = {"class_type": "MOVAEncode", "inputs": {"mova_model": ["1", 0], "images": images, "fps": 16.0}}
        ng.save_latent(graph, f"8{node[1]}", [node, 0], prefix)
    ng.save_latent(graph, "80", ["77", 0], "vae/native_encode")
    entry, _ = run(server, graph, timeout=600)
    latents = ng.saved_latents(server, entry)
    mova, native, tiled, small = (saved_images(server, entry, node) for node in ("74", "75", "76", "82"))
    assert mova.shape == native.shape == tiled.shape == small.shape == (9, 32, 48, 3)
    assert np.abs(native - mova).max() <= 1 / 255 + 1e-6 and len(np.unique(mova)) > 50
    decode_gap = max_diff(latents["vae/mova_encode_native"], latents["vae/mova_encode"])
    encode_gap = max_diff(latents["vae/native_encode"], latents["vae/mova_encode"])
    print(f"\nMOVA Video VAE: PNG frames identical in {np.mean(native == mova):.1%} of values (at most 1 level apart); "
          f"MOVA Encode of the two decodes max |diff| {decode_gap:.1e}; VAEEncode vs MOVA Encode {encode_gap:.1e} "
          f"(latents up to {latents['vae/mova_encode'].abs().max():.2f}); VAEDecodeTiled vs VAEDecode: one tile "
          f"{np.abs(tiled - native).max():.3f}, 64-pixel tiles of 8 frames {np.abs(small - native).max():.3f}")
    assert decode_gap <= PARITY_TOLERANCE and encode_gap <= PARITY_TOLERANCE
    assert np.abs(tiled - native).max() <= 1 / 255 + 1e-6  # one tile: the plain decode


def test_video_vae_of_another_shape_names_the_difference(server: ComfyServer):
    """ComfyUI builds only the Wan 2.1 VAE's shape: tiny-e's (z 8, dim_mult 1,2,3,3, one res block) is refused by
    name, pointing at MOVA Decode."""
    graph = ng.base_graph("tiny-e")
    graph["71"] = {"class_type": "MOVAVideoVAE", "inputs": {"mova_model": ["1", 0]}}
    graph["72"] = {"class_type": "PreviewAny", "inputs": {"source": ["71", 0]}}
    with pytest.raises(WorkflowFailed, match=r"video VAE differs from the Wan 2.1 VAE ComfyUI builds .*'z_dim': 8.*"
                                             r"Decode with MOVA Decode"):
        server.run_workflow(graph, timeout=300)


# -- 6. SetLatentNoiseMask on the AV latent ---------------------------------------------------------------------------

@pytest.mark.parametrize("with_audio", [False, True])
def test_set_latent_noise_mask_is_refused_with_the_fix(server: ComfyServer, with_audio: bool):
    """SetLatentNoiseMask puts an image MASK [1, 1, H, W] on the LATENT; ComfyUI would interpolate it over the packed
    video + audio values (0.3.64 fails inside torch: the latent has one spatial dimension). MOVA's MODEL refuses it
    before any model pass, naming MOVA AV Latent's audio input as the way to keep a sound, with or without a kept
    sound in the latent."""
    graph = ng.base_graph("tiny-e")
    ng.add_native(graph, f"mask/{with_audio}", steps=2, seed=7, cfg=4.0,
                  **({"audio": ng.add_audio(graph, VOICE)} if with_audio else {}))
    graph["90"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 48, "height": 32}}
    graph["91"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": [ng.AV_LATENT_ID, 2], "mask": ["90", 0]}}
    graph["27"]["inputs"]["latent_image"] = ["91", 0]
    start = len(server.log_text())
    with pytest.raises(WorkflowFailed, match=r"latent_image: its noise mask of shape \(1, 1, 32, 48\) \(e\.g\. from "
                                             r"Set Latent Noise Mask\) does not fit MOVA's AV latent.*connect it to "
                                             r"MOVA AV Latent's audio input"):
        server.run_workflow(graph, timeout=300)
    assert not PASS_LINE.search(server.log_text()[start:])
