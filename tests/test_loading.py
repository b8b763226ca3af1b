"""Checkpoint streaming: single files, sharded folders, dtypes, and key errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mova_core.loading import CheckpointError, load_component, weight_files
from mova_core.ops import CastingOps


class Tiny(nn.Module):
    def __init__(self, operations=nn):
        super().__init__()
        self.proj = operations.Linear(4, 3)
        self.norm = operations.LayerNorm(3)
        self.table = nn.Parameter(torch.zeros(1, 2, 3))

    def forward(self, x):
        return self.norm(self.proj(x)) + self.table.to(x.dtype).sum(1)


def reference_weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(p.shape, generator=g) for name, p in Tiny().state_dict().items()}


def test_single_file_loads_exact_values(tmp_path):
    weights = reference_weights()
    save_file(weights, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    module = load_component(Tiny, tmp_path)
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert not any(p.requires_grad for p in module.parameters())


def test_sharded_folder_loads_through_index(tmp_path):
    weights = reference_weights()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(tmp_path / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert [f.name for f in weight_files(tmp_path)] == list(shards)
    module = load_component(Tiny, tmp_path)
    assert torch.equal(module.proj.weight, weights["proj.weight"])


def test_errors_name_the_file_and_the_keys(tmp_path):
    weights = reference_weights()
    weights["extra.weight"] = weights.pop("norm.bias")
    weights["proj.weight"] = torch.zeros(5, 4)
    path = tmp_path / "broken.safetensors"
    save_file(weights, str(path))
    with pytest.raises(CheckpointError) as info:
        load_component(Tiny, path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys (1): ['norm.bias']" in message
    assert "unexpected keys (1): ['extra.weight']" in message
    assert "proj.weight: file (5, 4) vs model (3, 4)" in message


def test_missing_folder_and_ambiguous_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        weight_files(tmp_path / "absent")
    save_file(reference_weights(), str(tmp_path / "a.safetensors"))
    save_file(reference_weights(), str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError, match="expected one .safetensors file"):
        weight_files(tmp_path)


def test_fp8_storage_applies_to_linear_weights_only_and_computes(tmp_path):
    weights = reference_weights()
    save_file(weights, str(tmp_path / "w.safetensors"))
    module = load_component(lambda: Tiny(CastingOps), tmp_path / "w.safetensors", dtype=torch.float8_e4m3fn)
    assert module.proj.weight.dtype == torch.float8_e4m3fn
    assert module.proj.bias.dtype == torch.bfloat16
    assert module.norm.weight.dtype == torch.bfloat16 and module.table.dtype == torch.bfloat16
    full = load_component(Tiny, tmp_path / "w.safetensors")
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    out = module(x.to(torch.bfloat16)).float()
    assert torch.allclose(out, full(x), atol=0.25), "fp8 compute should stay close to float32"


def test_unsupported_dtype_is_refused(tmp_path):
    save_file(reference_weights(), str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="not supported"):
        load_component(Tiny, tmp_path / "w.safetensors", dtype=torch.int8)
