"""What a ComfyUI LoRA adapter needs from a :class:`LoraFile` (no ComfyUI import here).

``weight_patches(lora, component, key_prefix)`` gives ``{key_prefix + module_path + ".weight":
LoraWeights(down, up, alpha)}``, keyed like the wrapped model's ``state_dict()`` (which is what
``ModelPatcher.add_patches`` filters on). ``alpha`` already follows ComfyUI's rule
(``strength * alpha / rank``, or ``strength * 1`` when None), so a node only re-orders the
tuple into ComfyUI's LoRA adapter, whose weights are ``(up, down, alpha, mid, dora_scale,
reshape)``::

    from comfy.weight_adapter.lora import LoRAAdapter
    patches = {key: LoRAAdapter(set(), (w.up, w.down, w.alpha, None, None, None))
               for key, w in weight_patches(lora, "video_dit", "diffusion_model.").items()}
    patcher = patcher.clone()
    accepted = patcher.add_patches(patches, strengths.video_dit)
    # patches whose key is not in `accepted` did not reach the model: report them.

The high-noise expert takes ``video_dit``, the low-noise expert ``video_dit_2``; the audio
patcher takes ``audio_dit`` and ``dual_tower_bridge`` (each with its own prefix and strength).
"""

from __future__ import annotations

from .types import LoraFile, LoraWeights


def weight_patches(lora: LoraFile, component: str, key_prefix: str = "") -> dict[str, LoraWeights]:
    """``{key_prefix + module_path + ".weight": (down, up, alpha)}`` for one component of ``lora``."""
    return {f"{key_prefix}{path}.weight": weights for path, weights in lora.layers(component).items()}
