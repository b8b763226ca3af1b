"""Regional compilation: ``torch.compile`` each DiT block and each Bridge conditioner, not the whole model.

The 40 (video) and 30 (audio) blocks of a tower share one class, so with static shapes (``dynamic=False``)
one compiled graph per tower and input shape serves every block (weights are graph inputs), and compiling
costs about one block's worth instead of the whole network's. ``fullgraph=True`` makes a graph break an
error instead of a silent slowdown; the block forwards (RoPE, modulation, attention through
:mod:`mova_core.attention`, ``CastingOps`` fp8/bf16 weight casts, LoRA forward hooks) compile without one.

Compilation happens lazily on the first call of each region (and again for a new clip size or batch).
Modules are compiled in place (``nn.Module.compile``).
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from .bridge import DualTowerBridge
from .dit import DiTTower


def compiled_regions(networks: Iterable[nn.Module]) -> list[nn.Module]:
    """The regions compiled for ``networks``: every :class:`DiTTower` block and every Bridge conditioner block
    (each direction of each bridged layer). Other modules are left alone."""
    regions: list[nn.Module] = []
    for network in networks:
        if isinstance(network, DiTTower):
            regions.extend(network.blocks)
        elif isinstance(network, DualTowerBridge):
            regions.extend(network.audio_to_video_conditioners.values())
            regions.extend(network.video_to_audio_conditioners.values())
        else:
            raise TypeError(f"compile_blocks takes DiT towers and Bridges, got {type(network).__name__}.")
    return regions


def compile_blocks(networks: Iterable[nn.Module], *, fullgraph: bool = True, mode: str | None = None,
                   backend: str = "inductor") -> int:
    """Compile every block of ``networks`` in place with static shapes; returns how many regions were set up.

    ``fullgraph=False`` tolerates graph breaks (for operations namespaces this package does not control, such
    as ComfyUI's weight-streaming ``comfy.ops``); ``mode``/``backend`` go to ``torch.compile``."""
    regions = compiled_regions(networks)
    for region in regions:
        region.compile(dynamic=False, fullgraph=fullgraph, mode=mode, backend=backend)
    return len(regions)
