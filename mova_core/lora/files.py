"""Read the tensors of a LoRA file, whatever its container.

Supported containers:

* ``.safetensors`` (any key spelling);
* ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``, read only with ``torch.load(weights_only=True)``:
  a flat ``{key: tensor}`` dict, or the official low-resource trainer's
  ``{"lora_state_dict": {...}, "rank", "alpha", ...}``;
* the official accelerate-trainer folder: ``lora_weights.pt`` plus an optional
  ``lora_config.pt`` (``{"rank", "alpha", "target_modules"}``; absent -> rank 16, alpha 16).
  Pointing at that ``lora_weights.pt`` file itself reads its folder the same way.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .types import LoraError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
OFFICIAL_WEIGHTS = "lora_weights.pt"
OFFICIAL_CONFIG = "lora_config.pt"
OFFICIAL_DEFAULT_RANK = 16
OFFICIAL_DEFAULT_ALPHA = 16.0
LOW_RESOURCE_STATE_KEY = "lora_state_dict"


@dataclass
class LoraTensors:
    """Raw tensors of a LoRA file plus a file-wide scaling convention.

    When ``alpha`` is set, layers without their own ``.alpha`` tensor are scaled by
    ``alpha / rank`` with this file-wide ``rank`` (the official trainers' rule), or by the
    layer's own rank when ``rank`` is None.
    """

    tensors: dict[str, torch.Tensor]
    rank: int | None = None
    alpha: float | None = None
    notes: list[str] = field(default_factory=list)


def read_lora_tensors(path: str | Path) -> LoraTensors:
    """The tensors and scaling convention of the LoRA file or official LoRA folder at ``path``."""
    path = Path(path)
    if path.is_dir():
        return _read_official_folder(path)
    if not path.is_file():
        raise LoraError(f"{path}: no such LoRA file or folder.")
    if path.name == OFFICIAL_WEIGHTS:
        return _read_official_folder(path.parent)
    if path.suffix == ".safetensors":
        return LoraTensors(_load_safetensors(path))
    if path.suffix in TORCH_SUFFIXES:
        return _from_torch_object(_torch_load(path), path)
    raise LoraError(f"{path}: unsupported LoRA file type {path.suffix!r}; "
                    f"use .safetensors, {', '.join(TORCH_SUFFIXES)} or an official LoRA folder.")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA ``.safetensors`` file; LoraError naming it when it is truncated or damaged."""
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise LoraError(f"{path}: not a readable safetensors file ({error}); it is truncated or damaged: "
                        "download it again.") from None


def _torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (never arbitrary pickles)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise LoraError(f"{path}: refused to load: it holds objects other than tensors and plain "
                        f"containers, and .pt files are only read with weights_only=True. Convert it "
                        f"to .safetensors from a trusted environment. ({error})") from error
    except (RuntimeError, EOFError) as error:
        raise LoraError(f"{path}: not a readable torch file ({error or 'it ends too early'}); it is truncated or "
                        "damaged: download it again.") from error


def _from_torch_object(data: Any, path: Path) -> LoraTensors:
    if not isinstance(data, dict):
        raise LoraError(f"{path}: expected a dict of tensors, found {type(data).__name__}.")
    if LOW_RESOURCE_STATE_KEY in data:
        rank, alpha, notes = _scaling_convention(data, path)
        return LoraTensors(_tensor_dict(data[LOW_RESOURCE_STATE_KEY], path), rank, alpha, notes)
    return LoraTensors(_tensor_dict(data, path))


def _tensor_dict(data: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(data, dict):
        raise LoraError(f"{path}: expected a dict of tensors, found {type(data).__name__}.")
    wrong = [f"{key!r} ({type(value).__name__})" for key, value in data.items()
             if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if wrong:
        raise LoraError(f"{path}: entries that are not named tensors: {wrong[:5]}.")
    return data


def _read_official_folder(folder: Path) -> LoraTensors:
    weights = folder / OFFICIAL_WEIGHTS
    if not weights.is_file():
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise LoraError(f"{folder}: a LoRA folder must hold {OFFICIAL_WEIGHTS} (official MOVA trainer "
                        f"layout); found {found}. Otherwise pass the LoRA file itself.")
    raw = _from_torch_object(_torch_load(weights), weights)
    if raw.alpha is not None:  # low-resource layout: the file carries its own rank/alpha
        return raw
    config_path = folder / OFFICIAL_CONFIG
    if config_path.is_file():
        config = _torch_load(config_path)
        if not isinstance(config, dict):
            raise LoraError(f"{config_path}: expected a dict with rank/alpha, found {type(config).__name__}.")
    else:
        config = {}
        raw.notes.append(f"{folder}: no {OFFICIAL_CONFIG}; official defaults rank "
                         f"{OFFICIAL_DEFAULT_RANK}, alpha {OFFICIAL_DEFAULT_ALPHA:g}.")
    raw.rank, raw.alpha, notes = _scaling_convention(config, config_path)
    raw.notes.extend(notes)
    return raw


def _scaling_convention(config: dict[str, Any], source: Path) -> tuple[int | None, float, list[str]]:
    """File-wide (rank, alpha) of an official file; a non-numeric rank falls back to each layer's rank.

    The official non-FSDP saver writes a class name as ``rank``; its layers' own rank is then
    the only meaningful value.
    """
    rank = config.get("rank", OFFICIAL_DEFAULT_RANK)
    alpha = config.get("alpha", OFFICIAL_DEFAULT_ALPHA)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise LoraError(f"{source}: alpha must be a number, found {alpha!r}.")
    if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0:
        return rank, float(alpha), []
    return None, float(alpha), [f"{source}: rank {rank!r} is not a positive integer; "
                                f"alpha {alpha:g} is divided by each layer's own rank."]
