"""MOVA_MODEL: the MOVA networks under ComfyUI's memory management.

``video_dit``, ``video_dit_2`` and the audio DiT + bridge each sit in their own ``ModelPatcher``
(built from ``comfy.ops`` layers), so ``load_models_gpu`` loads only the active expert, streams
weights in low-VRAM mode and applies LoRA patches; the VAEs and the (lazily loaded) umT5 have
patchers too. :meth:`MovaModel.clone` clones the DiT patchers only: LoRAs added to a clone never
touch the base model's patches, and the weights themselves are shared.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Callable

import torch

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension

from ..mova_core.attention import register_backend
from ..mova_core.audio_vae import load_audio_vae
from ..mova_core.bridge import load_bridge
from ..mova_core.checkpoint import MovaCheckpoint, open_checkpoint
from ..mova_core.compile import compile_blocks
from ..mova_core.dit import DiTTower, load_dit
from ..mova_core.pipeline import MovaPipeline
from ..mova_core.sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT
from ..mova_core.scheduler import FlowMatchPairScheduler
from ..mova_core.text_encoder import TextEncoder
from ..mova_core.video_vae import load_video_vae
from .lora_patches import AUDIO_PATCHER
from .av_denoiser import BOUNDARY_OPTION
from .expert_residency import experts_needed, resident_experts, skipped_prefixes
from .native_model import MovaBaseModel, MovaModelConfig, NativeNetworks, noise_mask_check

STORAGE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn, "fp32": torch.float32}
COMFY_ATTENTION = "comfy"


def _comfy_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[B, L, H, D]`` attention through ComfyUI's optimized attention (honours --use-sage-attention etc.)."""
    from comfy.ldm.modules import attention

    heads, head_dim = q.shape[2], q.shape[3]
    out = attention.optimized_attention(q.flatten(2), k.flatten(2), v.flatten(2), heads)
    return out.unflatten(-1, (heads, head_dim))


def register_comfy_attention() -> None:
    """Make ``attention="comfy"`` available to mova_core's layers."""
    register_backend(COMFY_ATTENTION, _comfy_attention)


def compute_dtype(storage: torch.dtype, device: torch.device) -> torch.dtype:
    """Activation dtype for weights stored as ``storage`` on ``device`` (bf16 where fast, else fp16/fp32)."""
    if storage == torch.float32:
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if storage == torch.float16 and mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


def operations(storage: torch.dtype, compute: torch.dtype, device: torch.device):
    """comfy.ops layers as ComfyUI picks them for its own models: no casting when the weights are stored in the
    compute dtype, casting otherwise, fp8 matrix multiplication under ``--fast fp8_matrix_mult`` on a GPU that
    has it."""
    return comfy.ops.pick_operations(storage, compute, load_device=device)


class DiffusionWrapper(torch.nn.Module):
    """What ComfyUI expects inside a ModelPatcher: the network as ``diffusion_model`` (+ its latent format)."""

    def __init__(self, diffusion_model: torch.nn.Module, latent_format: Any = None):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.latent_format = latent_format


class AudioTower(torch.nn.Module):
    """The audio DiT and the bridge, loaded and patched together (both run at every model pass)."""

    def __init__(self, audio_dit: DiTTower, bridge: torch.nn.Module):
        super().__init__()
        self.audio_dit = audio_dit
        self.dual_tower_bridge = bridge


def _patcher(module: torch.nn.Module, load_device: torch.device, offload_device: torch.device,
             latent_format: Any = None) -> comfy.model_patcher.ModelPatcher:
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return patcher_class(DiffusionWrapper(module, latent_format), load_device=load_device, offload_device=offload_device)


class _SharedParts:
    """Parts every clone of a MovaModel shares: the VAEs' patchers, the lazily loaded umT5 and the native MODEL's
    base patcher (built on first use over the same networks)."""

    def __init__(self, checkpoint: MovaCheckpoint, pipeline: MovaPipeline, storage: torch.dtype, compute: torch.dtype):
        self.checkpoint = checkpoint
        self.storage = storage
        self.compute = compute
        self.video_vae = _patcher(pipeline.video_vae, mm.vae_device(), mm.vae_offload_device())
        self.audio_vae = _patcher(pipeline.audio_vae, mm.vae_device(), mm.vae_offload_device())
        self.text_encoder: comfy.model_patcher.ModelPatcher | None = None
        self.prompt_embeddings: dict[str, torch.Tensor] = {}
        self.native: comfy.model_patcher.ModelPatcher | None = None


