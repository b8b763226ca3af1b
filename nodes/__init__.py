"""ComfyUI adapters (V3 nodes) around :mod:`mova_core`.

Node modules import ComfyUI; this file does not, so helpers in this package stay importable
without ComfyUI. Import node modules inside :func:`node_list`, relatively (``from .x import``):
ComfyUI has its own top-level module called ``nodes``.
"""

from __future__ import annotations


def node_list() -> list[type]:
    """The ``io.ComfyNode`` classes the pack registers; every ``node_id`` starts with ``MOVA``."""
    return []
