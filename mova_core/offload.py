"""Model offloading for the standalone pipeline: only the modules in use sit on the GPU.

ComfyUI users get this from ComfyUI's own memory management (the nodes wrap each network in a
``ModelPatcher``); :class:`ModelPlacement` gives the command line and Python API the same habit:
the text encoder, the active video expert (with the audio DiT and the Bridge) and the VAEs take
turns on the compute device.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class ModelPlacement:
    """Keeps only the modules named in the last :meth:`use` call on ``device``.

    Offloading puts back each module's original host tensors (for memory-mapped checkpoints, the
    mapped file itself), so host RAM never holds a second copy and nothing is copied device-to-host.
    Modules are treated as read-only weights (inference).
    """

    def __init__(self, modules: Mapping[str, nn.Module], device: torch.device | str):
        self.modules = dict(modules)
        self.device = torch.device(device)
        self._host = {name: _slots(module) for name, module in self.modules.items()}
        self.active: frozenset[str] = frozenset()

    def use(self, *names: str) -> None:
        """Move ``names`` to the device and every other module back to the host."""
        unknown = set(names) - set(self.modules)
        if unknown:
            raise KeyError(f"unknown modules {sorted(unknown)}; known: {sorted(self.modules)}")
        wanted = frozenset(names)
        for name in self.active - wanted:
            self._place(name, to_device=False)
        for name in wanted - self.active:
            self._place(name, to_device=True)
        self.active = wanted

    def _place(self, name: str, *, to_device: bool) -> None:
        for slots, key, host in self._host[name]:
            if to_device:
                moved = host.to(self.device, non_blocking=True)
                slots[key] = nn.Parameter(moved, requires_grad=False) if isinstance(host, nn.Parameter) else moved
            else:
                slots[key] = host


def _slots(module: nn.Module) -> list[tuple[dict, str, torch.Tensor]]:
    """(owner's parameter or buffer dict, name, host tensor) for every tensor of ``module``."""
    return [(slots, key, tensor)
            for owner in module.modules()
            for slots in (owner._parameters, owner._buffers)
            for key, tensor in slots.items() if tensor is not None]
