"""Nodes of the native path: MOVA as a MODEL for KSampler / SamplerCustomAdvanced and what it needs around it."""

from __future__ import annotations

from typing import Any

import torch

import comfy.samplers
from comfy_api.latest import io

from ..mova_core.settings import SEED_MAX
from .comfy_io import CATEGORY, MovaModelType, number_input
from .comfy_model import MovaModel
from .native_sampling import MovaNoise, build_av_latent, mova_euler, mova_sigmas, split_av_latent, with_bridge_guidance
from .native_vae import native_video_vae
from .widgets import CHECKPOINT_VALUE, NATIVE, SAMPLER, settings_problem

NATIVE_CATEGORY = f"{CATEGORY}/native sampling"


class MOVANativeModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVANativeModel", display_name="MOVA Native Model", category=NATIVE_CATEGORY,
            description="MOVA's denoiser (both video experts, audio DiT, bridge) as a MODEL for KSampler, "
                        "SamplerCustomAdvanced and MODEL patches. The expert switch happens inside the model at the "
                        "boundary. LoRAs from MOVA LoRA Loader come along; weights are shared, not copied.",
            inputs=[MovaModelType.Input("mova_model"), number_input(SAMPLER["boundary"])],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, mova_model: MovaModel, boundary: float) -> io.NodeOutput:
        return io.NodeOutput(mova_model.native_model(None if boundary == CHECKPOINT_VALUE["boundary"] else boundary))


class MOVAAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVAAVLatent", display_name="MOVA AV Latent", category=NATIVE_CATEGORY,
            description="The video+audio latent to sample with MOVA's MODEL, and the conditioning with the start "
                        "(and end) image condition and fps added. Connected audio is kept as given (noise mask 0 on "
                        "the audio): the picture is generated around it.",
            inputs=[
                MovaModelType.Input("mova_model"), io.Conditioning.Input("positive"), io.Conditioning.Input("negative"),
                *(number_input(SAMPLER[name]) for name in ("width", "height", "frames", "fps")),
                io.Image.Input("start_image", optional=True, tooltip="First frame. None = text to video+audio."),
                io.Image.Input("end_image", optional=True, tooltip="Last frame (needs start_image)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Sound to keep; the video is as long as the sound (frames is not used)."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="av_latent")],
        )

    @classmethod
    def validate_inputs(cls, width: int | None, height: int | None, frames: int | None,
                        fps: float | None) -> bool | str:
        if None in (width, height, frames, fps):
            return True
        return settings_problem(width, height, frames, fps, 1) or True

    @classmethod
    def execute(cls, mova_model: MovaModel, positive: Any, negative: Any, width: int, height: int, frames: int,
                fps: float, start_image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                audio: dict | None = None) -> io.NodeOutput:
        return io.NodeOutput(*build_av_latent(
            mova_model, positive, negative, width=width, height=height, frames=None if audio is not None else frames,
            fps=fps, start_image=start_image, end_image=end_image, audio=audio))


class MOVASplitAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVASplitAVLatent", display_name="MOVA Split AV Latent", category=NATIVE_CATEGORY,
            description="Splits a sampled AV latent into a video LATENT (raw Wan 2.1 latents: MOVA Decode or native "
                        "VAEDecode with the Wan 2.1 VAE) and an audio LATENT (MOVA Decode).",
            inputs=[MovaModelType.Input("mova_model"), io.Latent.Input("av_latent")],
            outputs=[io.Latent.Output(display_name="video_latent"), io.Latent.Output(display_name="audio_latent")],
        )

    @classmethod
    def execute(cls, mova_model: MovaModel, av_latent: Any) -> io.NodeOutput:
        return io.NodeOutput(*split_av_latent(mova_model, av_latent))


class MOVASchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVASchedule", display_name="MOVA Schedule", category=NATIVE_CATEGORY,
            description="The official MOVA sigmas for this many steps (the checkpoint's scheduler; shift from the "
                        "MODEL), for SamplerCustomAdvanced: with euler it reproduces MOVA Sampler.",
            inputs=[io.Model.Input("model"), number_input(SAMPLER["steps"]), number_input(NATIVE["denoise"])],
            outputs=[io.Sigmas.Output(display_name="sigmas")],
        )

    @classmethod
    def execute(cls, model: Any, steps: int, denoise: float) -> io.NodeOutput:
        return io.NodeOutput(mova_sigmas(model, steps, denoise))


class MOVAEulerSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVAEulerSampler", display_name="MOVA Euler (official)", category=NATIVE_CATEGORY,
            description="The official MOVA sampler for SamplerCustomAdvanced: Euler steps between the training-grid "
                        "sigmas nearest to the schedule's. With MOVA Schedule it equals MOVA Sampler at any step count "
                        "(KSamplerSelect's euler does at 50, 25, 20... steps).",
            inputs=[],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(comfy.samplers.KSAMPLER(mova_euler))


class MOVANoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVANoise", display_name="MOVA Noise", category=NATIVE_CATEGORY,
            description="The noise MOVA Sampler draws for a seed (video, then audio, on a CPU generator), for "
                        "SamplerCustomAdvanced: the same seed gives MOVA Sampler's video.",
            inputs=[io.Int.Input("noise_seed", default=0, min=0, max=SEED_MAX, control_after_generate=True)],
            outputs=[io.Noise.Output(display_name="noise")],
        )

    @classmethod
    def execute(cls, noise_seed: int) -> io.NodeOutput:
        return io.NodeOutput(MovaNoise(noise_seed))


class MOVABridgeGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVABridgeGuidance", display_name="MOVA Bridge Guidance", category=NATIVE_CATEGORY,
            description="Bridge CFG on MOVA's MODEL: after the sampler's text CFG, one extra negative pass with the "
                        "audio-video bridge off per step. 1 = off (returns the model unchanged).",
            inputs=[io.Model.Input("model"),
                    number_input(SAMPLER["bridge_cfg"], display_mode=io.NumberDisplay.slider)],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model: Any, bridge_cfg: float) -> io.NodeOutput:
        return io.NodeOutput(with_bridge_guidance(model, bridge_cfg))


class MOVAVideoVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVAVideoVAE", display_name="MOVA Video VAE", category=NATIVE_CATEGORY,
            description="MOVA's video VAE (Wan 2.1) as a VAE for ComfyUI's VAEDecode, VAEDecodeTiled and VAEEncode, "
                        "e.g. on MOVA Split AV Latent's video_latent. Holds a copy of the VAE's weights.",
            inputs=[MovaModelType.Input("mova_model")],
            outputs=[io.Vae.Output(display_name="vae")],
        )

    @classmethod
    def execute(cls, mova_model: MovaModel) -> io.NodeOutput:
        return io.NodeOutput(native_video_vae(mova_model))


NATIVE_NODES = [MOVANativeModel, MOVAAVLatent, MOVASplitAVLatent, MOVASchedule, MOVAEulerSampler, MOVANoise,
                MOVABridgeGuidance, MOVAVideoVAE]
