"""MOVA's denoiser on the packed AV latent, as ComfyUI's native samplers call it (no ComfyUI import).

:class:`MovaNetworks` holds both video experts, the audio DiT and the Bridge and evaluates the same
:func:`~mova_core.joint.conditioned_forward` as MOVA Sampler. Per call: the expert comes from the video
timestep (:func:`~mova_core.sampler.expert_at`); the I2V condition and the fps come with the conditioning
(MOVA AV Latent puts them there); a modality whose noise mask is all zero is kept: fed clean at timestep 0,
as MOVA Sampler freezes given audio; ``transformer_options["mova_bridge"] = False`` runs the towers without
the Bridge (the bridge-off pass of bridge CFG) and ``["mova_boundary"]`` moves the switch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..mova_core.bridge import DualTowerBridge
from ..mova_core.dit import DiTTower
from ..mova_core.joint import JointConstants, VideoBlockWrapper, conditioned_forward
from ..mova_core.sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, expert_at
from .av_latent import AVLayout
from .conditioning import prompt_rows

BRIDGE_OPTION = "mova_bridge"
"""``transformer_options`` key: False runs a model pass without the Bridge."""
BOUNDARY_OPTION = "mova_boundary"
"""``transformer_options`` key: the expert-switch timestep (0..1000) instead of the checkpoint's."""
CONDITION_KEY = "mova_condition"
FPS_KEY = "mova_fps"
GIVEN_AUDIO_KEY = "mova_given_audio"
"""Conditioning key: the kept audio's latents ``[1, Ca, L]`` (MOVA AV Latent's audio), what the model sees for it."""
CONDITION_MISSING = ("MOVA's native MODEL needs the I2V condition and fps that MOVA AV Latent adds to the "
                     "conditioning: route positive and negative through MOVA AV Latent and sample its latent.")


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

    def expert(self, video_timestep: float, options: Mapping[str, Any] | None = None) -> str:
        """The video expert for a video timestep (0..1000) at the checkpoint's boundary or ``options``' own."""
        return expert_at(video_timestep, (options or {}).get(BOUNDARY_OPTION, self.boundary_timestep))

    def pass_expert(self, timestep: float, kept: tuple[bool, bool], options: Mapping[str, Any] | None = None) -> str:
        """The expert of a model pass at ``timestep`` (0..1000); a kept video is at timestep 0."""
        return self.expert(0.0 if kept[0] else timestep, options)

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
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"latent_image: MOVA's MODEL samples the latent of MOVA AV Latent ([batch, 1, values]), got "
                             f"one of shape {tuple(x.shape)} (e.g. from an empty image or video latent node); connect "
                             "MOVA AV Latent's av_latent.")
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
        expert = self.pass_expert(float(timestep[0]), mova_kept, options)
        video_v, audio_v = conditioned_forward(
            self.experts[expert], self.audio_dit, self.dual_tower_bridge, video, audio, mova_condition,
            prompt_rows(context), video_t, audio_t, float(mova_fps), bridge_enabled=options.get(BRIDGE_OPTION, True),
            constants=self._constants, video_block_wrapper=_block_patches(options))
        return layout.pack(video_v, audio_v)


def _block_patches(options: Mapping[str, Any]) -> VideoBlockWrapper | None:
    """ComfyUI's ``patches_replace["dit"][("double_block", i)]`` (e.g. SkipLayerGuidanceDiT) on video block i, called
    as on Wan's blocks: ``patch({"img": states, "transformer_options": ...}, {"original_block": ...})["img"]``."""
    replaced = options.get("patches_replace", {}).get("dit", {})
    if not any(key[0] == "double_block" for key in replaced):
        return None

    def wrapper(layer: int, run_block: Callable[[torch.Tensor], torch.Tensor], states: torch.Tensor) -> torch.Tensor:
        patch = replaced.get(("double_block", layer))
        if patch is None:
            return run_block(states)
        original = lambda args: {"img": run_block(args["img"])}  # noqa: E731
        return patch({"img": states, "transformer_options": options}, {"original_block": original})["img"]

    return wrapper
