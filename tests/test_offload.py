"""ModelPlacement: only the modules in use sit on the device; offloading restores the host tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mova_core.offload import ModelPlacement
from mova_core.pipeline import MovaPipeline
from mova_core.tiny import write_tiny_checkpoint


def test_use_moves_named_modules_and_restores_host_tensors_without_copies():
    modules = {"a": nn.Linear(3, 3), "b": nn.LayerNorm(3)}
    host = {name: list(m.parameters()) for name, m in modules.items()}
    placement = ModelPlacement(modules, "meta")
    placement.use("a")
    assert all(p.device.type == "meta" for p in modules["a"].parameters())
    assert all(p.device.type == "cpu" for p in modules["b"].parameters())
    placement.use("b")
    assert all(p is original for p, original in zip(modules["a"].parameters(), host["a"]))
    assert all(p.device.type == "meta" for p in modules["b"].parameters())
    with pytest.raises(KeyError, match="unknown modules"):
        placement.use("c")


def test_offloaded_pipeline_takes_the_networks_in_turn_and_gives_the_same_clip(tmp_path):
    """Each stage asks for exactly its networks (the high-noise expert until the boundary, then the low-noise
    one, each with the audio DiT and Bridge); the moves themselves are checked above on the meta device."""
    folder = write_tiny_checkpoint(tmp_path / "model", boundary_ratio=0.8)
    args = dict(height=32, width=48, num_frames=5, steps=3, seed=4, text_cfg=2.0, bridge_cfg=1.5)
    resident = MovaPipeline.from_pretrained(folder, dtype=torch.float32).generate("a cat", **args)
    offloaded_pipe = MovaPipeline.from_pretrained(folder, dtype=torch.float32, offload=True)
    placement = offloaded_pipe.residency.placement
    requests = []
    use = placement.use
    placement.use = lambda *names: (requests.append(set(names)), use(*names))
    offloaded = offloaded_pipe.generate("a cat", **args)
    assert torch.equal(resident.video, offloaded.video) and torch.equal(resident.audio, offloaded.audio)
    tower = {"audio_dit", "dual_tower_bridge"}
    expected = [{"text_encoder"}, {"text_encoder"}, {"video_vae"}, {"video_dit", *tower}, {"video_dit_2", *tower},
                {"video_vae"}, {"audio_vae"}]
    assert requests == expected
    assert placement.active == {"audio_vae"}