class MovaModel:
    """The value of a MOVA_MODEL socket."""

    def __init__(self, pipeline: MovaPipeline, patchers: dict[str, comfy.model_patcher.ModelPatcher], shared: _SharedParts):
        self.pipeline = pipeline
        self.patchers = patchers
        self._shared = shared

    @property
    def root(self) -> Path:
        """The model folder or packed file."""
        return self._shared.checkpoint.path

    @property
    def load_device(self) -> torch.device:
        return self.patchers[HIGH_NOISE_EXPERT].load_device

    @property
    def compute_dtype(self) -> torch.dtype:
        """Activation dtype of the DiTs (the video VAE's, chosen for its own device, is ``pipeline.video_vae.dtype``)."""
        return self._shared.compute

    @property
    def text_dim(self) -> int:
        return self.pipeline.experts[HIGH_NOISE_EXPERT].config.text_dim

    def clone(self) -> "MovaModel":
        """A MovaModel with its own DiT patch lists (for LoRAs), sharing weights and everything else."""
        return MovaModel(self.pipeline, {name: patcher.clone() for name, patcher in self.patchers.items()}, self._shared)

    def load_expert(self, expert: str, memory_required: int) -> None:
        """Bring ``expert`` and the audio tower onto the device (ComfyUI offloads or streams the rest)."""
        if self._shared.native is not None:
            unload_loaded({self._shared.native.model})
        mm.load_models_gpu([self.patchers[expert], self.patchers[AUDIO_PATCHER]], memory_required=memory_required)

    def native_model(self, boundary_ratio: float | None = None) -> comfy.model_patcher.ModelPatcher:
        """The same networks as a native MODEL (:mod:`.native_model`) carrying this model's LoRA patches;
        ``boundary_ratio`` (None = the checkpoint's) places the expert switch. MOVA_MODEL's patchers and the
        MODEL share the weights, so each unloads the other before it loads (a LoRA is never applied twice)."""
        shared = self._shared
        if shared.native is None:
            shared.native = _native_patcher(self)
        patcher = shared.native.clone()
        for name, component in self.patchers.items():
            prefix = "diffusion_model." if name == AUDIO_PATCHER else f"diffusion_model.{name}."
            for key, patches in component.patches.items():
                patcher.patches[prefix + key.removeprefix("diffusion_model.")] = patches[:]
        if any(component.patches for component in self.patchers.values()):
            patcher.patches_uuid = uuid.uuid4()
        if boundary_ratio is not None:
            options = patcher.model_options.setdefault("transformer_options", {})
            options[BOUNDARY_OPTION] = self.pipeline.scheduler.boundary_timestep(boundary_ratio)
        return patcher

    def load_video_vae(self, memory_required: int = 0) -> None:
        mm.load_models_gpu([self._shared.video_vae], memory_required=memory_required)

    def load_audio_vae(self, memory_required: int = 0) -> None:
        mm.load_models_gpu([self._shared.audio_vae], memory_required=memory_required)

    def text_encoder(self) -> TextEncoder:
        """The checkpoint's umT5 (read on first use), loaded onto the text-encoder device."""
        shared = self._shared
        if shared.text_encoder is None:
            storage = torch.bfloat16 if shared.storage == torch.float16 else shared.storage
            device = mm.text_encoder_device()
            ops = operations(storage, compute_dtype(storage, device), device)
            try:
                self.pipeline.text_encoder = shared.checkpoint.load_text_encoder(
                    dtype=storage, device=mm.text_encoder_offload_device(), operations=ops)
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"mova_model: {error}, so MOVA's own umT5 cannot encode prompts (MOVA Text Encode, or the "
                    "sampler's default negative prompt). Encode prompts with CLIPLoader(type='wan') + CLIPTextEncode "
                    "and connect them to the sampler's positive and negative inputs, or use a checkpoint that "
                    "includes the text encoder.") from None
            self.pipeline.text_encoder.compute_device = device  # where its patcher loads it
            shared.text_encoder = _patcher(self.pipeline.text_encoder.model, device, mm.text_encoder_offload_device())
        mm.load_models_gpu([shared.text_encoder])
        return self.pipeline.text_encoder

    @property
    def residency(self) -> "ComfyResidency":
        """This model's networks placed by ComfyUI for the core's generation stages."""
        return ComfyResidency(self)

    def default_negative(self, prompt: str) -> torch.Tensor:
        """float32 embeddings of ``prompt`` on the CPU, encoded once per model (the official negative
        prompt would otherwise bring umT5 back onto the GPU at every run)."""
        cache = self._shared.prompt_embeddings
        if prompt not in cache:
            cache[prompt] = self.text_encoder().encode(prompt).float().cpu()
        return cache[prompt]


def unload_loaded(models: set[torch.nn.Module]) -> None:
    """Unload every loaded ModelPatcher (clones included) whose model is one of ``models``."""
    for index in reversed(range(len(mm.current_loaded_models))):
        loaded = mm.current_loaded_models[index]
        if loaded.model is not None and loaded.model.model in models:
            mm.current_loaded_models.pop(index).model_unload()


