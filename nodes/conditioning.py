"""ComfyUI CONDITIONING <-> MOVA prompt embeddings (no ComfyUI import).

CONDITIONING is a list of ``[tensor, options]`` pairs. MOVA's DiTs read 512 umT5 rows per prompt,
zero past the prompt's length; native ``CLIPLoader(type="wan")`` + ``CLIPTextEncode`` gives
``max(512, tokens)`` rows with the padding zeroed, i.e. the same layout for prompts of up to 512
tokens. Longer native prompts are cut to 512 rows (the official tokenizer truncates at 512 too).
"""

from __future__ import annotations

from typing import Any

import torch

from ..mova_core.text_encoder import MAX_SEQUENCE_LENGTH


def conditioning_from_embeddings(embeddings: torch.Tensor) -> list[list[Any]]:
    """Prompt embeddings ``[1, L, D]`` -> native CONDITIONING (float32, CPU, like CLIPTextEncode's)."""
    return [[embeddings.detach().float().cpu(), {"pooled_output": None}]]


def embeddings_from_conditioning(conditioning: Any, text_dim: int, name: str) -> torch.Tensor:
    """The ``[1, 512, text_dim]`` float32 context of a CONDITIONING input named ``name``.

    Raises ValueError naming the input and the fix when the conditioning is not one umT5 prompt
    of the model's width.
    """
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"{name}: expected a CONDITIONING (connect MOVA Text Encode or CLIPTextEncode), "
                         f"got {type(conditioning).__name__}.")
    if len(conditioning) > 1:
        raise ValueError(f"{name}: has {len(conditioning)} prompts (e.g. from Conditioning Combine); MOVA takes one "
                         "prompt per input. Connect a single text encode, or concatenate the texts.")
    entry = conditioning[0]
    tensor = entry[0] if isinstance(entry, (list, tuple)) and entry else None
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        raise ValueError(f"{name}: expected prompt embeddings [batch, tokens, width], "
                         f"got {getattr(tensor, 'shape', type(tensor).__name__)}.")
    if tensor.shape[0] != 1:
        raise ValueError(f"{name}: has a batch of {tensor.shape[0]} prompts; MOVA generates one video at a time, "
                         "encode one prompt.")
    if tensor.shape[-1] != text_dim:
        raise ValueError(f"{name}: embeddings are {tensor.shape[-1]} wide but this model reads {text_dim}-wide umT5 "
                         "embeddings. Use MOVA Text Encode, or CLIPLoader(type='wan') with the umT5-XXL matching "
                         "the model.")
    return prompt_rows(tensor).float()


def prompt_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """Prompt embeddings ``[B, L, D]`` as the ``[B, 512, D]`` rows MOVA's DiTs read: cut at 512, zero-padded."""
    rows = embeddings[:, :MAX_SEQUENCE_LENGTH]
    missing = MAX_SEQUENCE_LENGTH - rows.shape[1]
    if missing:
        rows = torch.cat([rows, rows.new_zeros(rows.shape[0], missing, rows.shape[2])], dim=1)
    return rows
