"""ComfyUI-side plumbing shared by the MOVA nodes: the MOVA_MODEL type, widgets from specs, model folders."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from .model_folders import find_models
from .widgets import NumberSpec

MOVA_FOLDER = "mova"
CATEGORY = "MOVA"
MovaModelType = io.Custom("MOVA_MODEL")


def number_input(spec: NumberSpec, **extra) -> io.Input:
    """The INT/FLOAT widget of ``spec`` (same default, range and step everywhere it is validated)."""
    if spec.integer:
        return io.Int.Input(spec.name, default=int(spec.default), min=int(spec.minimum), max=int(spec.high),
                            step=int(spec.step), tooltip=spec.tooltip, **extra)
    return io.Float.Input(spec.name, default=spec.default, min=spec.minimum, max=spec.high, step=spec.step,
                          tooltip=spec.tooltip, **extra)


def model_and_prompt_inputs() -> list[io.Input]:
    """The model and the positive/negative conditioning every generating node (sampler, long video) starts with."""
    return [MovaModelType.Input("mova_model"), io.Conditioning.Input("positive"),
            io.Conditioning.Input("negative", optional=True,
                                  tooltip="None = the official MOVA negative prompt, encoded with the model's umT5.")]


def register_model_folder() -> None:
    """Register ``models/mova`` (keeping paths a user's extra_model_paths.yaml added) with model extensions."""
    default = os.path.join(folder_paths.models_dir, MOVA_FOLDER)
    paths = folder_paths.folder_names_and_paths.get(MOVA_FOLDER, ([], set()))[0]
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[MOVA_FOLDER] = (paths, folder_paths.supported_pt_extensions)
    folder_paths.filename_list_cache.pop(MOVA_FOLDER, None)


def model_roots() -> list[str]:
    return folder_paths.get_folder_paths(MOVA_FOLDER)


def model_names() -> list[str]:
    """The MOVA model folders the loader offers (refreshed at every /object_info request)."""
    return find_models(model_roots())