class NativePatcher(getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)):
    """The native MODEL's patcher: lists for loading only the experts in :attr:`resident` (None = all), as
    :mod:`.expert_residency` plans per sampling run, and loads the other expert when the run reaches it."""

    resident: frozenset[str] | None = None

    def clone(self) -> "NativePatcher":
        patcher = super().clone()
        patcher.resident = self.resident
        return patcher

    def _load_list(self, *args: Any, **kwargs: Any) -> list:
        skipped = skipped_prefixes(self.resident, self.model.diffusion_model.experts)
        # entries end with (name, module, params): 0.3.64 puts the memory size before them, 0.9 two sizes
        return [entry for entry in super()._load_list(*args, **kwargs) if not entry[-3].startswith(skipped)]

    def plan_residency(self, sigmas: torch.Tensor) -> None:
        """Set :attr:`resident` for a run over ``sigmas`` (before it loads)."""
        networks = self.model.diffusion_model
        options = self.model_options.get("transformer_options", {})
        model_sampling = self.get_model_object("model_sampling")
        needed = experts_needed((float(model_sampling.timestep(sigma)) for sigma in sigmas[:-1]),
                                lambda timestep: networks.expert(timestep, options))
        sizes = {name: mm.module_size(expert) for name, expert in networks.experts.items()}
        free = None if mm.is_device_cpu(self.load_device) else mm.get_free_memory(self.load_device) + self.loaded_size()
        self.resident = resident_experts(needed, sizes, self.model_size() - sum(sizes.values()), free)

    def load_expert(self, expert: str, input_shape: tuple[int, ...]) -> None:
        """Unload, then load again with ``expert`` as the resident one (LoRA patches are re-applied to it)."""
        unload_loaded({self.model})
        self.resident = frozenset({expert})
        mm.load_models_gpu([self], memory_required=self.model.memory_required(input_shape))


def _views_and_residency(own_models: set[torch.nn.Module]) -> Callable[..., Any]:
    """OUTER_SAMPLE wrapper: unload MOVA_MODEL's patchers of the same weights, plan the experts' residency."""

    def wrapper(executor: Any, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
                *args: Any, **kwargs: Any) -> Any:
        unload_loaded(own_models)
        patcher = executor.class_obj.model_patcher
        if isinstance(patcher, NativePatcher):
            patcher.plan_residency(sigmas)
        return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)

    return wrapper


def _expert_loading(executor: Any, x: torch.Tensor, t: torch.Tensor, c_concat: Any, c_crossattn: Any, control: Any,
                    transformer_options: dict[str, Any], **conds: Any) -> torch.Tensor:
    """APPLY_MODEL wrapper: load the expert this call needs when the run's residency left it out."""
    base = executor.class_obj
    patcher = base.current_patcher
    if isinstance(patcher, NativePatcher) and patcher.resident is not None:
        expert = base.diffusion_model.pass_expert(float(base.model_sampling.timestep(t[0])),
                                                  conds.get("mova_kept", (False, False)), transformer_options)
        if expert not in patcher.resident:
            patcher.load_expert(expert, tuple(x.shape))
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **conds)


def _native_patcher(model: MovaModel) -> comfy.model_patcher.ModelPatcher:
    pipeline, patcher = model.pipeline, model.patchers[HIGH_NOISE_EXPERT]
    storage, compute = model._shared.storage, model.compute_dtype
    networks = NativeNetworks(pipeline.experts[HIGH_NOISE_EXPERT], pipeline.experts[LOW_NOISE_EXPERT],
                            pipeline.audio_dit, pipeline.bridge,
                            pipeline.scheduler.boundary_timestep(pipeline.model_index.boundary_ratio))
    config = MovaModelConfig(pipeline.scheduler.config.shift, None if storage == compute else compute)
    video_dim, z = pipeline.experts[HIGH_NOISE_EXPERT].config.dim, pipeline.video_vae.config.z_dim
    base = MovaBaseModel(config, networks, pipeline.scheduler, video_dim / z * _bytes_per_width(model),
                         device=patcher.offload_device)
    native = NativePatcher(base, load_device=patcher.load_device, offload_device=patcher.offload_device)
    wrappers = comfy.patcher_extension.WrappersMP
    native.add_wrapper_with_key(wrappers.OUTER_SAMPLE, "mova", _views_and_residency(
        {component.model for component in model.patchers.values()}))
    native.add_wrapper_with_key(wrappers.OUTER_SAMPLE, "mova_noise_mask", noise_mask_check)
    native.add_wrapper_with_key(wrappers.APPLY_MODEL, "mova", _expert_loading)
    return native


