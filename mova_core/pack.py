"""Pack an official MOVA folder into one ``.safetensors`` file (the format of :mod:`mova_core.packed`).

Component by component, each tensor is read from the folder's files (plain reads, no memory map),
converted and written before the next is read: peak RAM is at most about twice the largest tensor
(source and converted copy), not the size of the model: for the real MOVA (about 77 GB in bf16) the
largest tensor is umT5's 256384 x 4096 token table, 2.1 GB in bf16. The file
is written under a hidden temporary name beside the target and published only when complete; an
existing file is never replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .bridge import DualTowerBridge
from .checkpoint import MODEL_INDEX, FolderCheckpoint
from .config import BridgeConfig, ConfigBase, DACConfig, DiTConfig, UMT5Config, VideoVAEConfig, read_json
from .dit import DiTTower
from .loading import (FP8_DTYPES, SUPPORTED_DTYPES, CheckpointError, build_on_meta, component_config, storage_dtype,
                      weight_files)
from .media.files import write_atomically
from .packed import (COMPONENTS_KEY, CONFIG_KEY_PREFIX, FORMAT_KEY, FORMAT_NAME, FORMAT_VERSION, MODEL_INDEX_KEY,
                     NETWORKS, SCHEDULER_KEY, TEXT_ENCODER, TOKENIZER_KEY, VERSION_KEY, WEIGHT_DTYPE_KEY)
from .safetensors_io import TensorEntry, stored_tensors, write_streamed
from .text_encoder import UMT5Encoder

CONFIG_CLASSES: dict[str, type[ConfigBase]] = {
    "video_dit": DiTConfig, "video_dit_2": DiTConfig, "audio_dit": DiTConfig, "dual_tower_bridge": BridgeConfig,
    "video_vae": VideoVAEConfig, "audio_vae": DACConfig, TEXT_ENCODER: UMT5Config,
}
# Networks whose Linear weights take fp8 storage; the VAEs are stored in bf16 instead (as MovaPipeline loads them).
FP8_NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "video_dit": DiTTower, "video_dit_2": DiTTower, "audio_dit": DiTTower, "dual_tower_bridge": DualTowerBridge,
    TEXT_ENCODER: UMT5Encoder,
}
FP8_COMPUTE_DTYPE = torch.bfloat16  # what the loaders compute fp8 weights in (storage of everything else)


def packed_dtype(network: nn.Module | None, key: str, source: torch.dtype, dtype: torch.dtype | None) -> torch.dtype:
    """Stored dtype of tensor ``key``: unchanged without ``dtype`` or for non-float tensors; with fp8, Linear
    weights of ``network`` in fp8 and the rest in bf16 (:func:`mova_core.loading.storage_dtype`)."""
    if dtype is None or not source.is_floating_point:
        return source
    if dtype not in FP8_DTYPES:
        return dtype
    owner_path, _, name = key.rpartition(".")
    try:
        owner = network.get_submodule(owner_path) if network is not None else nn.Module()
    except AttributeError:  # a legacy spelling of the file (weight_g, embed_tokens): not a Linear weight
        owner = nn.Module()
    return storage_dtype(owner, name, dtype, FP8_COMPUTE_DTYPE)


def _component_entries(folder: Path, name: str, dtype: torch.dtype | None) -> Iterator[TensorEntry]:
    config = component_config(folder, None, CONFIG_CLASSES[name])
    network = build_on_meta(lambda: FP8_NETWORKS[name](config)) if dtype in FP8_DTYPES and name in FP8_NETWORKS else None
    for file in weight_files(folder):
        for tensor in stored_tensors(file):
            yield TensorEntry(f"{name}.{tensor.key}", packed_dtype(network, tensor.key, tensor.dtype, dtype),
                              tensor.shape, tensor.read)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _metadata(source: FolderCheckpoint, components: tuple[str, ...], dtype: torch.dtype | None) -> dict[str, str]:
    """The packed metadata; every document is checked by its config class first (a bad folder fails before writing)."""
    root = source.path
    source.model_index()
    source.scheduler_config()
    index = read_json(root / "model_index.json")
    if TEXT_ENCODER not in components:
        index = {key: value for key, value in index.items() if key not in (TEXT_ENCODER, "tokenizer")}
    metadata = {
        FORMAT_KEY: FORMAT_NAME, VERSION_KEY: str(FORMAT_VERSION), COMPONENTS_KEY: _json(list(components)),
        MODEL_INDEX_KEY: _json(index), SCHEDULER_KEY: _json(read_json(root / "scheduler" / "scheduler_config.json")),
        WEIGHT_DTYPE_KEY: "source" if dtype is None else str(dtype).removeprefix("torch."),
    }
    for name in components:
        metadata[CONFIG_KEY_PREFIX + name] = _json(read_json(root / name / "config.json"))
    if TEXT_ENCODER in components:
        tokenizer = root / "tokenizer" / "tokenizer.json"
        if not tokenizer.is_file():
            raise CheckpointError(f"{tokenizer} not found: the text encoder needs its tokenizer; pack with "
                                  "include_text_encoder=False (--no-text-encoder) to leave both out.")
        metadata[TOKENIZER_KEY] = tokenizer.read_text(encoding="utf-8")
    return metadata


def pack_checkpoint(folder: str | Path, out_file: str | Path, *, dtype: torch.dtype | None = None,
                    include_text_encoder: bool = True,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Pack the MOVA ``folder`` into ``out_file`` (a new ``.safetensors`` file); return the written path.

    ``dtype``: None keeps every tensor's dtype; bfloat16/float16/float32 convert the float tensors;
    float8_e4m3fn stores the Linear weights of the DiTs, Bridge and umT5 in fp8 and the rest in bf16.
    ``include_text_encoder=False`` leaves umT5 and its tokenizer out. ``progress(bytes_done, bytes_total)``
    is called after each tensor.
    """
    if not (Path(folder) / MODEL_INDEX).is_file():
        already = " A .safetensors file needs no packing: load it directly." if Path(folder).suffix == ".safetensors" else ""
        raise FileNotFoundError(f"{folder} is not a MOVA folder ({MODEL_INDEX} is missing): pack takes the downloaded "
                                f"folder that holds {MODEL_INDEX} and one folder per component.{already}")
    source = FolderCheckpoint(folder)
    out = Path(out_file)
    if out.suffix != ".safetensors":
        raise ValueError(f"out_file={str(out)!r} must end with .safetensors.")
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"out_file={str(out)!r} already exists; choose another name (it is never overwritten).")
    if dtype is not None and dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype={dtype} is not supported; choose None (keep) or one of {SUPPORTED_DTYPES}.")
    components = NETWORKS + ((TEXT_ENCODER,) if include_text_encoder else ())
    missing = [f"{name}/" for name in (*components, "scheduler") if not (source.path / name).is_dir()]
    if missing:
        hint = " (or pack without the text encoder)" if f"{TEXT_ENCODER}/" in missing else ""
        raise CheckpointError(f"{source.path} lacks {', '.join(missing)}; download the complete MOVA folder{hint}.")
    metadata = _metadata(source, components, dtype)
    entries = [entry for name in components for entry in _component_entries(source.path / name, name, dtype)]
    total, done = sum(entry.nbytes for entry in entries), 0

    def on_tensor(entry: TensorEntry) -> None:
        nonlocal done
        done += entry.nbytes
        if progress is not None:
            progress(done, total)

    return write_atomically(out, lambda temp: write_streamed(temp, entries, metadata, on_tensor=on_tensor))
