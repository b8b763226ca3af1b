"""Exact savings: the per-generation constants (prompt keys/values, RoPE tables, time embeddings) give the
uncached numbers bit for bit; batched guidance gives the unbatched numbers to float rounding."""

from __future__ import annotations

import pytest
import torch

from mova_core.joint import JointConstants, joint_forward
from mova_core.pipeline import MovaPipeline
from mova_core.tiny import write_tiny_checkpoint
from test_denoiser_units import audio_config, bridge_config, inputs, seeded, video_config
from mova_core.bridge import DualTowerBridge
from mova_core.dit import DiTTower

# Batch of two against two calls of one, float32: the BLAS may sum in another order for another batch.
BATCHED_REL = 1e-5


@pytest.fixture(scope="module")
def networks():
    experts = [seeded(lambda: DiTTower(video_config()), seed) for seed in (1, 4)]
    audio = seeded(lambda: DiTTower(audio_config()), 2)
    bridge = seeded(lambda: DualTowerBridge(bridge_config(pooled_adaln=True)), 3)
    return experts, audio, bridge


def _passes(networks):
    """A little sampling loop: two steps per expert, three passes each (positive, negative, bridge off)."""
    experts, _, _ = networks
    x = inputs()
    negative = torch.randn(x["context"].shape, generator=torch.Generator().manual_seed(9))
    for expert in experts:
        for t in (900.0, 700.0):
            for context, bridge_on in ((x["context"], True), (negative, True), (negative, False)):
                yield expert, dict(x, context=context, timestep=torch.tensor([t]), audio_timestep=torch.tensor([t - 50])), bridge_on


def test_cached_constants_give_the_uncached_numbers_bit_for_bit(networks):
    _, audio, bridge = networks
    constants = JointConstants()
    for expert, x, bridge_on in _passes(networks):
        cached = joint_forward(expert, audio, bridge, **x, bridge_enabled=bridge_on, constants=constants)
        fresh = joint_forward(expert, audio, bridge, **x, bridge_enabled=bridge_on)
        assert cached[0].equal(fresh[0]) and cached[1].equal(fresh[1])


def test_constants_are_computed_once_and_dropped_at_the_expert_switch(networks, monkeypatch):
    experts, audio, bridge = networks
    calls = {"embed_text": 0, "rope_table": 0}
    for name in calls:
        original = getattr(DiTTower, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(DiTTower, name, counted)
    constants = JointConstants()
    for expert, x, bridge_on in _passes(networks):
        joint_forward(expert, audio, bridge, **x, bridge_enabled=bridge_on, constants=constants)
    # Two prompts for each video expert and for the audio tower (kept across the switch).
    assert calls["embed_text"] == 6
    assert calls["rope_table"] == 2  # one video table (shared by the experts' equal head size), one audio
    assert {key[0] for key in constants._text} == {id(experts[1]), id(audio)}


def test_a_batch_of_prompts_equals_one_call_per_prompt(networks):
    experts, audio, bridge = networks
    x = inputs()
    negative = torch.randn(x["context"].shape, generator=torch.Generator().manual_seed(9))
    constants = JointConstants()
    batched = joint_forward(experts[0], audio, bridge, **dict(x, context=(x["context"], negative)),
                            constants=constants)
    assert batched[0].shape[0] == batched[1].shape[0] == 2
    for index, context in enumerate((x["context"], negative)):
        single = joint_forward(experts[0], audio, bridge, **dict(x, context=context))
        for out, ref in zip(batched, single):
            torch.testing.assert_close(out[index:index + 1], ref, rtol=BATCHED_REL, atol=BATCHED_REL * ref.abs().max().item())


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return MovaPipeline.from_pretrained(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model"),
                                        dtype=torch.float32)


@pytest.mark.parametrize("bridge_cfg", [1.0, 2.0])
def test_batched_guidance_generates_the_same_latents_with_fewer_calls(pipe, bridge_cfg, monkeypatch):
    import mova_core.pipeline as pipeline_module

    calls: list[int] = []
    original = pipeline_module.conditioned_forward

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(pipeline_module, "conditioned_forward", counted)
    settings = dict(height=32, width=48, num_frames=5, fps=24.0, steps=3, text_cfg=4.0, bridge_cfg=bridge_cfg, seed=5)
    plain = pipe.generate("a bell rings", **settings)
    plain_calls, calls[:] = len(calls), []
    batched = pipe.generate("a bell rings", **settings, batch_guidance=True)
    assert plain_calls == 3 * (3 if bridge_cfg != 1 else 2)
    assert len(calls) == 3 * (2 if bridge_cfg != 1 else 1)
    for out, ref in ((batched.video_latents, plain.video_latents), (batched.audio_latents, plain.audio_latents)):
        torch.testing.assert_close(out, ref, rtol=BATCHED_REL, atol=BATCHED_REL * ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotate_half_rope_equals_the_concatenating_formula_bit_for_bit(dtype):
    from mova_core.rope import apply_rotate_half_rope, rotate_half_cos_sin

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 37, 3, 24, generator=g).to(dtype)
    cos, sin = rotate_half_cos_sin(torch.arange(37, dtype=torch.float32) * 1.7, 24, dtype)
    first, second = x.float().chunk(2, dim=-1)
    expected = (x.float() * cos[:, :, None].float() + torch.cat([-second, first], dim=-1) * sin[:, :, None].float())
    assert apply_rotate_half_rope(x, (cos, sin)).equal(expected.to(dtype))


def test_in_place_rms_norm_gives_the_module_s_numbers_and_leaves_other_cases_to_the_module():
    from mova_core.attention import _rms_norm

    g = torch.Generator().manual_seed(5)
    norm = torch.nn.RMSNorm(48, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(48, generator=g) + 0.5)
    x = torch.randn(2, 33, 48, generator=g)
    with torch.no_grad():
        expected = norm(x)
        buffer = x.clone()
        out = _rms_norm(norm, buffer)
        assert out.equal(expected) and out.data_ptr() == buffer.data_ptr()
        half = x.bfloat16()
        assert _rms_norm(norm, half).data_ptr() != half.data_ptr()  # not float32: the module's own kernel
    kept = x.clone()
    assert _rms_norm(norm, kept).data_ptr() != kept.data_ptr()  # autograd keeps its input: never in place
    assert kept.equal(x)


@pytest.mark.parametrize("length", [7, 3000])  # one piece, and several pieces of the CPU rotation
def test_rope_rotated_in_place_equals_the_new_buffer(length):
    from mova_core.rope import apply_interleaved_rope

    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, length, 4, 16, generator=g)
    table = torch.polar(torch.ones(length, 8, dtype=torch.float64), torch.rand(length, 8, generator=g, dtype=torch.float64) * 6)
    expected = apply_interleaved_rope(x, table)
    buffer = x.clone()
    out = apply_interleaved_rope(buffer, table, inplace=True)
    assert out.equal(expected) and not expected.equal(x)


def test_modulation_in_place_equals_the_out_of_place_one_bit_for_bit():
    from mova_core.dit import fused_modulate, modulate

    g = torch.Generator().manual_seed(7)
    x, shift, scale = torch.randn(1, 20, 32, generator=g), torch.randn(1, 1, 32, generator=g), torch.randn(1, 1, 32, generator=g)
    with torch.no_grad():
        buffer = x.clone()
        out = fused_modulate(buffer, shift, scale)
    assert out.data_ptr() == buffer.data_ptr()
    assert out.equal(modulate(x, shift, scale))
