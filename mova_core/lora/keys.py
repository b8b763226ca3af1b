"""Key spellings: split a LoRA file key into (module name, role) and normalise the name.

Recognised roles (ComfyUI's ``LoRAAdapter`` spellings plus the official MOVA ones):

=================================  =================================  ==========
down ([rank, in])                  up ([out, rank])                   source
=================================  =================================  ==========
``x.lora_A.weight``                ``x.lora_B.weight``                official, PEFT
``x.lora_A.default.weight``        ``x.lora_B.default.weight``        official "diffsynth", PEFT
``x.lora_A``                       ``x.lora_B``                       official low-resource
``x.lora_down.weight``             ``x.lora_up.weight``               kohya, ComfyUI
``x.lora.down.weight``             ``x.lora.up.weight``               diffusers
``x_lora.down.weight``             ``x_lora.up.weight``               diffusers (old)
``x.lora_linear_layer.down.weight`` ``x.lora_linear_layer.up.weight`` diffusers attn processors
=================================  =================================  ==========

plus ``x.alpha`` (scalar). Module names lose a leading ``base_model.model.`` (PEFT) and
``diffusion_model.`` (ComfyUI); ``lora_unet_`` marks a kohya name whose dots became
underscores (mapped back with the model's module names, see :mod:`.targets`).
"""

from __future__ import annotations

from .types import COMPONENTS

DOWN, UP, ALPHA = "down", "up", "alpha"

_ROLE_SUFFIXES = (  # longest spellings first where one ends another
    (".lora_A.default.weight", DOWN), (".lora_B.default.weight", UP),
    (".lora_A.weight", DOWN), (".lora_B.weight", UP),
    (".lora_A", DOWN), (".lora_B", UP),
    (".lora_down.weight", DOWN), (".lora_up.weight", UP),
    (".lora_linear_layer.down.weight", DOWN), (".lora_linear_layer.up.weight", UP),
    (".lora.down.weight", DOWN), (".lora.up.weight", UP),
    ("_lora.down.weight", DOWN), ("_lora.up.weight", UP),
    (".alpha", ALPHA),
)
STRIPPED_PREFIXES = ("base_model.model.", "diffusion_model.")
KOHYA_PREFIX = "lora_unet_"


def split_role(key: str) -> tuple[str, str] | None:
    """``(module name, role)`` of a LoRA tensor key, or None when it is no plain-LoRA tensor."""
    for suffix, role in _ROLE_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], role
    return None


def strip_prefixes(name: str) -> tuple[str, bool]:
    """The module name without wrapper prefixes, and whether it is a kohya (underscored) name."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    if name.startswith(KOHYA_PREFIX):
        return name[len(KOHYA_PREFIX):], True
    return name, False


def split_component(name: str) -> tuple[str | None, str]:
    """``("audio_dit", "blocks.0.ffn.0")`` for ``"audio_dit.blocks.0.ffn.0"``; ``(None, name)`` without prefix."""
    head, _, rest = name.partition(".")
    if head in COMPONENTS and rest:
        return head, rest
    return None, name


def underscored(name: str) -> str:
    """The kohya spelling of a dotted module name."""
    return name.replace(".", "_")
