"""Placeholders for the ComfyUI modules that node code only uses while a node runs.

The node modules import ``comfy.model_management``, ``comfy.ops``, ``latent_preview``, ... at module
level but call them only in ``execute``. Under the stand-in, any module of the packages below is a
:class:`PlaceholderModule`: every attribute is a placeholder class (callable, subclassable, with
placeholder attributes), so the imports succeed. A schema that really used one would carry a
placeholder into ``/object_info``, which then fails to serialise and names it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import types
from typing import Any

RUNTIME_ONLY_PACKAGES = frozenset({"comfy", "comfy_execution", "comfy_extras", "latent_preview", "node_helpers",
                                   "server"})


class _PlaceholderMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return placeholder(f"{cls.__qualname__}.{name}")

    def __repr__(cls) -> str:
        return f"<placeholder {cls.__qualname__}>"


class Placeholder(metaclass=_PlaceholderMeta):
    """Base of every placeholder: accepts any arguments, any attribute is another placeholder."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return placeholder(f"{type(self).__qualname__}().{name}")


def placeholder(qualified_name: str) -> type:
    return _PlaceholderMeta(qualified_name.rsplit(".", 1)[-1], (Placeholder,), {"__qualname__": qualified_name})


class PlaceholderModule(types.ModuleType):
    """A module whose every (non-dunder) attribute is a placeholder, the same one on every access."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class RuntimeOnlyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook serving :class:`PlaceholderModule` packages for ``RUNTIME_ONLY_PACKAGES`` and their submodules."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in RUNTIME_ONLY_PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return PlaceholderModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: attributes appear on access."""
