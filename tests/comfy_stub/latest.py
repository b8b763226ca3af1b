"""Stand-in for ``comfy_api.latest``: the V3 schema module ``io`` and the extension base class.

``ui``, ``InputImpl`` and ``Types`` are only used while nodes run, so they are placeholders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import v3_io as io
from .runtime_only import PlaceholderModule, placeholder

ui = PlaceholderModule("comfy_api.latest.ui")
InputImpl = placeholder("comfy_api.latest.InputImpl")
Types = placeholder("comfy_api.latest.Types")


class ComfyExtension(ABC):
    """What a pack's ``comfy_entrypoint`` returns."""

    async def on_load(self) -> None:
        """Extension hook (ComfyUI 0.3.64's loader does not call it); nothing by default."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The pack's node classes."""
