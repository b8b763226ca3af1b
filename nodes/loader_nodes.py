"""MOVA Model Loader and MOVA LoRA Loader."""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths
from comfy.weight_adapter.lora import LoRAAdapter
from comfy_api.latest import io

from ..mova_core.attention import available_backends
from ..mova_core.lora import load_lora
from .comfy_io import CATEGORY, MovaModelType, model_names, model_roots, number_input
from .comfy_model import COMFY_ATTENTION, MovaModel, load_mova_model
from .lora_patches import STRENGTH_INPUTS, LoraFileCache, patch_groups, strengths_from_widgets
from .model_folders import component_problem, resolve_model
from .widgets import LORA_STRENGTHS, WEIGHT_DTYPES, choice_problem

log = logging.getLogger(__name__)
_LORA_FILES = LoraFileCache()


def attention_choices() -> list[str]:
    """Installed attention backends, ComfyUI's own first (it follows the user's attention flags)."""
    installed = available_backends()
    return [COMFY_ATTENTION] * (COMFY_ATTENTION in installed) + [b for b in installed if b != COMFY_ATTENTION]


class MOVAModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVAModelLoader", display_name="MOVA Model Loader", category=CATEGORY,
            description="Loads a MOVA checkpoint folder (or a packed single-file MOVA) from models/mova. The two video experts and the audio DiT + "
                        "bridge get their own ComfyUI model patchers: only the active expert is loaded, weights stream "
                        "in low-VRAM mode, LoRAs patch them without copies.",
            inputs=[
                io.Combo.Input("model_name", options=model_names(),
                               tooltip="A folder under models/mova holding model_index.json (official MOVA layout), "
                                       "or a .safetensors file packed with `python -m mova_core pack`."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="bf16",
                               tooltip="Weight storage. fp8_e4m3fn halves the DiT memory (Linear weights in fp8, "
                                       "computed in bf16); fp32 is for CPU tests."),
                io.Combo.Input("attention", options=attention_choices(), default=COMFY_ATTENTION,
                               tooltip="comfy = ComfyUI's optimized attention (follows --use-sage-attention, "
                                       "--use-flash-attention, ...)."),
                io.Boolean.Input("compile", default=False, optional=True,
                                 tooltip="torch.compile every DiT block and Bridge layer (regional, static shapes): "
                                         "faster steps after a compile on the first step of each clip size."),
            ],
            outputs=[MovaModelType.Output(display_name="mova_model")],
        )

    @classmethod
    def validate_inputs(cls, model_name: str, weight_dtype: str, attention: str) -> bool | str:
        if None in (model_name, weight_dtype, attention):  # linked from another node: checked when loading
            return True
        return _loader_problem(model_name, weight_dtype, attention) or True

    @classmethod
    def execute(cls, model_name: str, weight_dtype: str, attention: str, compile: bool = False) -> io.NodeOutput:
        problem = _loader_problem(model_name, weight_dtype, attention)
        if problem:
            raise ValueError(problem)
        return io.NodeOutput(load_mova_model(resolve_model(model_roots(), model_name), weight_dtype, attention,
                                             compile=compile))


def _loader_problem(model_name: str, weight_dtype: str, attention: str) -> str | None:
    """What is wrong with the loader's widgets (choices, model folder or packed file and its components), or None."""
    problem = (choice_problem("weight_dtype", weight_dtype, WEIGHT_DTYPES)
               or choice_problem("attention", attention, attention_choices(), "Install the backend's package or use 'comfy'."))
    if problem:
        return problem
    try:
        model = resolve_model(model_roots(), model_name)
    except FileNotFoundError as error:
        return str(error)
    return component_problem(model, model_name)


class MOVALoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVALoraLoader", display_name="MOVA LoRA Loader", category=CATEGORY,
            description="Adds a MOVA LoRA (official, PEFT, diffusers or kohya keys) with separate strengths per video "
                        "expert, audio DiT and bridge. Chain several. The base model is never modified: removing the "
                        "node restores it without reloading.",
            inputs=[
                MovaModelType.Input("mova_model"),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A file in models/loras (.safetensors; .pt files are read weights-only)."),
                *(number_input(LORA_STRENGTHS[name]) for name in STRENGTH_INPUTS),
            ],
            outputs=[MovaModelType.Output(display_name="mova_model")],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str | None) -> bool | str:
        if lora_name is None:  # linked from another node: get_full_path_or_raise reports a missing file
            return True
        return choice_problem("lora_name", lora_name, folder_paths.get_filename_list("loras"),
                              "Put the LoRA file into models/loras and refresh.") or True

    @classmethod
    def execute(cls, mova_model: MovaModel, lora_name: str, **strength_widgets: float) -> io.NodeOutput:
        strengths = strengths_from_widgets(strength_widgets)
        if not any(strength_widgets.values()):
            return io.NodeOutput(mova_model)
        path = Path(folder_paths.get_full_path_or_raise("loras", lora_name))
        pipeline = mova_model.pipeline
        targets = {"video_dit": pipeline.experts["video_dit"], "video_dit_2": pipeline.experts["video_dit_2"],
                   "audio_dit": pipeline.audio_dit, "dual_tower_bridge": pipeline.bridge}
        lora = _LORA_FILES.get(path, str(mova_model.root), lambda: load_lora(path, targets, strict=False))
        for note in lora.notes:
            log.info("MOVA LoRA %s: %s", lora_name, note)
        if lora.unmatched:
            log.warning("MOVA LoRA %s: %d keys not used, e.g. %s", lora_name, len(lora.unmatched),
                        dict(list(lora.unmatched.items())[:3]))
        patched = mova_model.clone()
        for group in patch_groups(lora, strengths):
            adapters = {key: LoRAAdapter(set(), (w.up, w.down, w.alpha, None, None, None))
                        for key, w in group.patches.items()}
            accepted = set(patched.patchers[group.patcher].add_patches(adapters, group.strength))
            if len(accepted) != len(adapters):
                raise RuntimeError(f"lora_name: {len(adapters) - len(accepted)} {group.component} layers of {lora_name} "
                                   f"did not reach the model, e.g. {sorted(set(adapters) - accepted)[:3]}.")
        return io.NodeOutput(patched)
