"""Run by the integration tests under ComfyUI's interpreter (``python bridge_uuids.py <comfyui> <pack> <checkpoint>``):
samples MOVA's native MODEL with MOVA Bridge Guidance for 3 steps in-process and prints, as JSON, every model pass's
cond uuids and whether the Bridge was on, as a DIFFUSION_MODEL wrapper sees them (EasyCache keys its cache by them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from in_process import import_pack, start_comfyui

comfyui, pack, checkpoint = (Path(arg) for arg in sys.argv[1:4])
start_comfyui(comfyui)
import_pack(pack)
import comfy.patcher_extension  # noqa: E402
import torch  # noqa: E402
from comfy_extras import nodes_custom_sampler  # noqa: E402

from mova_pack.nodes.av_denoiser import BRIDGE_OPTION  # noqa: E402
from mova_pack.nodes.comfy_model import load_mova_model  # noqa: E402
from mova_pack.nodes.conditioning import conditioning_from_embeddings  # noqa: E402
from mova_pack.nodes.native_nodes import (MOVAAVLatent, MOVABridgeGuidance, MOVANativeModel, MOVANoise,  # noqa: E402
                                          MOVASchedule)

passes: list[dict] = []


def record(executor, *args, **kwargs):
    options = args[-1]
    passes.append({"uuids": [str(u) for u in options["uuids"]], "bridge": options.get(BRIDGE_OPTION, True)})
    return executor(*args, **kwargs)


model = load_mova_model(checkpoint, "fp32", "sdpa")
torch.manual_seed(0)
positive = conditioning_from_embeddings(torch.randn(1, 12, model.text_dim))
negative = conditioning_from_embeddings(torch.randn(1, 12, model.text_dim))
native = MOVABridgeGuidance.execute(MOVANativeModel.execute(model, -1.0).result[0], 2.0).result[0].clone()
native.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "record", record)
positive, negative, latent = MOVAAVLatent.execute(model, positive, negative, 48, 32, 5, 16.0).result
guider = nodes_custom_sampler.CFGGuider().get_guider(native, positive, negative, 3.0)[0]
nodes_custom_sampler.SamplerCustomAdvanced().sample(
    MOVANoise.execute(1).result[0], guider, nodes_custom_sampler.KSamplerSelect().get_sampler("euler")[0],
    MOVASchedule.execute(native, 3, 1.0).result[0], latent)
print("PASSES " + json.dumps(passes))
