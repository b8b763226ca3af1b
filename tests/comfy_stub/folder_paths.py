"""Stand-in for ComfyUI's ``folder_paths`` on an install without any files.

Folder registration works as in ComfyUI 0.3.64 (the pack adds ``models/mova`` at start-up) and
unknown folder names raise KeyError as there; every folder is empty, so combos listing model files
get ``[]`` (the workflow checker compares such combos by type only). Only what node code may call
while defining schemas is here. The module is loaded afresh for every stand-in session, because
registrations are module state.
"""

from __future__ import annotations

import os
import tempfile

base_path = os.path.join(tempfile.gettempdir(), "comfyui-stand-in-never-created")
models_dir = os.path.join(base_path, "models")
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

_MODEL_FOLDERS = ("checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision", "style_models",
                  "embeddings", "vae_approx", "controlnet", "gligen", "upscale_models", "hypernetworks",
                  "photomaker", "model_patches", "audio_encoders")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {
    name: ([os.path.join(models_dir, name)], supported_pt_extensions) for name in _MODEL_FOLDERS}
filename_list_cache: dict[str, object] = {}


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[folder_name][0])


def get_filename_list(folder_name: str) -> list[str]:
    folder_names_and_paths[folder_name]  # unknown folder: KeyError, as in ComfyUI
    return []



def __getattr__(name: str) -> object:
    raise AttributeError(f"folder_paths.{name} is not modelled by the ComfyUI stand-in: add it to "
                         "tests/comfy_stub/folder_paths.py if node code needs it before a node runs")
