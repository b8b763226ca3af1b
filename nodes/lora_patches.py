"""Which ModelPatcher gets which LoRA weights at which strength (no ComfyUI import).

MOVA_MODEL holds three patchers: one per video expert, and one for the audio DiT together with
the bridge. Each wraps its network as ``diffusion_model``, so a component's weights are keyed
``diffusion_model.<path>`` (experts) or ``diffusion_model.<component>.<path>`` (audio patcher).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..mova_core.lora import COMPONENTS, LoraFile, LoraStrengths, LoraWeights, weight_patches

AUDIO_PATCHER = "audio"
PATCHER_KEYS = {
    "video_dit": ("video_dit", "diffusion_model."),
    "video_dit_2": ("video_dit_2", "diffusion_model."),
    "audio_dit": (AUDIO_PATCHER, "diffusion_model.audio_dit."),
    "dual_tower_bridge": (AUDIO_PATCHER, "diffusion_model.dual_tower_bridge."),
}
"""component -> (patcher name, state-dict key prefix of the component inside that patcher)."""

STRENGTH_INPUTS = {
    "strength_high_noise": "video_dit",
    "strength_low_noise": "video_dit_2",
    "strength_audio": "audio_dit",
    "strength_bridge": "dual_tower_bridge",
}
"""LoRA loader widget -> the component it scales."""


@dataclass(frozen=True)
class PatchGroup:
    """Patches for one patcher at one strength (``ModelPatcher.add_patches(patches, strength)``)."""

    patcher: str
    component: str
    strength: float
    patches: Mapping[str, LoraWeights]


def strengths_from_widgets(values: Mapping[str, float]) -> LoraStrengths:
    """The per-component strengths of the LoRA loader's four widgets."""
    return LoraStrengths(**{STRENGTH_INPUTS[name]: float(value) for name, value in values.items()})


def patch_groups(lora: LoraFile, strengths: LoraStrengths) -> list[PatchGroup]:
    """One group per component with layers in ``lora`` and a non-zero strength, in component order.

    Raises ValueError when the file adapts none of MOVA's components (a LoRA for another model).
    """
    if not any(lora.layers(component) for component in COMPONENTS):
        raise ValueError(f"lora_name: {Path(lora.source).name} adapts no layer of the MOVA video experts, audio DiT or "
                         "bridge; is it a LoRA for another model? Unused keys: "
                         f"{list(lora.unmatched)[:5]}.")
    groups = []
    for component in COMPONENTS:
        strength = strengths.of(component)
        if strength == 0.0 or not lora.layers(component):
            continue
        patcher, prefix = PATCHER_KEYS[component]
        groups.append(PatchGroup(patcher, component, strength, weight_patches(lora, component, prefix)))
    return groups


class LoraFileCache:
    """Recently read LoRA files, so changing a strength does not read the file again.

    Keyed by path, size and modification time (an edited file is read again) plus a caller key
    (the model the layers were matched against).
    """

    def __init__(self, size: int = 8):
        self.size = size
        self._files: OrderedDict[tuple, LoraFile] = OrderedDict()

    def get(self, path: str | Path, model_key: object, read: Callable[[], LoraFile]) -> LoraFile:
        stat = os.stat(path)
        key = (str(path), stat.st_size, stat.st_mtime_ns, model_key)
        if key not in self._files:
            self._files[key] = read()
            if len(self._files) > self.size:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        return self._files[key]
