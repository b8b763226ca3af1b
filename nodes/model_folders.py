"""Finding MOVA models under the ``models/mova`` search paths (no ComfyUI import).

A MOVA model is a folder holding ``model_index.json`` and one sub-folder per component (the
official Hugging Face layout), or a packed single ``.safetensors`` file (:mod:`mova_core.packed`),
recognised by the marker in its header (only the header is read, once per file version; other
files are not listed). Models are listed by their path relative to the search root, with ``/``
separators, so the same name works on every OS and in saved workflows.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..mova_core.packed import PACK_HINT, inspect_packed

MODEL_INDEX = "model_index.json"
PACKED_SUFFIX = ".safetensors"
REQUIRED_COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "video_vae", "audio_vae", "scheduler")
TEXT_COMPONENTS = ("text_encoder", "tokenizer")  # only MOVA Text Encode (and the default negative) need them
MAX_DEPTH = 3  # models/mova/<org>/<name>/ is as deep as people nest


def _is_model_folder(folder: Path) -> bool:
    return (folder / MODEL_INDEX).is_file()


def _is_packed_file(path: Path) -> bool:
    return path.suffix == PACKED_SUFFIX and path.is_file() and inspect_packed(path).marked


def _is_model(path: Path) -> bool:
    return _is_model_folder(path) or _is_packed_file(path)


def _walk(root: Path, folder: Path, depth: int) -> Iterable[str]:
    try:
        children = sorted((entry for entry in os.scandir(folder) if not entry.name.startswith(".")),
                          key=lambda entry: entry.name)
    except OSError:  # unreadable or vanished folder: nothing to list there
        return
    for entry in children:
        path = Path(entry.path)
        if _is_model(path):
            yield path.relative_to(root).as_posix()
        elif depth < MAX_DEPTH and path.is_dir():
            yield from _walk(root, path, depth + 1)


def find_models(roots: Iterable[str | Path]) -> list[str]:
    """Names of the model folders and packed files below ``roots`` (searched in order; a name found twice
    is listed once).

    A model folder is not searched further (its component folders are not models); links are followed.
    """
    names: dict[str, None] = {}
    for root in roots:
        root = Path(root)
        if root.is_dir():
            names.update(dict.fromkeys(_walk(root, root, 1)))
    return sorted(names)


def resolve_model(roots: Iterable[str | Path], name: str) -> Path:
    """The model folder or packed file ``name`` stands for (first root that has it); FileNotFoundError naming the fix."""
    roots = [Path(root) for root in roots]
    posix = PurePosixPath(name)
    if posix.is_absolute() or Path(name).is_absolute() or ".." in posix.parts:
        raise FileNotFoundError(f"model_name={name!r}: give a name relative to models/mova as listed (for example "
                                "'org/name'), not an absolute path or one with '..'.")
    relative = Path(*posix.parts)
    for root in roots:
        if _is_model(root / relative):
            return root / relative
    for root in roots:
        if (root / relative).is_file():
            raise FileNotFoundError(
                f"model_name={name!r}: {root / relative} is not a packed MOVA checkpoint (its header has no MOVA "
                f"marker). Pick a model folder, or pack one into a single file with {PACK_HINT}.")
    available = find_models(roots)
    searched = ", ".join(str(root) for root in roots) or "(no models/mova folder registered)"
    raise FileNotFoundError(
        f"model_name={name!r}: no MOVA model folder with {MODEL_INDEX} (or packed MOVA file) there. Put the model "
        f"folder (model_index.json, video_dit/, audio_dit/, ...) or a packed .safetensors file under one of: "
        f"{searched}, then refresh; available: {available or 'none'}."
    )


def missing_components(folder: Path, *, with_text_encoder: bool = False) -> list[str]:
    """Component sub-folders a MOVA folder lacks (the text encoder only when asked)."""
    wanted = REQUIRED_COMPONENTS + (TEXT_COMPONENTS if with_text_encoder else ())
    return [name for name in wanted if not (folder / name).is_dir()]


def component_problem(model: Path, name: str) -> str | None:
    """Message naming the missing component folders of model ``name`` (or what is wrong with a packed file),
    or None when complete. A packed file without the text encoder is complete (it is optional there)."""
    if model.is_file():
        problem = inspect_packed(model).problem
        return None if problem is None else f"model_name={name!r}: {problem}"
    missing = missing_components(model)
    if not missing:
        return None
    return (f"model_name={name!r}: the folder {model} lacks {', '.join(f'{m}/' for m in missing)}; "
            "download the complete MOVA checkpoint (all component folders next to model_index.json).")