def load_mova_model(path: Path, weight_dtype: str, attention: str, *, compile: bool = False) -> MovaModel:
    """Read an official MOVA folder or a packed MOVA file into patchers (weights land on ComfyUI's offload device).

    ``compile``: ``torch.compile`` the DiT blocks and Bridge layers (:mod:`mova_core.compile`), tolerating graph
    breaks: ``comfy.ops`` layers that stream weights in low-VRAM mode may break the graph."""
    checkpoint = open_checkpoint(path)
    storage = STORAGE_DTYPES[weight_dtype]
    load_device, offload = mm.get_torch_device(), mm.unet_offload_device()
    compute = compute_dtype(storage, load_device)
    dit_args = dict(dtype=storage, device=offload, operations=operations(storage, compute, load_device),
                    attention_backend=attention)
    towers = {name: load_dit(checkpoint.component(name), **dit_args)
              for name in (HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, "audio_dit")}
    for tower in towers.values():
        tower.compute_dtype_override = compute
    vae_storage = torch.bfloat16 if storage == torch.float8_e4m3fn else storage
    vae_device = mm.vae_device()
    vae_compute = compute_dtype(vae_storage, vae_device)
    vae_args = dict(dtype=vae_storage, device=mm.vae_offload_device(),
                    operations=operations(vae_storage, vae_compute, vae_device))
    video_vae = load_video_vae(checkpoint.component("video_vae"), compute_dtype=vae_compute, **vae_args)
    audio_vae = load_audio_vae(checkpoint.component("audio_vae"), **vae_args)
    video_vae.compute_device = audio_vae.compute_device = vae_device  # where their patchers load them
    pipeline = MovaPipeline(
        video_dit=towers[HIGH_NOISE_EXPERT], video_dit_2=towers[LOW_NOISE_EXPERT], audio_dit=towers["audio_dit"],
        bridge=load_bridge(checkpoint.component("dual_tower_bridge"), **dit_args),
        video_vae=video_vae,
        audio_vae=audio_vae,
        text_encoder=None,  # read on first use: many workflows encode with CLIPLoader instead
        scheduler=FlowMatchPairScheduler(checkpoint.scheduler_config()),
        model_index=checkpoint.model_index(),
        device=load_device,
    )
    if compile:
        compile_blocks([*pipeline.experts.values(), pipeline.audio_dit, pipeline.bridge], fullgraph=False)
    video_format = comfy.latent_formats.Wan21()
    patchers = {
        HIGH_NOISE_EXPERT: _patcher(pipeline.experts[HIGH_NOISE_EXPERT], load_device, offload, video_format),
        LOW_NOISE_EXPERT: _patcher(pipeline.experts[LOW_NOISE_EXPERT], load_device, offload, video_format),
        AUDIO_PATCHER: _patcher(AudioTower(pipeline.audio_dit, pipeline.bridge), load_device, offload),
    }
    return MovaModel(pipeline, patchers, _SharedParts(checkpoint, pipeline, storage, compute))


# Peak activation bytes per output pixel of the Wan 2.1 VAE in a 2-byte dtype, measured on CPU with the
# real shapes: about 10,900 for decode and 8,200 for encode; doubled for float32.
_VAE_BYTES_PER_PIXEL_16BIT = 11_000


class ComfyResidency:
    """mova_core's :class:`~mova_core.residency.Residency` answered with ComfyUI's ``load_models_gpu``: the
    memory each stage asks to keep free comes from the shapes it is about to run."""

    def __init__(self, model: MovaModel):
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.load_device

    def text_encoder(self) -> None:
        self.model.text_encoder()

    def video_vae(self, height: int, width: int) -> None:
        dtype_bytes = torch.finfo(self.model.pipeline.video_vae.dtype).bits // 8
        self.model.load_video_vae(height * width * _VAE_BYTES_PER_PIXEL_16BIT * dtype_bytes // 2)

    def audio_vae(self) -> None:
        self.model.load_audio_vae()

    def denoiser(self, expert: str, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> None:
        self.model.load_expert(expert, activation_memory(self.model, video_shape, audio_shape))


def activation_memory(model: MovaModel, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> int:
    """Bytes to keep free for one joint model pass (ComfyUI's DiT heuristic: latent area x width)."""
    pipeline = model.pipeline
    video_dim = pipeline.experts[HIGH_NOISE_EXPERT].config.dim
    audio_dim = pipeline.audio_dit.config.dim
    video_area = video_shape[0] * int(torch.Size(video_shape[2:]).numel())
    audio_area = audio_shape[0] * int(torch.Size(audio_shape[2:]).numel())
    return int((video_area * video_dim + audio_area * audio_dim) * _bytes_per_width(model))


def _bytes_per_width(model: MovaModel) -> float:
    """Activation bytes per latent position and unit of model width."""
    return torch.finfo(model.compute_dtype).bits // 8 * 0.01 * 1024 * 1024 / 2222
