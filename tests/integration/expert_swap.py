"""Run by the integration tests under ComfyUI's interpreter (``python expert_swap.py <comfyui> <pack> <checkpoint>
<lora folder> <lora name>``): samples MOVA's native MODEL (with a LoRA) three ways in-process and prints, as JSON, the
latents' largest differences and the expert loads: with ComfyUI's own residency (CPU: everything stays), with the
residency plan forced to one expert (as when VRAM is short: the MODEL is loaded again at the switch), and MOVA
Sampler with the same LoRA."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from in_process import import_pack, start_comfyui

comfyui, pack, checkpoint, lora_folder = (Path(arg) for arg in sys.argv[1:5])
lora_name = sys.argv[5]
start_comfyui(comfyui)
import_pack(pack)
import folder_paths  # noqa: E402
import torch  # noqa: E402
from comfy_extras import nodes_custom_sampler  # noqa: E402

import mova_pack.nodes.comfy_model as comfy_model  # noqa: E402
from mova_pack.nodes.comfy_model import load_mova_model  # noqa: E402
from mova_pack.nodes.conditioning import conditioning_from_embeddings  # noqa: E402
from mova_pack.nodes.generation import sample_latents  # noqa: E402
from mova_pack.nodes.loader_nodes import MOVALoraLoader  # noqa: E402
from mova_pack.nodes.native_nodes import (MOVAAVLatent, MOVANativeModel, MOVANoise, MOVASchedule,  # noqa: E402
                                          MOVASplitAVLatent)

folder_paths.add_model_folder_path("loras", str(lora_folder))
STEPS, SEED, CFG = 5, 3, 3.0
CLIP = dict(width=48, height=32, frames=5, fps=24.0)
base = load_mova_model(checkpoint, "fp32", "sdpa")
model = MOVALoraLoader.execute(base, lora_name, strength_high_noise=0.5, strength_low_noise=0.5,
                               strength_audio=0.5, strength_bridge=0.5).result[0]
torch.manual_seed(0)
positive = conditioning_from_embeddings(torch.randn(1, 12, model.text_dim))
negative = conditioning_from_embeddings(torch.randn(1, 12, model.text_dim))
loads: list[str] = []
original_load = comfy_model.NativePatcher.load_expert


def counted(self, expert, input_shape):
    loads.append(expert)
    return original_load(self, expert, input_shape)


comfy_model.NativePatcher.load_expert = counted


def native() -> torch.Tensor:
    patcher = MOVANativeModel.execute(model, -1.0).result[0]
    pos, neg, latent = MOVAAVLatent.execute(model, positive, negative, *CLIP.values()).result
    guider = nodes_custom_sampler.CFGGuider().get_guider(patcher, pos, neg, CFG)[0]
    out = nodes_custom_sampler.SamplerCustomAdvanced().sample(
        MOVANoise.execute(SEED).result[0], guider, nodes_custom_sampler.KSamplerSelect().get_sampler("euler")[0],
        MOVASchedule.execute(patcher, STEPS, 1.0).result[0], latent)[0]
    video, audio = MOVASplitAVLatent.execute(model, out).result
    return torch.cat([video["samples"].flatten(), audio["samples"].flatten()])


as_planned = native()
planned_loads = list(loads)
plan = comfy_model.resident_experts
comfy_model.resident_experts = lambda needed, *args: frozenset(needed[:1])  # as when the experts do not fit
one_expert = native()
comfy_model.resident_experts = plan
video, audio = sample_latents(model, positive, negative, dict(**CLIP, steps=STEPS, seed=SEED, text_cfg=CFG, bridge_cfg=1.0,
                                                              video_shift=0.0, audio_shift=0.0, boundary=-1.0))
sampler = torch.cat([video["samples"].flatten(), audio["samples"].flatten()])
print("SWAP " + json.dumps({
    "planned_loads": planned_loads, "forced_loads": loads[len(planned_loads):],
    "forced_vs_planned": (one_expert - as_planned).abs().max().item(),
    "planned_vs_sampler": (as_planned - sampler).abs().max().item(), "scale": sampler.abs().max().item()}))
