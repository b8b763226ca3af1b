"""Our nodes' ``/object_info`` derived from the node code itself, without ComfyUI (tests only).

A stand-in for the parts of ComfyUI that node code touches before any node runs is put into
``sys.modules`` for the duration of a session (:func:`comfy_stand_in`):
- ``comfy_api.latest`` (:mod:`.latest`): ``io`` (:mod:`.v3_io`, the schema classes and their V1
  ``/object_info`` conversion as in ComfyUI 0.3.64) and ``ComfyExtension``;
- ``folder_paths`` (:mod:`.folder_paths`): folder registration, empty model folders;
- ``comfy.*``, ``latent_preview``, ... (:mod:`.runtime_only`): placeholder modules, since node code
  only calls them while running.
The pack is then imported under a private package name and loaded the way ComfyUI's loader does
(``comfy_entrypoint()`` -> ``get_node_list()`` -> registered by ``GET_SCHEMA().node_id``), and every
node's ``GET_NODE_INFO_V1()`` is read. Afterwards ``sys.modules`` holds no stand-in or pack module
of the session, and any real ComfyUI module imported before is back.

tests/integration/test_workflows_live.py asserts that the result equals a real ComfyUI's
``/object_info`` for our nodes, so the stand-in cannot drift from ComfyUI unnoticed.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import latest
from .runtime_only import RUNTIME_ONLY_PACKAGES, RuntimeOnlyFinder

PACK_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "mova_pack_under_comfy_stand_in"
"""Import name of the pack inside a session (never clashes with the ``comfyui_mova_av`` the tests use)."""

_STOOD_IN = frozenset({"comfy_api", "folder_paths", PACKAGE}) | RUNTIME_ONLY_PACKAGES


def _stood_in(module_name: str) -> bool:
    return module_name.partition(".")[0] in _STOOD_IN


def _fresh_folder_paths() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("folder_paths", Path(__file__).with_name("folder_paths.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def comfy_stand_in() -> Iterator[None]:
    """The stand-in replaces ComfyUI's modules inside the block (see the module docstring)."""
    shadowed = {name: module for name, module in sys.modules.items() if _stood_in(name)}
    for name in shadowed:
        del sys.modules[name]
    comfy_api = types.ModuleType("comfy_api")
    comfy_api.__path__ = []
    comfy_api.latest = latest
    sys.modules.update({"comfy_api": comfy_api, "comfy_api.latest": latest, "folder_paths": _fresh_folder_paths()})
    finder = RuntimeOnlyFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [name for name in sys.modules if _stood_in(name)]:
            del sys.modules[name]
        sys.modules.update(shadowed)


@dataclass
class LoadedPack:
    """The pack as ComfyUI registered it, inside a stand-in session (edit it there, then read ``object_info``)."""

    package: types.ModuleType
    nodes: dict[str, type]
    """node_id -> node class, in the order ``get_node_list`` returned them."""

    io = latest.io
    """The stand-in ``comfy_api.latest.io`` (to build replacement inputs in edits)."""

    def module(self, dotted_name: str) -> types.ModuleType:
        """A module of the pack, e.g. ``module("nodes.widgets")``."""
        return importlib.import_module(f"{self.package.__name__}.{dotted_name}")

    def object_info(self) -> dict[str, dict[str, Any]]:
        """``/object_info`` entries (JSON values, without ``python_module``) of every registered node."""
        return {node_id: _as_json(node_id, node.GET_NODE_INFO_V1()) for node_id, node in self.nodes.items()}


def _as_json(node_id: str, info: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(info))
    except TypeError as error:
        raise TypeError(f"{node_id}: its schema holds a value ComfyUI could not serve ({error}); if it comes "
                        "from a ComfyUI module, model that module in tests/comfy_stub") from error


def _import_pack(root: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(PACKAGE, root / "__init__.py", submodule_search_locations=[str(root)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return package


async def _registered_nodes(package: types.ModuleType) -> dict[str, type]:
    """The nodes ComfyUI 0.3.64's loader registers for a pack with ``comfy_entrypoint``."""
    entrypoint = package.comfy_entrypoint
    extension = await entrypoint() if inspect.iscoroutinefunction(entrypoint) else entrypoint()
    if not isinstance(extension, latest.ComfyExtension):
        raise TypeError(f"comfy_entrypoint returned {extension!r}, not a ComfyExtension: ComfyUI would skip the pack")
    node_list = await extension.get_node_list()
    if not isinstance(node_list, list):
        raise TypeError(f"get_node_list returned {type(node_list).__name__}, not a list: ComfyUI would skip the pack")
    return {node.GET_SCHEMA().node_id: node for node in node_list}


@contextmanager
def loaded_pack(root: Path = PACK_ROOT) -> Iterator[LoadedPack]:
    """The pack at ``root`` loaded under the stand-in, for the duration of the block."""
    with comfy_stand_in():
        package = _import_pack(root)
        yield LoadedPack(package, asyncio.run(_registered_nodes(package)))


def derive_object_info(edit: Callable[[LoadedPack], None] | None = None,
                       root: Path = PACK_ROOT) -> dict[str, dict[str, Any]]:
    """``{node_id: /object_info entry}`` of the pack's nodes; ``edit(pack)`` may change the loaded pack
    first (tests use it to break a node on purpose)."""
    with loaded_pack(root) as pack:
        if edit is not None:
            edit(pack)
        return pack.object_info()
