"""MOVA LoRA support: read official/PEFT/diffusers/kohya LoRAs and apply them non-destructively.

* :func:`load_lora` reads a file or official folder into a :class:`LoraFile`
  (component -> module path -> :class:`LoraWeights` ``(down, up, alpha)``).
* :class:`LoraStack` + :class:`LoraStrengths` stack LoRAs with per-component strengths;
  ``stack.apply(modules)`` patches the pure-PyTorch models and returns a removable handle.
* :func:`lora_delta` is the merged-weight math; :func:`weight_patches` is the mapping a
  ComfyUI ``ModelPatcher`` adapter needs.
"""

from .apply import AppliedLoras, LoraStack, LoraStrengths, lora_delta
from .comfy_map import weight_patches
from .loader import load_lora
from .targets import linear_shapes
from .types import COMPONENTS, VIDEO_EXPERTS, LoraError, LoraFile, LoraWeights

__all__ = [
    "COMPONENTS", "VIDEO_EXPERTS", "AppliedLoras", "LoraError", "LoraFile", "LoraStack", "LoraStrengths",
    "LoraWeights", "linear_shapes", "load_lora", "lora_delta", "weight_patches",
]
