"""The optional ``sage`` attention backend: offered only when sageattention is installed, and then used by
every attention layer of both towers and the Bridge with the [B, L, heads, head_dim] ("NHD") layout."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import mova_core.attention as attention_module
from mova_core.attention import AttentionBackendError, attention, available_backends, check_backend
from mova_core.bridge import DualTowerBridge
from mova_core.dit import DiTTower
from mova_core.joint import joint_forward
from test_denoiser_units import audio_config, bridge_config, inputs, seeded, video_config


@pytest.fixture
def fake_sage(monkeypatch):
    """An importable ``sageattention`` whose ``sageattn`` records its layout and computes exact attention."""
    calls: list[dict] = []

    def sageattn(q, k, v, tensor_layout="HND", is_causal=False):
        calls.append(dict(layout=tensor_layout, causal=is_causal, shape=tuple(q.shape)))
        assert tensor_layout == "NHD"
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    module = types.ModuleType("sageattention")
    module.__spec__ = importlib.machinery.ModuleSpec("sageattention", None)
    module.sageattn = sageattn
    monkeypatch.setitem(sys.modules, "sageattention", module)
    return calls


def test_sage_is_offered_only_when_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "sageattention", None)  # an import of it fails
    monkeypatch.setattr(attention_module.importlib.util, "find_spec",
                        lambda name: None if name == "sageattention" else importlib.machinery.ModuleSpec(name, None))
    assert "sage" not in available_backends()
    with pytest.raises(AttentionBackendError, match="needs the Python package 'sageattention'"):
        check_backend("sage")


def test_sage_refuses_cpu_float32_inputs_with_the_fix(fake_sage):
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(AttentionBackendError, match="float16/bfloat16 CUDA tensors.*backend='sdpa'"):
        attention(q, q, q, backend="sage")
    assert not fake_sage


def test_every_attention_layer_runs_through_sage(fake_sage, monkeypatch):
    monkeypatch.setattr(attention_module, "_check_cuda_half", lambda name, q: None)  # run the CPU stand-in
    x = inputs()
    flags = dict(pooled_adaln=True)
    towers = {backend: (seeded(lambda: DiTTower(video_config(), attention_backend=backend), 1),
                        seeded(lambda: DiTTower(audio_config(), attention_backend=backend), 2),
                        seeded(lambda: DualTowerBridge(bridge_config(**flags), attention_backend=backend), 3))
              for backend in ("sdpa", "sage")}
    expected = joint_forward(*towers["sdpa"], **x)
    assert not fake_sage
    for out, ref in zip(joint_forward(*towers["sage"], **x), expected):
        assert out.equal(ref)
    video, audio, bridge = towers["sage"]
    # self + text attention per block, two directions + the pooling per bridge layer
    assert len(fake_sage) == 2 * (len(video.blocks) + len(audio.blocks)) + 3 * len(bridge.layers)
    assert {call["causal"] for call in fake_sage} == {False}
