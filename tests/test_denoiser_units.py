"""Denoiser behaviour without the parity fixture: attention backends, interaction strategies, tower
depths, bridge on/off, batching, condition scale, and loading tiny random checkpoints in bf16/fp8."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode

from mova_core.attention import (
    AttentionBackendError, attention, available_backends, register_backend,
)
from mova_core.bridge import DualTowerBridge, load_bridge
from mova_core.config import BridgeConfig, DiTConfig
from mova_core.dit import DiTTower, load_dit
from mova_core.joint import joint_forward
from mova_core.rope import apply_interleaved_rope, video_rope_table

VIDEO_FPS = 24.0
BRIDGE_HEAD_DIM = 24


def video_config(num_layers: int = 2) -> DiTConfig:
    # 3 heads of 24: an odd head count, and head_dim // 3 even as the 3-D RoPE needs.
    return DiTConfig(dim=72, in_dim=12, ffn_dim=96, out_dim=4, text_dim=16, freq_dim=16,
                     num_heads=3, num_layers=num_layers, patch_size=(1, 2, 2))


def audio_config(num_layers: int = 2) -> DiTConfig:
    return DiTConfig(dim=48, in_dim=8, ffn_dim=64, out_dim=8, text_dim=16, freq_dim=16,
                     num_heads=2, num_layers=num_layers, patch_size=(1,), vae_type="dac")


def bridge_config(video_layers: int = 2, audio_layers: int = 2, **flags) -> BridgeConfig:
    values = dict(visual_layers=video_layers, audio_layers=audio_layers, visual_hidden_dim=72, audio_hidden_dim=48,
                  audio_fps=50.0, head_dim=BRIDGE_HEAD_DIM, interaction_strategy="full", apply_cross_rope=True)
    return BridgeConfig(**{**values, **flags})


def seeded(factory, seed: int):
    torch.manual_seed(seed)
    return factory().eval().requires_grad_(False)


def inputs(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        video_input=torch.randn(batch, 12, 3, 4, 6, generator=g),
        audio_input=torch.randn(batch, 8, 11, generator=g),
        context=torch.randn(batch, 7, 16, generator=g),
        timestep=torch.full((batch,), 912.5),
        audio_timestep=torch.full((batch,), 871.0),
        video_fps=VIDEO_FPS,
    )


@pytest.fixture
def models():
    video = seeded(lambda: DiTTower(video_config()), 1)
    audio = seeded(lambda: DiTTower(audio_config()), 2)
    bridge = seeded(lambda: DualTowerBridge(bridge_config(pooled_adaln=True, apply_first_frame_bias_in_rope=True)), 3)
    return video, audio, bridge


# --- tower RoPE on half-precision activations --------------------------------------------------


class _PeakLiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created while active and still alive (CPU, refcounted);
    views of the ``inputs`` cost nothing."""

    def __init__(self, *inputs: torch.Tensor) -> None:
        super().__init__()
        self.live: dict[int, int] = {t.untyped_storage().data_ptr(): 0 for t in inputs}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in (out if isinstance(out, (tuple, list)) else [out]):
            storage = tensor.untyped_storage() if isinstance(tensor, torch.Tensor) else None
            if storage is not None and storage.data_ptr() not in self.live:
                self.live[storage.data_ptr()] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._release, storage.data_ptr())
        return out


def test_tower_rope_keeps_a_single_float64_copy_of_the_activations():
    """The float64 rotation is the peak of a DiT pass on long videos: one float64 copy of q (4x its
    bf16 size) rotated in place, not a second complex128 product next to it."""
    q = torch.randn(1, 240, 3, 24).to(torch.bfloat16)
    table = video_rope_table(24, (4, 6, 10))
    expected = torch.view_as_real(torch.view_as_complex(q.double().unflatten(-1, (-1, 2))) * table[:, None])
    with _PeakLiveBytes(q, table) as tracker:
        rotated = apply_interleaved_rope(q, table)
    float64_copy = q.numel() * 8
    assert tracker.peak <= float64_copy + rotated.numel() * rotated.element_size()
    assert torch.equal(rotated, expected.flatten(-2).to(torch.bfloat16))


def test_tower_rope_leaves_float64_inputs_untouched():
    x = torch.randn(1, 12, 2, 8, dtype=torch.float64)
    before = x.clone()
    apply_interleaved_rope(x, video_rope_table(8, (1, 3, 4)))
    assert torch.equal(x, before)


# --- attention backends ---------------------------------------------------------------------------


def test_sdpa_is_always_available_and_matches_softmax_attention():
    assert "sdpa" in available_backends()
    q, k, v = torch.randn(3, 2, 5, 3, 8).unbind(0)
    weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / 8**0.5, dim=-1)
    torch.testing.assert_close(attention(q, k, v), torch.einsum("bhqk,bkhd->bqhd", weights, v))


