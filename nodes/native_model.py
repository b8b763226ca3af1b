"""MOVA as a native ComfyUI MODEL: KSampler, SamplerCustomAdvanced and MODEL patches drive it.

:class:`MovaBaseModel` is a ``comfy.model_base.BaseModel`` with flow-matching model sampling (the
checkpoint's shift; timesteps are ``sigma * 1000``, as MOVA's) and an identity latent format over the
packed AV latent (:mod:`.av_latent`). Its ``diffusion_model`` (:class:`MovaNetworks`) holds both video
experts, the audio DiT and the Bridge, and evaluates the same :func:`~mova_core.joint.conditioned_forward`
as MOVA Sampler, so ComfyUI's ``apply_model``, wrappers, patches and LoRA machinery reach every network.

Per call: the expert comes from the video timestep (:func:`~mova_core.sampler.expert_at`: ``video_dit`` at or
above the checkpoint's boundary, ``video_dit_2`` below); the I2V condition and the fps come with the
conditioning (MOVA AV Latent puts them there); a modality whose noise mask is all zero is kept: fed clean at
timestep 0, as MOVA Sampler freezes given audio; ``transformer_options["mova_bridge"] = False`` runs the
towers without the Bridge (the bridge-off pass of bridge CFG).
"""

from __future__ import annotations

from typing import Any

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.supported_models_base

from ..mova_core.bridge import DualTowerBridge
from ..mova_core.dit import DiTTower
from ..mova_core.joint import JointConstants, conditioned_forward
from ..mova_core.sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, expert_at
from ..mova_core.scheduler import FlowMatchPairScheduler
from .av_latent import AVLayout
from .conditioning import prompt_rows

BRIDGE_OPTION = "mova_bridge"
"""``transformer_options`` key: False runs a model pass without the Bridge."""
BOUNDARY_OPTION = "mova_boundary"
"""``transformer_options`` key: the expert-switch timestep (0..1000) instead of the checkpoint's."""
CONDITION_KEY = "mova_condition"
FPS_KEY = "mova_fps"
CONDITION_MISSING = ("MOVA's native MODEL needs the I2V condition and fps that MOVA AV Latent adds to the "
                     "conditioning: route positive and negative through MOVA AV Latent and sample its latent.")


class MovaAVFormat(comfy.latent_formats.LatentFormat):
    """The packed AV latent ``[B, 1, N]``: already in the sampling space (normalised video, audio as is)."""

    latent_channels = 1
    latent_dimensions = 1


class MovaModelConfig(comfy.supported_models_base.BASE):
    """Model config of a MOVA checkpoint: flow matching with its scheduler's shift, multiplier 1000."""

    latent_format = MovaAVFormat
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def __init__(self, shift: float, manual_cast_dtype: torch.dtype | None):
        super().__init__({"disable_unet_model_creation": True})
        self.sampling_settings = {"shift": shift, "multiplier": 1000}
        self.manual_cast_dtype = manual_cast_dtype


class MovaNetworks(torch.nn.Module):
    """Both video experts, the audio DiT and the Bridge, evaluated on a packed AV latent."""

    def __init__(self, video_dit: DiTTower, video_dit_2: DiTTower, audio_dit: DiTTower, bridge: DualTowerBridge,
                 boundary_timestep: float):
        super().__init__()
        self.video_dit = video_dit
        self.video_dit_2 = video_dit_2
        self.audio_dit = audio_dit
        self.dual_tower_bridge = bridge
        self.boundary_timestep = boundary_timestep
        self._constants = JointConstants(prompts=False)
        self._run: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype of the video experts' weights (ComfyUI's ``get_dtype``)."""
        return self.video_dit.patch_embedding.weight.dtype

    @property
    def experts(self) -> dict[str, DiTTower]:
        return {HIGH_NOISE_EXPERT: self.video_dit, LOW_NOISE_EXPERT: self.video_dit_2}

    def layout(self, condition: torch.Tensor, packed_size: int) -> AVLayout:
        return AVLayout.of(tuple(condition.shape), packed_size, self.video_dit.config.out_dim,
                           self.audio_dit.config.in_dim)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | None = None,
                transformer_options: dict[str, Any] | None = None, mova_condition: torch.Tensor | None = None,
                mova_fps: float | None = None, mova_clean: torch.Tensor | None = None,
                mova_kept: tuple[bool, bool] = (False, False), **_: Any) -> torch.Tensor:
        """Packed velocities ``[B, 1, N]`` for the packed noisy latents ``x`` at ``timestep`` ``[B]`` (0..1000)."""
        if mova_condition is None or mova_fps is None:
            raise ValueError(CONDITION_MISSING)
        options = transformer_options or {}
        layout = self.layout(mova_condition, x.shape[-1])
        video, audio = layout.unpack(x)
        video_t = audio_t = timestep
        if mova_kept[0] or mova_kept[1]:
            clean_video, clean_audio = layout.unpack(mova_clean.to(x))
            if mova_kept[0]:
                video, video_t = clean_video, torch.zeros_like(timestep)
            if mova_kept[1]:
                audio, audio_t = clean_audio, torch.zeros_like(timestep)
        run = options.get("sample_sigmas")
        if run is not self._run:  # a new sampling run (weights or LoRAs may have changed): fresh memo
            self._constants, self._run = JointConstants(prompts=False), run
        expert = expert_at(float(video_t[0]), options.get(BOUNDARY_OPTION, self.boundary_timestep))
        video_v, audio_v = conditioned_forward(
            self.experts[expert], self.audio_dit, self.dual_tower_bridge, video, audio, mova_condition,
            prompt_rows(context), video_t, audio_t, float(mova_fps), bridge_enabled=options.get(BRIDGE_OPTION, True),
            constants=self._constants)
        return layout.pack(video_v, audio_v)


class MovaBaseModel(comfy.model_base.BaseModel):
    """MOVA's denoiser under ComfyUI's sampling (``ModelType.FLOW``). ``scheduler``: the checkpoint's official
    scheduler (MOVA Schedule reads it)."""

    def __init__(self, config: MovaModelConfig, networks: MovaNetworks, scheduler: FlowMatchPairScheduler,
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
                out["mova_clean"] = comfy.conds.CONDRegular(latent)
        return out

    def memory_required(self, input_shape: tuple[int, ...], cond_shapes: dict[str, Any] = {}) -> float:
        """Bytes one pass needs beside the weights: proportional to the packed values (see
        :func:`.comfy_model.activation_bytes_per_value`)."""
        return input_shape[0] * input_shape[-1] * self.activation_bytes_per_value
