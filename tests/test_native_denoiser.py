"""The native path's ComfyUI-free parts: the packed AV latent and MovaNetworks, the model ComfyUI's samplers call.

MovaNetworks must give, on the packed latent, exactly what MOVA Sampler's model evaluation gives on the two
tensors: same expert for a timestep, same kept-modality and bridge-off behaviour (the integration tests then
show ComfyUI's samplers around it reproduce MOVA Sampler).
"""

from __future__ import annotations

import pytest
import torch

from comfyui_mova_av.nodes.av_denoiser import BOUNDARY_OPTION, BRIDGE_OPTION, CONDITION_MISSING, MovaNetworks
from comfyui_mova_av.nodes.av_latent import AVLayout, av_latent, clip_settings, layout_of
from mova_core.joint import conditioned_forward
from mova_core.pipeline import MovaPipeline
from mova_core.sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, expert_at
from mova_core.tiny import write_tiny_checkpoint

BOUNDARY_RATIO = 0.7  # not MOVA's 0.9: a rule that ignored the checkpoint would show


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> MovaPipeline:
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("native") / "model", seed=4, boundary_ratio=BOUNDARY_RATIO)
    return MovaPipeline.from_pretrained(folder, dtype=torch.float32)


@pytest.fixture(scope="module")
def networks(pipe: MovaPipeline) -> MovaNetworks:
    return MovaNetworks(pipe.experts[HIGH_NOISE_EXPERT], pipe.experts[LOW_NOISE_EXPERT], pipe.audio_dit, pipe.bridge,
                        pipe.scheduler.boundary_timestep(BOUNDARY_RATIO))


@pytest.fixture(scope="module")
def inputs(pipe: MovaPipeline) -> dict[str, torch.Tensor]:
    video_shape, audio_shape = pipe.latent_shapes(32, 48, 9, 12.0)
    g = torch.Generator().manual_seed(1)
    condition_channels = pipe.video_vae.config.temporal_factor + video_shape[1]
    return {"video": torch.randn(video_shape, generator=g), "audio": torch.randn(audio_shape, generator=g),
            "condition": torch.randn(1, condition_channels, *video_shape[2:], generator=g),
            "context": torch.randn(1, 512, pipe.experts[HIGH_NOISE_EXPERT].config.text_dim, generator=g)}


def _layout(inputs) -> AVLayout:
    return AVLayout(tuple(inputs["video"].shape[1:]), tuple(inputs["audio"].shape[1:]))


def _reference(pipe, inputs, expert, video_t, audio_t, *, bridge=True, video=None, audio=None):
    return conditioned_forward(pipe.experts[expert], pipe.audio_dit, pipe.bridge,
                               inputs["video"] if video is None else video, inputs["audio"] if audio is None else audio,
                               inputs["condition"], inputs["context"], torch.tensor([video_t]), torch.tensor([audio_t]),
                               12.0, bridge_enabled=bridge)


def _call(networks, inputs, timestep, **kwargs):
    packed = _layout(inputs).pack(inputs["video"], inputs["audio"])
    return networks(packed, torch.tensor([timestep]), inputs["context"], mova_condition=inputs["condition"],
                    mova_fps=12.0, **kwargs)


def test_pack_and_unpack_are_inverse_and_keep_the_video_first():
    layout = AVLayout((3, 2, 2, 4), (5, 7))
    video, audio = torch.randn(2, 3, 2, 2, 4), torch.randn(2, 5, 7)
    packed = layout.pack(video, audio)
    assert packed.shape == (2, 1, layout.size) and torch.equal(packed[:, 0, :layout.video_size], video.flatten(1))
    out_video, out_audio = layout.unpack(packed)
    assert torch.equal(out_video, video) and torch.equal(out_audio, audio)
    mask = layout.modality_values(1.0, 0.0)
    assert mask[0, 0, :layout.video_size].eq(1).all() and mask[0, 0, layout.video_size:].eq(0).all()


class FakeNested:
    """The parts of ComfyUI's NestedTensor (2026) the AV latent uses."""

    is_nested = True

    def __init__(self, tensors):
        self.tensors = list(tensors)

    def unbind(self):
        return self.tensors


def test_nested_samples_hold_the_streams_themselves():
    layout = AVLayout((3, 2, 2, 4), (5, 7))
    video, audio = torch.randn(1, 3, 2, 2, 4), torch.randn(1, 5, 7)
    nested = layout.samples(video, audio, FakeNested)
    assert isinstance(nested, FakeNested) and nested.tensors[0] is video
    assert all(torch.equal(a, b) for a, b in zip(layout.streams(nested), (video, audio)))
    assert all(torch.equal(a, b) for a, b in zip(layout.streams(layout.samples(video, audio)), (video, audio)))
    assert layout_of(av_latent(nested, layout, {}), "x") == layout
    with pytest.raises(ValueError, match=r"av_latent: samples \(\(3, 2, 2, 4\), \(5, 6\)\) do not match"):
        layout_of(av_latent(FakeNested((video, audio[..., :6])), layout, {}), "av_latent")
    mask = layout.modality_values(1.0, 0.0, FakeNested)
    assert mask.tensors[0].eq(1).all() and mask.tensors[1].eq(0).all()


def test_the_layout_comes_from_the_condition_grid_and_names_the_fix_when_it_does_not_fit():
    layout = AVLayout.of((1, 7, 3, 4, 6), 16 * 3 * 4 * 6 + 8 * 11, video_channels=16, audio_channels=8)
    assert layout == AVLayout((16, 3, 4, 6), (8, 11))
    with pytest.raises(ValueError, match="same MOVA AV Latent node"):
        AVLayout.of((1, 7, 3, 4, 6), 16 * 3 * 4 * 6 + 8 * 11 + 3, video_channels=16, audio_channels=8)