def test_unknown_attention_backend_names_it_and_the_installed_ones():
    q = torch.randn(1, 2, 1, 8)
    with pytest.raises(AttentionBackendError, match=r"'nope'.*installed backends: \['sdpa'"):
        attention(q, q, q, backend="nope")
    with pytest.raises(AttentionBackendError, match="nope"):
        DiTTower(video_config(), attention_backend="nope")


@pytest.mark.skipif("flash" in available_backends(), reason="flash-attn is installed here")
def test_missing_flash_backend_names_the_package_when_a_layer_is_built():
    with pytest.raises(AttentionBackendError, match=r"'flash'.*'flash_attn'.*installed backends: \['sdpa'\]"):
        DiTTower(video_config(), attention_backend="flash")


def test_registered_backend_is_used_by_every_attention_layer(models, monkeypatch):
    import mova_core.attention as attention_module

    monkeypatch.setattr(attention_module, "_BACKENDS", dict(attention_module._BACKENDS))
    calls = []

    def counting_sdpa(q, k, v):
        calls.append(q.shape)
        return attention(q, k, v, backend="sdpa")

    register_backend("counting", counting_sdpa)
    assert "counting" in available_backends()
    x = inputs()
    expected = joint_forward(*models, **x)
    video = seeded(lambda: DiTTower(video_config(), attention_backend="counting"), 1)
    audio = seeded(lambda: DiTTower(audio_config(), attention_backend="counting"), 2)
    bridge = seeded(lambda: DualTowerBridge(bridge_config(pooled_adaln=True, apply_first_frame_bias_in_rope=True),
                                            attention_backend="counting"), 3)
    assert not calls
    for out, ref in zip(joint_forward(video, audio, bridge, **x), expected):
        assert out.equal(ref)
    # self + text attention per block, two directions + the pooling per bridge layer
    assert len(calls) == 2 * (len(video.blocks) + len(audio.blocks)) + 3 * len(bridge.layers)


# --- interaction strategies -----------------------------------------------------------------------

@pytest.mark.parametrize(("strategy", "video_layers", "audio_layers", "expected"), [
    ("full", 40, 30, list(range(30))),
    ("full", 5, 4, [0, 1, 2, 3]),
    ("shallow_focus", 40, 30, list(range(10))),
    ("shallow_focus", 12, 12, [0, 1, 2, 3]),
    ("shallow_focus", 2, 2, []),
    ("distributed", 40, 30, list(range(0, 30, 3))),
    ("distributed", 5, 4, [0, 3]),
    ("progressive", 40, 30, [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 14, 17, 20, 23, 26, 29]),
    ("progressive", 6, 5, [0, 1, 2, 3, 4]),
    ("custom", 40, 30, [0, 2, 4, 6, 8, 12, 16, 20]),
    ("custom", 13, 10, [0, 2, 4, 6, 8]),
])
def test_interaction_layers_follow_the_official_strategies(strategy, video_layers, audio_layers, expected):
    config = bridge_config(video_layers, audio_layers, interaction_strategy=strategy)
    assert list(config.interaction_layers) == expected
    with torch.device("meta"):
        bridge = DualTowerBridge(config)
    for conditioners in (bridge.audio_to_video_conditioners, bridge.video_to_audio_conditioners):
        assert list(conditioners.keys()) == [str(i) for i in expected]
    assert [bridge.interacts(i) for i in range(min(video_layers, audio_layers))] == [
        i in expected for i in range(min(video_layers, audio_layers))
    ]


# --- joint forward --------------------------------------------------------------------------------


def test_bridge_disabled_equals_the_towers_run_alone(models):
    video, audio, bridge = models
    x = inputs()
    video_out, audio_out = joint_forward(video, audio, bridge, **x, bridge_enabled=False)
    torch.testing.assert_close(video_out, video(x["video_input"], x["timestep"], x["context"]), rtol=0, atol=0)
    torch.testing.assert_close(audio_out, audio(x["audio_input"], x["audio_timestep"], x["context"]), rtol=0, atol=0)
    assert joint_forward(video, audio, None, **x, bridge_enabled=False)[0].equal(video_out)
    bridged_video, bridged_audio = joint_forward(video, audio, bridge, **x)
    assert not torch.allclose(bridged_video, video_out) and not torch.allclose(bridged_audio, audio_out)


def test_deeper_video_tower_runs_its_extra_blocks_after_the_shared_ones():
    video = seeded(lambda: DiTTower(video_config(num_layers=3)), 1)
    audio = seeded(lambda: DiTTower(audio_config(num_layers=2)), 2)
    bridge = seeded(lambda: DualTowerBridge(bridge_config(3, 2)), 3)
    assert bridge.layers == (0, 1)
    x = inputs()
    video_out, audio_out = joint_forward(video, audio, bridge, **x)
    assert video_out.shape == (1, 4, 3, 4, 6) and audio_out.shape == (1, 8, 11)
    # The extra video block runs (changing it changes the video) after the last bridge (the audio
    # never sees it).
    video.blocks[2].ffn[2].bias.add_(0.5)
    changed_video, same_audio = joint_forward(video, audio, bridge, **x)
    assert not torch.allclose(changed_video, video_out)
    assert same_audio.equal(audio_out)
    # A shared video block feeds the bridge at the next layer, so the audio changes too.
    video.blocks[0].ffn[2].bias.add_(0.5)
    assert not torch.allclose(joint_forward(video, audio, bridge, **x)[1], audio_out)


