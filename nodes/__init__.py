"""ComfyUI adapters (V3 nodes) around :mod:`mova_core`.

Node modules import ComfyUI; this file does not, so helpers in this package stay importable
without ComfyUI. Import node modules inside :func:`node_list`, relatively (``from .x import``):
ComfyUI has its own top-level module called ``nodes``.

Modules without ComfyUI imports (unit-tested on their own): ``widgets``, ``model_folders``,
``conditioning``, ``latents``, ``lora_patches``, ``prompt_rewriter``.
"""

from __future__ import annotations


def node_list() -> list[type]:
    """The ``io.ComfyNode`` classes the pack registers; every ``node_id`` starts with ``MOVA``.

    Also registers ``models/mova`` with ComfyUI's folder_paths and ComfyUI's attention as the
    ``comfy`` backend (ComfyUI calls this once, at start-up).
    """
    from .comfy_io import register_model_folder
    from .comfy_model import register_comfy_attention
    from .encode_node import MOVAEncode
    from .loader_nodes import MOVALoraLoader, MOVAModelLoader
    from .long_node import MOVALongVideo
    from .native_nodes import NATIVE_NODES
    from .output_nodes import MOVAAVMux, MOVADecode
    from .sampler_node import MOVASampler
    from .text_nodes import MOVAPromptRewriter, MOVATextEncode

    register_model_folder()
    register_comfy_attention()
    return [MOVAModelLoader, MOVALoraLoader, MOVATextEncode, MOVAPromptRewriter, MOVASampler, MOVALongVideo, MOVADecode,
            MOVAEncode, MOVAAVMux, *NATIVE_NODES]
