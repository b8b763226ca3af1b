"""The packed MOVA checkpoint: a whole MOVA folder in one ``.safetensors`` file (format version 1).

Tensors
    Every component's weights under its official keys, prefixed with the component name and a dot:
    ``video_dit.``, ``video_dit_2.``, ``audio_dit.``, ``dual_tower_bridge.``, ``video_vae.``,
    ``audio_vae.`` and optionally ``text_encoder.`` (e.g. ``video_dit.blocks.0.self_attn.q.weight``).
    Keys are copied as the folder spells them: legacy spellings (the DAC's ``weight_g``/``weight_v``
    pairs, umT5's ``encoder.embed_tokens.weight``) stay and are resolved at load time, as for folders.

``__metadata__`` (safetensors allows string values only; JSON documents are stored as JSON text)
    ==========================  ===============================================================
    ``mova.format``             ``"mova-packed"``: the marker that makes a file a packed MOVA
    ``mova.format_version``     ``"1"``
    ``mova.components``         JSON list of the components in the file
    ``mova.model_index``        ``model_index.json`` (without ``text_encoder``/``tokenizer`` when
                                the text encoder is left out); holds ``boundary_ratio``
    ``mova.config.<component>`` that component's ``config.json``
    ``mova.scheduler``          ``scheduler/scheduler_config.json``
    ``mova.tokenizer``          ``tokenizer/tokenizer.json`` (only with the text encoder)
    ``mova.weight_dtype``       conversion applied when packing: ``source`` (none) or a dtype name
    ==========================  ===============================================================

The text encoder is optional: ComfyUI users often encode prompts with the native
``CLIPLoader(type="wan")``, and umT5-XXL alone is 11.4 GB in bf16. The tokenizer goes into
the header: safetensors refuses headers over 100,000,000 bytes, and the real umT5 ``tokenizer.json``
(about 17 MB) takes about 1.1x its size there once escaped as a JSON string (measured on a
256k-piece Unigram tokenizer: 17.3 MB -> 19.0 MB of header), so it fits. Every open of the file
then parses that header (about 0.1 s; a load opens the file once per component, so a tiny model
with that tokenizer loads in 3.2 s packed against 1.4 s as a folder, noise for the real model).
:func:`inspect_packed` caches its verdict per file version, so listing models re-reads nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Mapping

from .loading import CheckpointError, PackedComponent
from .safetensors_io import read_header

FORMAT_KEY = "mova.format"
FORMAT_NAME = "mova-packed"
VERSION_KEY = "mova.format_version"
FORMAT_VERSION = 1
COMPONENTS_KEY = "mova.components"
MODEL_INDEX_KEY = "mova.model_index"
CONFIG_KEY_PREFIX = "mova.config."
SCHEDULER_KEY = "mova.scheduler"
TOKENIZER_KEY = "mova.tokenizer"
WEIGHT_DTYPE_KEY = "mova.weight_dtype"

NETWORKS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "video_vae", "audio_vae")  # required
TEXT_ENCODER = "text_encoder"  # optional
PACK_HINT = "python -m mova_core pack --model <MOVA folder> --out <file>.safetensors"


@dataclasses.dataclass(frozen=True)
class PackedHeader:
    """The parsed header of a packed MOVA file (checked by :func:`read_packed`)."""

    file: Path
    metadata: Mapping[str, str]
    components: tuple[str, ...]

    def document(self, key: str) -> Any:
        """The JSON document stored under metadata ``key``."""
        if key not in self.metadata:
            raise CheckpointError(f"{self.file}: the packed MOVA metadata has no {key!r}; re-pack it with {PACK_HINT}.")
        try:
            return json.loads(self.metadata[key])
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{self.file}: metadata {key!r} is not valid JSON ({error}).") from None

    def component(self, name: str) -> PackedComponent:
        """Where the loaders find component ``name`` (its tensors and its config)."""
        if name not in self.components:
            raise CheckpointError(f"{self.file} has no {name} component (it holds {', '.join(self.components)}).")
        return PackedComponent(self.file, name, self.document(CONFIG_KEY_PREFIX + name))


def read_packed(file: str | Path) -> PackedHeader:
    """Read and check the header of a packed MOVA file; :class:`CheckpointError` naming the file and what is wrong."""
    return _checked(Path(file), read_header(file))


def _is_marked(header: Mapping[str, Any]) -> bool:
    metadata = header.get("__metadata__")
    return isinstance(metadata, dict) and metadata.get(FORMAT_KEY) == FORMAT_NAME


def _checked(file: Path, header: Mapping[str, Any]) -> PackedHeader:
    if not _is_marked(header):
        raise CheckpointError(f"{file} is not a packed MOVA checkpoint: its safetensors metadata has no "
                              f"{FORMAT_KEY}={FORMAT_NAME!r} marker. Give a MOVA folder, or pack one with {PACK_HINT}.")
    metadata = header["__metadata__"]
    version = metadata.get(VERSION_KEY, "")
    if not version.isdigit() or not 1 <= int(version) <= FORMAT_VERSION:
        raise CheckpointError(f"{file}: packed MOVA format version {version!r} is not supported (this code reads "
                              f"up to {FORMAT_VERSION}); update mova_core or re-pack the folder with {PACK_HINT}.")
    partial = PackedHeader(file, metadata, ())
    components = partial.document(COMPONENTS_KEY)
    known = (*NETWORKS, TEXT_ENCODER)
    if not isinstance(components, list) or not set(components) <= set(known):
        raise CheckpointError(f"{file}: {COMPONENTS_KEY} must list components among {known}, got {components!r}.")
    missing = [name for name in NETWORKS if name not in components]
    if missing:
        raise CheckpointError(f"{file} lacks the component(s) {', '.join(missing)}; a packed MOVA needs "
                              f"{', '.join(NETWORKS)}. Re-pack the complete folder with {PACK_HINT}.")
    prefixes = {key.split(".", 1)[0] for key in header if key != "__metadata__"}
    empty = [name for name in components if name not in prefixes]
    if empty:
        raise CheckpointError(f"{file} lists the component(s) {', '.join(empty)} but holds no tensors under "
                              f"{', '.join(name + '.' for name in empty)}; the file is incomplete, re-pack it.")
    if TEXT_ENCODER in components and TOKENIZER_KEY not in metadata:
        raise CheckpointError(f"{file} holds the text encoder but no {TOKENIZER_KEY}; re-pack it with {PACK_HINT}.")
    for key in (MODEL_INDEX_KEY, SCHEDULER_KEY, *(CONFIG_KEY_PREFIX + name for name in components)):
        partial.document(key)  # present and valid JSON
    return PackedHeader(file, metadata, tuple(components))


@dataclasses.dataclass(frozen=True)
class PackedInspection:
    """What a model list needs to know about a file: is it marked as packed MOVA, and what is wrong with it."""

    marked: bool
    problem: str | None


def inspect_packed(file: str | Path) -> PackedInspection:
    """Whether ``file`` carries the packed MOVA marker and, if so, why it cannot load (None when it can).

    Reads only the header, once per file version (path, size and modification time).
    """
    file = Path(file)
    try:
        stat = file.stat()
    except OSError:
        return PackedInspection(False, None)
    return _inspect(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _inspect(file: str, size: int, mtime_ns: int) -> PackedInspection:
    try:
        header = read_header(file)
    except (OSError, CheckpointError):
        return PackedInspection(False, None)
    if not _is_marked(header):
        return PackedInspection(False, None)
    try:
        _checked(Path(file), header)
    except CheckpointError as error:
        return PackedInspection(True, str(error))
    return PackedInspection(True, None)
