"""MOVA as a native ComfyUI MODEL: KSampler, SamplerCustomAdvanced and MODEL patches drive it.

:class:`MovaBaseModel` is a ``comfy.model_base.BaseModel`` with flow-matching model sampling (the
checkpoint's shift; timesteps are ``sigma * 1000``, as MOVA's) and an identity latent format over the
packed AV latent (:mod:`.av_latent`). Its ``diffusion_model`` (:class:`MovaNetworks`) holds both video
experts, the audio DiT and the Bridge, and evaluates the same :func:`~mova_core.joint.conditioned_forward`
as MOVA Sampler, so ComfyUI's ``apply_model``, wrappers, patches and LoRA machinery reach every network.

The per-call behaviour (expert switch, kept modalities, bridge off) is :mod:`.av_denoiser`'s;
:class:`NativeNetworks` runs it inside the MODEL's diffusion-model wrappers (EasyCache, ...).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.patcher_extension
import comfy.supported_models_base
import comfy.utils

from ..mova_core.scheduler import FlowMatchPairScheduler
from .av_denoiser import BRIDGE_OPTION, CONDITION_KEY, FPS_KEY, GIVEN_AUDIO_KEY, MovaNetworks
from .av_latent import AVLayout

log = logging.getLogger(__name__)


@functools.cache
def nested_tensor_class() -> type | None:
    """ComfyUI's ``NestedTensor`` where its sampling nodes handle nested AV latents throughout, else None (packed).

    0.3.64 has no nested tensors. 0.9.x samples them, but its DisableNoise and KSamplerAdvanced without added noise
    make zeros of the first stream only, and its sampler then fails, so the packed latent (which every node
    takes) is used there. The probe: core's empty noise keeps a nested latent nested (newer ComfyUI)."""
    try:
        from comfy.nested_tensor import NestedTensor
        from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise
    except ImportError:
        return None
    if not hasattr(comfy.utils, "pack_latents"):
        return None
    probe = NestedTensor((torch.zeros(1, 1), torch.zeros(1, 2)))
    try:
        zeros = Noise_EmptyNoise().generate_noise({"samples": probe})
    except (AttributeError, TypeError):  # a core whose empty noise changed form: the packed latent works anywhere
        return None
    return NestedTensor if getattr(zeros, "is_nested", False) is True else None


class MovaAVFormat(comfy.latent_formats.LatentFormat):
    """The AV latent (packed ``[B, 1, N]`` or nested): already in the sampling space (normalised video, audio as
    is). Where ComfyUI previews the video stream of nested latents (it also has ``fix_empty_latent``), the Wan 2.1
    preview factors apply to it; previews of a packed tensor are off."""

    latent_channels = 1
    latent_dimensions = 1

    def __init__(self) -> None:
        if nested_tensor_class() is not None and hasattr(comfy.latent_formats.LatentFormat, "fix_empty_latent"):
            wan = comfy.latent_formats.Wan21()
            self.latent_rgb_factors, self.latent_rgb_factors_bias = wan.latent_rgb_factors, wan.latent_rgb_factors_bias


class MovaModelConfig(comfy.supported_models_base.BASE):
    """Model config of a MOVA checkpoint: flow matching with its scheduler's shift, multiplier 1000."""

    latent_format = MovaAVFormat
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def __init__(self, shift: float, manual_cast_dtype: torch.dtype | None):
        super().__init__({"disable_unet_model_creation": True})
        self.sampling_settings = {"shift": shift, "multiplier": 1000}
        self.manual_cast_dtype = manual_cast_dtype


