"""What the in-process scripts (``bridge_uuids.py``, ``expert_swap.py``) share: ComfyUI started as ``main.py --cpu``
would (without a server) and this pack imported as ComfyUI imports a custom node pack, as ``mova_pack``."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def start_comfyui(comfyui: Path) -> None:
    """Make ``comfyui`` importable with ``--cpu`` parsed, and load its node registry."""
    sys.argv = ["main.py", "--cpu"]
    sys.path.insert(0, str(comfyui))
    os.chdir(comfyui)
    import comfy.options

    comfy.options.enable_args_parsing()
    import nodes  # noqa: F401  (ComfyUI's node registry, as the server imports it)


def import_pack(pack: Path) -> None:
    """Import the pack at ``pack`` as the package ``mova_pack``."""
    spec = importlib.util.spec_from_file_location("mova_pack", pack / "__init__.py",
                                                  submodule_search_locations=[str(pack)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mova_pack"] = module
    spec.loader.exec_module(module)
