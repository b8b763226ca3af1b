"""A MOVA checkpoint as the loaders see it: an official folder or a packed single file.

Both answer the same questions (where each component is, the model index, the scheduler config,
the text encoder), so :meth:`MovaPipeline.from_pretrained` and the ComfyUI loader load either
with the same per-component loaders and key checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch

from .config import ModelIndex, SchedulerConfig
from .loading import PackedComponent
from .packed import MODEL_INDEX_KEY, SCHEDULER_KEY, TEXT_ENCODER, TOKENIZER_KEY, read_packed
from .text_encoder import TextEncoder, UMT5Tokenizer, load_text_encoder, load_umt5_encoder, parse_tokenizer

MODEL_INDEX = "model_index.json"


class FolderCheckpoint:
    """The official layout: ``model_index.json`` and one sub-folder per component."""

    omits_text_encoder = False  # the official layout always has it (a missing folder is an error)

    def __init__(self, root: str | Path):
        self.path = Path(root)
        if not (self.path / MODEL_INDEX).is_file():
            raise FileNotFoundError(
                f"{self.path} is not a MOVA folder: {MODEL_INDEX} is missing. Give the folder that holds "
                f"{MODEL_INDEX}, video_dit/, audio_dit/, ..., or a packed MOVA .safetensors file.")

    def component(self, name: str) -> Path:
        return self.path / name

    def model_index(self) -> ModelIndex:
        return ModelIndex.from_file(self.path / MODEL_INDEX)

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig.from_file(self.path / "scheduler" / "scheduler_config.json")

    def load_text_encoder(self, *, dtype: torch.dtype, device: torch.device | str, operations: Any = None) -> TextEncoder:
        """umT5 + tokenizer; FileNotFoundError naming the missing folders."""
        missing = [f"{name}/" for name in ("text_encoder", "tokenizer") if not (self.path / name).is_dir()]
        if missing:
            raise FileNotFoundError(f"{self.path} has no {' and '.join(missing)} folder")
        return load_text_encoder(self.path / "text_encoder", dtype=dtype, device=device, operations=operations)


class PackedCheckpoint:
    """A packed single-file MOVA (see :mod:`mova_core.packed`); the header is checked on construction."""

    def __init__(self, file: str | Path):
        self.header = read_packed(file)
        self.path = self.header.file

    @property
    def omits_text_encoder(self) -> bool:
        return TEXT_ENCODER not in self.header.components

    def component(self, name: str) -> PackedComponent:
        return self.header.component(name)

    def model_index(self) -> ModelIndex:
        return ModelIndex.from_dict(self.header.document(MODEL_INDEX_KEY), source=f"{self.path} {MODEL_INDEX_KEY}")

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig.from_dict(self.header.document(SCHEDULER_KEY), source=f"{self.path} {SCHEDULER_KEY}")

    def load_text_encoder(self, *, dtype: torch.dtype, device: torch.device | str, operations: Any = None) -> TextEncoder:
        """umT5 + the tokenizer stored in the metadata; FileNotFoundError when the file was packed without them."""
        if self.omits_text_encoder:
            raise FileNotFoundError(f"{self.path} was packed without the text encoder (--no-text-encoder)")
        tokenizer = parse_tokenizer(self.header.metadata[TOKENIZER_KEY], f"{self.path} ({TOKENIZER_KEY})")
        return TextEncoder(UMT5Tokenizer(tokenizer, source=f"{self.path} ({TOKENIZER_KEY})"),
                           load_umt5_encoder(self.component(TEXT_ENCODER), dtype=dtype, device=device,
                                             operations=operations))


MovaCheckpoint = Union[FolderCheckpoint, PackedCheckpoint]


def open_checkpoint(path: str | Path) -> MovaCheckpoint:
    """A packed file when ``path`` is a file, else an official folder."""
    path = Path(path)
    return PackedCheckpoint(path) if path.is_file() else FolderCheckpoint(path)
