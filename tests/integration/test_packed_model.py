"""Packed single-file MOVA checkpoints in a real ComfyUI: listed next to the folders, loaded, run end to end.

The packed files are written into models/mova for this module only (removed afterwards), so other
modules see the model list they expect.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from mova_core.pack import pack_checkpoint
from mova_core.tiny import cached_tiny_checkpoint

from .comfy_server import ComfyServer, WorkflowFailed
from .test_mova_nodes import CLIP, MODEL, decoded_frames, saved_mp4, workflow

PACKED = "tiny-mova-packed.safetensors"
PACKED_WITHOUT_TEXT = "packed/tiny-mova-no-umt5.safetensors"
NATIVE_CONDITIONING_HINT = "CLIPLoader(type='wan')"


@pytest.fixture(scope="module")
def packed_server(comfy_server: ComfyServer) -> Iterator[ComfyServer]:
    models = comfy_server.models_dir("mova")
    if not (models / MODEL).exists():
        comfy_server.link_model("mova", cached_tiny_checkpoint(), MODEL)
    (models / "packed").mkdir(exist_ok=True)
    written = [pack_checkpoint(cached_tiny_checkpoint(), models / PACKED),
               pack_checkpoint(cached_tiny_checkpoint(), models / PACKED_WITHOUT_TEXT, include_text_encoder=False)]
    yield comfy_server
    for path in written:
        path.unlink()


def test_packed_files_are_listed_next_to_the_folders(packed_server: ComfyServer):
    loader = packed_server.object_info("MOVAModelLoader")["input"]["required"]
    assert loader["model_name"][1]["options"] == sorted([MODEL, PACKED, PACKED_WITHOUT_TEXT])
    assert list(loader) == ["model_name", "weight_dtype", "attention"]  # the contract's inputs, unchanged


def test_a_packed_file_renders_the_folder_clip(packed_server: ComfyServer):
    from_folder = packed_server.run_workflow(workflow("mova_it/folder_ref"), timeout=300)
    from_file = packed_server.run_workflow(workflow("mova_it/packed", **{"1__model_name": PACKED}), timeout=300)
    folder_frames, packed_frames = (decoded_frames(saved_mp4(packed_server, e)) for e in (from_folder, from_file))
    assert packed_frames.shape == (CLIP["frames"], CLIP["height"], CLIP["width"], 3) and packed_frames.std() > 0
    # Same weights bit for bit; CPU kernels may round the last float bits differently on differently aligned
    # memory-mapped weights, which can move a pixel by one 8-bit level at most after the float32 decode.
    assert np.abs(folder_frames.astype(int) - packed_frames.astype(int)).max() <= 1


def _failure(server: ComfyServer, graph: dict) -> str:
    with pytest.raises(WorkflowFailed) as caught:
        server.run_workflow(graph, timeout=300)
    return str(caught.value)


def test_without_umt5_prompts_come_from_native_conditioning(packed_server: ComfyServer):
    text_encode = _failure(packed_server, workflow("mova_it/no_te", **{"1__model_name": PACKED_WITHOUT_TEXT}))
    assert "packed without the text encoder" in text_encode and NATIVE_CONDITIONING_HINT in text_encode

    # The prompt encoded elsewhere (here by the folder's umT5, standing in for CLIPLoader + CLIPTextEncode).
    graph = workflow("mova_it/no_te", **{"1__model_name": PACKED_WITHOUT_TEXT})
    graph["10"] = {"class_type": "MOVAModelLoader", "inputs": {"model_name": MODEL, "weight_dtype": "fp32",
                                                                "attention": "comfy"}}
    graph["2"]["inputs"]["mova_model"] = ["10", 0]
    default_negative = _failure(packed_server, graph)
    assert "default negative prompt" in default_negative and NATIVE_CONDITIONING_HINT in default_negative

    graph["8"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}}
    graph["3"]["inputs"]["negative"] = ["8", 0]
    frames = decoded_frames(saved_mp4(packed_server, packed_server.run_workflow(graph, timeout=300)))
    assert frames.shape == (CLIP["frames"], CLIP["height"], CLIP["width"], 3)
