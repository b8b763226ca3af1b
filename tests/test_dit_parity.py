"""Each DiT tower alone against the official ``WanModel`` / ``WanAudioModel`` forward (refs/video_dit, refs/audio_dit)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import assert_close_to_reference

from mova_core.dit import load_dit

pytestmark = pytest.mark.parity

TOWER_REL = 1e-5  # float32, single module: ~1e-6 from summation order alone
ROPE_REL = 1e-12  # float64 table


def _outputs_by_model(tensors: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """``{"video_dit": ["video_dit/out_t0", ...], ...}``: the models and keys present in the reference."""
    by_model: dict[str, list[str]] = {}
    for key in sorted(tensors):
        match = re.fullmatch(r"([^/]+)/out_t(\d+)", key)
        if match:
            by_model.setdefault(match.group(1), []).append(key)
    return by_model


@pytest.mark.parametrize("ref_name", ["video_dit", "audio_dit"])
def test_tower_matches_official_forward(reference, ref_name):
    ref = reference(ref_name)
    timesteps = ref["timesteps"]
    assert timesteps.flatten().tolist() == pytest.approx(ref.meta["timesteps"])
    outputs = _outputs_by_model(ref.tensors)
    assert outputs, f"no '<model>/out_t<i>' tensors in refs/{ref_name}"
    for model_name, keys in outputs.items():
        model = load_dit(ref.checkpoint / model_name)
        assert len(keys) == len(timesteps)
        for key in keys:
            index = int(key.rpartition("_t")[2])
            out = model(ref["x"], timesteps[index], ref["context"])
            assert_close_to_reference(out, ref[key], TOWER_REL, f"{ref_name}: {key} (t={timesteps[index].item()})")


@pytest.mark.parametrize("ref_name", ["video_dit", "audio_dit"])
def test_tower_rope_table_matches_official(reference, ref_name):
    ref = reference(ref_name)
    model = load_dit(ref.checkpoint / next(iter(_outputs_by_model(ref.tensors))))
    _, grid = model.patchify(ref["x"])
    table = torch.view_as_real(model.rope_table(grid))[:, None]
    assert table.dtype == torch.float64
    assert_close_to_reference(table, ref["rope_freqs"], ROPE_REL, f"{ref_name}: rope_freqs")