def test_audio_tower_deeper_than_video_is_refused():
    video = DiTTower(video_config(num_layers=1))
    audio = DiTTower(audio_config(num_layers=2))
    with pytest.raises(ValueError, match="more blocks"):
        joint_forward(video, audio, None, **inputs(), bridge_enabled=False)


def test_batch_of_two_equals_two_single_calls(models):
    """The batched head (official video Head only broadcasts for B = 1) and per-sample timesteps."""
    video, audio, bridge = models
    x = inputs(batch=2)
    x["timestep"] = torch.tensor([912.5, 300.0])
    x["audio_timestep"] = torch.tensor([871.0, 120.0])
    video_out, audio_out = joint_forward(video, audio, bridge, **x)
    for i in range(2):
        single = {k: (v[i:i + 1] if torch.is_tensor(v) else v) for k, v in x.items()}
        single_video, single_audio = joint_forward(video, audio, bridge, **single)
        torch.testing.assert_close(video_out[i:i + 1], single_video, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(audio_out[i:i + 1], single_audio, rtol=1e-5, atol=1e-5)


def test_trainable_condition_scale_is_loaded_but_not_applied(models):
    video, audio, _ = models
    bridge = seeded(lambda: DualTowerBridge(bridge_config(trainable_condition_scale=True)), 3)
    assert "condition_scale" in bridge.state_dict()
    x = inputs()
    expected = joint_forward(video, audio, bridge, **x)
    bridge.condition_scale.fill_(3.0)
    for out, ref in zip(joint_forward(video, audio, bridge, **x), expected):
        assert out.equal(ref)


def test_bad_latent_shapes_raise_clear_errors(models):
    video, _, _ = models
    x = inputs()
    with pytest.raises(ValueError, match=r"C=12"):
        video(x["video_input"][:, :5], x["timestep"], x["context"])
    with pytest.raises(ValueError, match="multiples of the patch size"):
        video(x["video_input"][..., :5], x["timestep"], x["context"])


# --- loading --------------------------------------------------------------------------------------


def save_component(module: torch.nn.Module, config, folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


@pytest.fixture
def checkpoint(models, tmp_path) -> dict[str, Path]:
    video, audio, bridge = models
    return {
        "video": save_component(video, video.config, tmp_path / "video_dit"),
        "audio": save_component(audio, audio.config, tmp_path / "audio_dit"),
        "bridge": save_component(bridge, bridge.config, tmp_path / "dual_tower_bridge"),
    }


def load_all(checkpoint: dict[str, Path], dtype: torch.dtype):
    return load_dit(checkpoint["video"], dtype=dtype), load_dit(checkpoint["audio"], dtype=dtype), load_bridge(checkpoint["bridge"], dtype=dtype)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


# Memory-mapped weights may sit at other alignments than freshly allocated ones, which can change
# the BLAS summation order: float32 loads agree to rounding, not bit for bit.
FLOAT32_REL = 1e-6


def test_float32_load_reproduces_the_saved_models(models, checkpoint):
    x = inputs()
    expected = joint_forward(*models, **x)
    for out, ref in zip(joint_forward(*load_all(checkpoint, torch.float32), **x), expected):
        assert relative_error(out, ref) < FLOAT32_REL


@pytest.mark.parametrize(("dtype", "rel"), [(torch.bfloat16, 0.03), (torch.float8_e4m3fn, 0.15)])
def test_low_precision_load_runs(models, checkpoint, dtype, rel):
    video, audio, bridge = load_all(checkpoint, dtype)
    assert video.blocks[0].self_attn.q.weight.dtype == dtype
    assert bridge.video_to_audio_conditioners["0"].per_frame_pooling.attention.out_proj.weight.dtype == dtype
    assert video.head.modulation.dtype == video.compute_dtype == torch.bfloat16
    x = inputs()
    expected = joint_forward(*models, **x)
    for out, ref in zip(joint_forward(video, audio, bridge, **x), expected):
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert relative_error(out, ref) < rel


def test_single_weight_file_needs_a_config(models, checkpoint, tmp_path):
    video = models[0]
    lone = tmp_path / "lone"
    lone.mkdir()
    weights = (checkpoint["video"] / "diffusion_pytorch_model.safetensors").rename(lone / "video.safetensors")
    with pytest.raises(ValueError, match="config="):
        load_dit(weights)
    loaded = load_dit(weights, config=video.config)
    x = inputs()
    out = loaded(x["video_input"], x["timestep"], x["context"])
    assert relative_error(out, video(x["video_input"], x["timestep"], x["context"])) < FLOAT32_REL