def test_an_av_latent_checks_what_it_is_given():
    layout = AVLayout((2, 1, 2, 2), (3, 4))
    latent = av_latent(torch.zeros(1, 1, layout.size), layout, {"fps": 24.0, "frames": 1})
    assert layout_of(latent, "x") == layout and clip_settings(latent) == {"fps": 24.0, "frames": 1}
    with pytest.raises(ValueError, match="latent_image: expected an AV LATENT from MOVA AV Latent"):
        layout_of({"samples": torch.zeros(1, 4, 8, 8)}, "latent_image")
    with pytest.raises(ValueError, match=r"av_latent: samples \(1, 4, 8\) do not match"):
        layout_of({**latent, "samples": torch.zeros(1, 4, 8)}, "av_latent")


@pytest.mark.parametrize("timestep", [950.0, 700.0, 699.5, 120.0])
def test_the_packed_call_is_mova_samplers_evaluation_with_the_expert_of_the_timestep(pipe, networks, inputs, timestep):
    expert = expert_at(timestep, 700.0)
    assert expert == (HIGH_NOISE_EXPERT if timestep >= 700.0 else LOW_NOISE_EXPERT)
    video, audio = _reference(pipe, inputs, expert, timestep, timestep)
    assert torch.equal(_call(networks, inputs, timestep), _layout(inputs).pack(video, audio))
    other = LOW_NOISE_EXPERT if expert == HIGH_NOISE_EXPERT else HIGH_NOISE_EXPERT
    assert not torch.equal(_reference(pipe, inputs, other, timestep, timestep)[0], video), "experts must differ"


def test_bridge_off_and_boundary_options(pipe, networks, inputs):
    video, audio = _reference(pipe, inputs, HIGH_NOISE_EXPERT, 800.0, 800.0, bridge=False)
    off = _call(networks, inputs, 800.0, transformer_options={BRIDGE_OPTION: False})
    assert torch.equal(off, _layout(inputs).pack(video, audio))
    assert not torch.equal(off, _call(networks, inputs, 800.0))
    moved = _call(networks, inputs, 800.0, transformer_options={BOUNDARY_OPTION: 850.0})
    assert torch.equal(moved, _layout(inputs).pack(*_reference(pipe, inputs, LOW_NOISE_EXPERT, 800.0, 800.0)))


def test_a_kept_modality_is_seen_clean_at_timestep_zero(pipe, networks, inputs):
    layout = _layout(inputs)
    clean_audio = torch.randn_like(inputs["audio"])
    clean = layout.pack(torch.zeros_like(inputs["video"]), clean_audio)
    out = _call(networks, inputs, 900.0, mova_clean=clean, mova_kept=(False, True))
    video, audio = _reference(pipe, inputs, HIGH_NOISE_EXPERT, 900.0, 0.0, audio=clean_audio)
    assert torch.equal(out, layout.pack(video, audio))
    clean_video = torch.randn_like(inputs["video"])  # a kept video is at timestep 0: the low-noise expert
    out = _call(networks, inputs, 900.0, mova_clean=layout.pack(clean_video, clean_audio), mova_kept=(True, False))
    assert torch.equal(out, layout.pack(*_reference(pipe, inputs, LOW_NOISE_EXPERT, 0.0, 900.0, video=clean_video)))


def test_a_batch_of_two_prompts_gives_each_prompt_its_own_result(pipe, networks, inputs):
    """ComfyUI batches the positive and negative passes: each row must be the single-prompt result."""
    layout = _layout(inputs)
    packed = layout.pack(inputs["video"], inputs["audio"]).expand(2, -1, -1)
    contexts = torch.cat([inputs["context"], torch.randn_like(inputs["context"])])
    both = networks(packed, torch.tensor([500.0, 500.0]), contexts, mova_condition=inputs["condition"].expand(2, -1, -1, -1, -1),
                    mova_fps=12.0)
    for row in range(2):
        alone = networks(packed[row:row + 1], torch.tensor([500.0]), contexts[row:row + 1],
                         mova_condition=inputs["condition"], mova_fps=12.0)
        torch.testing.assert_close(both[row:row + 1], alone, rtol=1e-5, atol=1e-5)


def test_without_the_av_latent_conditioning_it_says_what_to_connect(networks, inputs):
    packed = _layout(inputs).pack(inputs["video"], inputs["audio"])
    with pytest.raises(ValueError, match="route positive and negative through MOVA AV Latent"):
        networks(packed, torch.tensor([500.0]), inputs["context"])
    assert "MOVA AV Latent" in CONDITION_MISSING
    with pytest.raises(ValueError, match=r"latent_image: .* got one of shape \(1, 4, 8, 8\)"):
        networks(torch.zeros(1, 4, 8, 8), torch.tensor([500.0]), inputs["context"], mova_condition=inputs["condition"],
                 mova_fps=12.0)


def test_block_patches_reach_the_video_blocks(pipe, networks, inputs):
    """SkipLayerGuidanceDiT's patch (returns its input: the block is skipped) changes the result; a patch that runs
    the original block changes nothing."""
    calls = []

    def skip(args, extra):
        calls.append(args["img"].shape)
        return args

    def original(args, extra):
        return extra["original_block"](args)

    plain = _call(networks, inputs, 500.0)
    options = lambda patch: {"patches_replace": {"dit": {("double_block", 1): patch}}}  # noqa: E731
    assert torch.equal(_call(networks, inputs, 500.0, transformer_options=options(original)), plain)
    skipped = _call(networks, inputs, 500.0, transformer_options=options(skip))
    assert len(calls) == 1 and not torch.equal(skipped, plain)
