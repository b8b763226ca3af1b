"""ComfyUI entry point of the MOVA node pack.

ComfyUI imports this folder as a package and calls :func:`comfy_entrypoint`. ComfyUI modules
are imported inside that function, so ``import`` of the package works without ComfyUI
(tests, tools). Use relative imports only: ComfyUI registers the package under a name built
from its path, not under ``comfyui_mova_av``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfy_api.latest import ComfyExtension

WEB_DIRECTORY = "./web"


async def comfy_entrypoint() -> "ComfyExtension":
    """Return the pack's ComfyExtension (ComfyUI >= 0.3.47, V3 node API)."""
    from comfy_api.latest import ComfyExtension

    from .nodes import node_list

    class MovaExtension(ComfyExtension):
        """Lists the MOVA nodes for ComfyUI's loader."""

        async def get_node_list(self) -> list[type]:
            return node_list()

    return MovaExtension()