class NativeNetworks(MovaNetworks):
    """:class:`MovaNetworks` whose forward runs inside the MODEL's ``DIFFUSION_MODEL``
    wrappers, as core's diffusion models do: EasyCache and other diffusion-model wrappers reach MOVA."""

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | None = None,
                transformer_options: dict[str, Any] | None = None, **conds: Any) -> torch.Tensor:
        options = {} if transformer_options is None else transformer_options
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, options)
        executor = comfy.patcher_extension.WrapperExecutor.new_class_executor(self._evaluate, self, wrappers)
        return executor.execute(x, timestep, context, options, **conds)  # options last, where wrappers look for them

    def _evaluate(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | None,
                  transformer_options: dict[str, Any], **conds: Any) -> torch.Tensor:
        """One model pass; an interrupt stops the run before it (ComfyUI itself checks only between steps)."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("MOVA model pass: batch %d at timestep %.2f, bridge %s.", x.shape[0], float(timestep[0]),
                      "on" if transformer_options.get(BRIDGE_OPTION, True) else "off")
        return super().forward(x, timestep, context, transformer_options, **conds)


class MovaBaseModel(comfy.model_base.BaseModel):
    """MOVA's denoiser under ComfyUI's sampling (``ModelType.FLOW``). ``scheduler``: the checkpoint's official
    scheduler (MOVA Schedule reads it)."""

    def __init__(self, config: MovaModelConfig, networks: NativeNetworks, scheduler: FlowMatchPairScheduler,
                 activation_bytes_per_value: float, device: torch.device | None = None):
        super().__init__(config, model_type=comfy.model_base.ModelType.FLOW, device=device)
        self.diffusion_model = networks
        self.mova_scheduler = scheduler
        self.activation_bytes_per_value = activation_bytes_per_value

    def extra_conds(self, **kwargs: Any) -> dict[str, Any]:
        out = super().extra_conds(**kwargs)
        condition = kwargs.get(CONDITION_KEY)
        if condition is None:
            return out
        out[CONDITION_KEY] = comfy.conds.CONDRegular(condition)
        out[FPS_KEY] = comfy.conds.CONDConstant(float(kwargs[FPS_KEY]))
        mask, latent = kwargs.get("denoise_mask"), kwargs.get("latent_image")
        if mask is not None and latent is not None:
            layout = self.diffusion_model.layout(condition, latent.shape[-1])
            kept = tuple(not bool(part.any()) for part in layout.unpack(mask))
            if any(kept):
                out["mova_kept"] = comfy.conds.CONDConstant(kept)
                out["mova_clean"] = comfy.conds.CONDRegular(_kept_values(layout, latent, kept,
                                                                          kwargs.get(GIVEN_AUDIO_KEY)))
        return out

    def memory_required(self, input_shape: tuple[int, ...], cond_shapes: dict[str, Any] = {}) -> float:
        """Bytes one pass needs beside the weights: proportional to the packed values (``activation_bytes_per_value``,
        from the heuristic of :func:`.comfy_model.activation_memory`)."""
        return input_shape[0] * input_shape[-1] * self.activation_bytes_per_value


def _kept_values(layout: AVLayout, latent: torch.Tensor, kept: tuple[bool, bool],
                 given_audio: torch.Tensor | None) -> torch.Tensor:
    """The clean values of the kept modalities: the sampled latent's, a kept audio's from MOVA AV Latent (the second
    stage of a two-stage run samples the first stage's output, whose kept part holds that stage's leftover noise)."""
    if not kept[1] or given_audio is None:
        return latent
    video, _ = layout.unpack(latent)
    return layout.pack(video, given_audio.to(video).expand(video.shape[0], -1, -1))


NOISE_MASK_MISFIT = (
    "latent_image: its noise mask {shape} (e.g. from Set Latent Noise Mask) does not fit MOVA's AV latent, which "
    "holds the video and the audio packed together: a MASK over the picture cannot mark parts of it. To keep a sound, "
    "connect it to MOVA AV Latent's audio input and sample MOVA AV Latent's latent without a new noise mask.")


def check_noise_mask(mask: torch.Tensor | None, packed: torch.Tensor) -> None:
    """A noise mask on the packed AV latent must be packed like it (``[B, 1, N]``, as MOVA AV Latent makes it)."""
    if mask is not None and not (mask.ndim == 3 and mask.shape[1] == 1 and mask.shape[-1] == packed.shape[-1]):
        raise ValueError(NOISE_MASK_MISFIT.format(shape=f"of shape {tuple(mask.shape)}"))


def noise_mask_check(executor: Any, noise: Any, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
                     denoise_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
    """OUTER_SAMPLE wrapper: :func:`check_noise_mask`. ComfyUI 0.3.64 would interpolate an image MASK over the packed
    values (a shape error inside torch); ComfyUI with nested AV latents has fitted a plain mask to the video stream
    and packed it by now, so this passes it (0.9.x fits the mask before this wrapper: MOVA Noise checks it first)."""
    check_noise_mask(denoise_mask, latent_image)
    return executor(noise, latent_image, sampler, sigmas, denoise_mask, *args, **kwargs)
