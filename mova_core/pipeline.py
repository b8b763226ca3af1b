"""End-to-end MOVA generation without ComfyUI: prompt (+ first frame) -> video frames and audio.

:class:`MovaPipeline` loads an official MOVA folder and reproduces the official ``MOVA.__call__``:
umT5 prompt embeddings, the I2V condition, noise (video first, then audio), the two-expert flow
matching loop with text CFG (and optional bridge CFG), then the Wan 2.1 and DAC decoders.
Beyond the released ``__call__``: a last frame (the official ``prepare_latents`` ``last_image``
path) and re-generation from given latents with a denoising strength (the official scheduler's
``denoising_strength``).
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .audio_vae import DAC, load_audio_vae
from .bridge import DualTowerBridge, load_bridge
from .conditioning import ImageInput, image_condition, prepare_reference_image
from .checkpoint import open_checkpoint
from .config import ModelIndex
from .dit import DiTTower, load_dit
from .offload import ModelPlacement
from .joint import joint_forward
from .media import LoudnessTarget, write_mp4
from .sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, Guidance, StepInfo, VelocityModel, sample
from .scheduler import FlowMatchPairScheduler
from .text_encoder import TextEncoder
from .video_vae import VideoVAE, frames_from_pixels, load_video_vae

# Negative prompt of the official ``scripts/inference_single.py`` (the ``__call__`` default is "").
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指"
)


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """Advanced ``generate`` settings (passed as keyword ``**options``)."""

    video_shift: float | None = None  # per-modality sigma shift; None = the scheduler's (official)
    audio_shift: float | None = None
    boundary_ratio: float | None = None  # expert switch; None = model_index.json
    decode_tile_size: int | None = None  # latent tile size for a memory-bounded video decode
    check_cancelled: Callable[[], None] | None = None  # called before every model pass; raise to stop
    last_image: ImageInput | None = None  # first + last frame: the clip ends on this picture (needs image)
    video_init: torch.Tensor | None = None  # re-generation: normalised video latents [1, z, T, h, w] ...
    audio_init: torch.Tensor | None = None  # ... and audio latents [1, Ca, La] to start from
    denoising_strength: float = 1.0  # < 1: start part-way from video_init/audio_init; 1 = from noise


@dataclasses.dataclass
class Generation:
    """A generated clip: ``video`` float32 [F, H, W, 3] in 0..1, ``audio`` float32 [channels, samples].

    ``video_latents`` (normalised) and ``audio_latents`` are what was decoded: pass them as
    ``video_init``/``audio_init`` to re-generate the clip with a ``denoising_strength`` below 1.
    """

    video: torch.Tensor
    audio: torch.Tensor
    sample_rate: int
    fps: float
    seed: int | None
    video_latents: torch.Tensor | None = None
    audio_latents: torch.Tensor | None = None

    def save(self, path: str | Path, *, loudness: LoudnessTarget | None = None, overwrite: bool = False) -> Path:
        """Write an .mp4 (H.264 + AAC); never overwrites unless asked. Returns the final path."""
        return write_mp4(path, self.video, self.audio, fps=self.fps, sample_rate=self.sample_rate,
                         loudness=loudness, overwrite=overwrite)


def _nearest_multiple(value: int, multiple: int) -> int:
    """Nearest positive multiple; ties go down (360 -> 352, the official "360p" height)."""
    return max(multiple, math.ceil(value / multiple - 0.5) * multiple)


def size_multiples(patch_size: tuple[int, ...], vae_stride: int) -> tuple[int, int]:
    """(height, width) granularity of a video: the VAE stride times the DiT patch along that side,
    and a multiple of twice the VAE stride (16, as the official ``check_inputs`` demands)."""
    _, patch_height, patch_width = patch_size
    return vae_stride * math.lcm(2, patch_height), vae_stride * math.lcm(2, patch_width)


def check_generation_arguments(*, height: int, width: int, num_frames: int, fps: float, steps: int,
                               spatial_multiple: int | tuple[int, int], temporal_factor: int) -> None:
    """Raise ``ValueError`` naming the argument and the nearest valid value.

    ``spatial_multiple``: one multiple for both sides, or ``(height_multiple, width_multiple)``.
    """
    multiples = spatial_multiple if isinstance(spatial_multiple, tuple) else (spatial_multiple, spatial_multiple)
    for name, value, multiple in (("height", height, multiples[0]), ("width", width, multiples[1])):
        if value <= 0 or value % multiple:
            raise ValueError(f"{name}={value} must be a positive multiple of {multiple}; "
                             f"nearest valid value: {_nearest_multiple(value, multiple)}.")
    if num_frames < 1 or (num_frames - 1) % temporal_factor:
        nearest = max(1, round((num_frames - 1) / temporal_factor)) * temporal_factor + 1
        raise ValueError(f"num_frames={num_frames} must be {temporal_factor}k+1 (1, {temporal_factor + 1}, "
                         f"{2 * temporal_factor + 1}, ...); nearest valid value: {nearest}.")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps={fps} must be a positive number, e.g. 24.0.")
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1; nearest valid value: 1.")


def velocity_model(experts: Mapping[str, DiTTower], audio_dit: DiTTower, bridge_module: DualTowerBridge | None,
                   condition: torch.Tensor, fps: float) -> VelocityModel:
    """The sampler's model: the named expert + audio DiT + bridge on ``[noisy latents ‖ condition]``."""

    def velocity(expert: str, video_latents: torch.Tensor, audio_latents: torch.Tensor, context: torch.Tensor,
                 video_timestep: torch.Tensor, audio_timestep: torch.Tensor, *, bridge: bool):
        dit = experts[expert]
        dtype = dit.compute_dtype
        video_input = torch.cat([video_latents, condition.to(video_latents.device)], dim=1).to(dtype)
        return joint_forward(dit, audio_dit, bridge_module, video_input, audio_latents.to(dtype), context.to(dtype),
                             video_timestep, audio_timestep, fps, bridge_enabled=bridge)

    return velocity


class MovaPipeline:
    """The official MOVA pipeline in pure PyTorch. Build it with :meth:`from_pretrained`."""

    def __init__(self, *, video_dit: DiTTower, video_dit_2: DiTTower, audio_dit: DiTTower,
                 bridge: DualTowerBridge, video_vae: VideoVAE, audio_vae: DAC, text_encoder: TextEncoder | None,
                 scheduler: FlowMatchPairScheduler, model_index: ModelIndex, device: torch.device | str = "cpu",
                 offload: bool = False):
        self.experts = {HIGH_NOISE_EXPERT: video_dit, LOW_NOISE_EXPERT: video_dit_2}
        self.audio_dit = audio_dit
        self.bridge = bridge
        self.video_vae = video_vae
        self.audio_vae = audio_vae
        self.text_encoder = text_encoder
        self.scheduler = scheduler
        self.model_index = model_index
        self.device = torch.device(device)
        networks = {**self.experts, "audio_dit": audio_dit, "dual_tower_bridge": bridge, "video_vae": video_vae,
                    "audio_vae": audio_vae}
        if text_encoder is not None:  # None: prompts come as embeddings (an adapter may load it on demand)
            networks["text_encoder"] = text_encoder.model
        self.placement = ModelPlacement(networks, self.device) if offload else None

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                        *, attention_backend: str = "sdpa", offload: bool = False) -> "MovaPipeline":
        """Load an official MOVA folder (``model_index.json`` and one sub-folder per component) or a
        packed single-file MOVA (:mod:`mova_core.packed`; one packed without the text encoder loads
        with ``text_encoder=None``, so prompts must come as embeddings).

        ``dtype`` is the weight dtype of the DiTs, bridge and text encoder (float8_e4m3fn: stored in
        fp8, computed in bf16); the VAEs use ``dtype`` too, except that fp8 keeps them in bf16.
        ``offload=True`` keeps the weights in host memory and moves only the networks in use to
        ``device`` (text encoder, then the active expert with the audio DiT and Bridge, then the VAEs).
        """
        checkpoint = open_checkpoint(path)
        load_device = "cpu" if offload else device
        index = checkpoint.model_index()
        vae_dtype = torch.bfloat16 if dtype == torch.float8_e4m3fn else dtype
        dit_args = dict(dtype=dtype, device=load_device, attention_backend=attention_backend)
        return cls(
            video_dit=load_dit(checkpoint.component("video_dit"), **dit_args),
            video_dit_2=load_dit(checkpoint.component("video_dit_2"), **dit_args),
            audio_dit=load_dit(checkpoint.component("audio_dit"), **dit_args),
            bridge=load_bridge(checkpoint.component("dual_tower_bridge"), **dit_args),
            video_vae=load_video_vae(checkpoint.component("video_vae"), dtype=vae_dtype, device=load_device),
            audio_vae=load_audio_vae(checkpoint.component("audio_vae"), dtype=vae_dtype, device=load_device),
            text_encoder=None if checkpoint.omits_text_encoder else checkpoint.load_text_encoder(
                dtype=dtype, device=load_device),
            scheduler=FlowMatchPairScheduler(checkpoint.scheduler_config()),
            model_index=index,
            device=device,
            offload=offload,
        )

    # -- geometry -------------------------------------------------------------------------------

    @property
    def size_multiples(self) -> tuple[int, int]:
        """(height, width) granularity of this model (see :func:`size_multiples`)."""
        return size_multiples(self.experts[HIGH_NOISE_EXPERT].config.patch_size, self.video_vae.config.spatial_factor)

    def audio_num_samples(self, num_frames: int, fps: float) -> int:
        return int(self.audio_vae.sample_rate * num_frames / fps)

    def latent_shapes(self, height: int, width: int, num_frames: int, fps: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the video ``[1, z, T, h, w]`` and audio ``[1, Ca, La]`` noise."""
        frames, h, w = self.video_vae.config.latent_shape(num_frames, height, width)
        audio_len = (self.audio_num_samples(num_frames, fps) - 1) // self.audio_vae.hop_length + 1
        return (1, self.video_vae.config.z_dim, frames, h, w), (1, self.audio_vae.latent_dim, audio_len)

    # -- generation -----------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text encoder (text_encoder=None, e.g. a file packed with "
                             "--no-text-encoder); load a checkpoint that includes umT5 to encode prompts.")
        self._use("text_encoder")
        return self.text_encoder.encode([prompt])

    def generate(self, prompt: str, negative_prompt: str = "", image: ImageInput | None = None, height: int = 352,
                 width: int = 640, num_frames: int = 193, fps: float = 24.0, steps: int = 50, text_cfg: float = 5.0,
                 bridge_cfg: float = 1.0, seed: int | None = None, video_noise: torch.Tensor | None = None,
                 audio_noise: torch.Tensor | None = None, callback: Callable[[StepInfo], None] | None = None,
                 **options: Any) -> Generation:
        """Generate a clip; ``image=None`` is T2VA (white first frame, the official recipe).

        ``video_noise``/``audio_noise`` replace the random draws; otherwise ``seed`` (random when
        None) seeds a CPU generator, so a seed means the same clip on every device.
        ``options``: see :class:`GenerationOptions` (``last_image`` for first + last frame;
        ``video_init``/``audio_init`` with ``denoising_strength`` < 1 to re-generate given latents).
        """
        opts = self._options(options)
        check_generation_arguments(height=height, width=width, num_frames=num_frames, fps=fps, steps=steps,
                                   spatial_multiple=self.size_multiples,
                                   temporal_factor=self.video_vae.config.temporal_factor)
        if opts.last_image is not None and image is None:
            raise ValueError("last_image needs image (the first frame): MOVA always conditions on a first frame.")
        video_shape, audio_shape = self.latent_shapes(height, width, num_frames, fps)
        seed, video_noise, audio_noise = self._noise(seed, video_noise, audio_noise, video_shape, audio_shape)
        inits = {"video_init": opts.video_init, "audio_init": opts.audio_init}
        for (name, init), shape in zip(inits.items(), (video_shape, audio_shape)):
            if init is not None:
                _check_shape(name, init, shape)
        guidance = Guidance(text_cfg=text_cfg, bridge_cfg=bridge_cfg)
        positive = self.encode_prompt(prompt)
        negative = self.encode_prompt(negative_prompt) if len(guidance.passes) > 1 else None
        reference = prepare_reference_image(image, height, width)
        last = None if opts.last_image is None else prepare_reference_image(opts.last_image, height, width,
                                                                            name="last_image").to(self.device)
        self._use("video_vae")
        condition = image_condition(self.video_vae, reference.to(self.device), num_frames, last_image=last)
        boundary = self.model_index.boundary_ratio if opts.boundary_ratio is None else opts.boundary_ratio
        video_latents, audio_latents = sample(
            self._placed(velocity_model(self.experts, self.audio_dit, self.bridge, condition, fps)), self.scheduler, video_noise, audio_noise, positive, negative,
            steps=steps, boundary_timestep=self.scheduler.boundary_timestep(boundary), guidance=guidance,
            video_shift=opts.video_shift, audio_shift=opts.audio_shift, denoising_strength=opts.denoising_strength,
            **{name: None if init is None else init.float().to(self.device) for name, init in inits.items()},
            callback=callback, check_cancelled=opts.check_cancelled,
        )
        video = self.decode_video(video_latents, tile_size=opts.decode_tile_size)
        audio = self.decode_audio(audio_latents)[:, : self.audio_num_samples(num_frames, fps)]
        return Generation(video=video, audio=audio, sample_rate=self.audio_vae.sample_rate, fps=fps, seed=seed,
                          video_latents=video_latents.cpu(), audio_latents=audio_latents.cpu())

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames float ``[F, H, W, 3]`` in 0..1 (F = 4k+1) -> normalised video latents ``[1, z, T, h, w]``
        (the posterior mean, as the I2V condition uses), e.g. a ``video_init`` for re-generation."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected float [F, H, W, 3] in 0..1, got shape {tuple(frames.shape)}.")
        self._use("video_vae")
        vae = self.video_vae
        pixels = frames.float().clamp(0, 1).permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
        return vae.normalize(vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).float())

    def encode_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform float ``[channels, samples]`` at the model's sample rate (channels averaged to mono)
        -> audio latents ``[1, Ca, ceil(samples / hop)]`` (the posterior mean), e.g. an ``audio_init``."""
        if waveform.ndim != 2:
            raise ValueError(f"waveform: expected float [channels, samples], got shape {tuple(waveform.shape)}.")
        self._use("audio_vae")
        mono = waveform.float().mean(dim=0, keepdim=True).unsqueeze(0)
        return self.audio_vae.encode(mono.to(self.audio_vae.device)).float()

    def decode_video(self, latents: torch.Tensor, *, tile_size: int | None = None) -> torch.Tensor:
        """Normalised video latents ``[1, z, T, h, w]`` -> frames float32 ``[F, H, W, 3]`` in 0..1."""
        self._use("video_vae")
        vae = self.video_vae
        pixels = vae.decode(vae.denormalize(latents.float()).to(device=vae.device, dtype=vae.dtype), tile_size=tile_size)
        return frames_from_pixels(pixels, torch.device("cpu"))

    def decode_audio(self, latents: torch.Tensor) -> torch.Tensor:
        """Audio latents ``[1, Ca, La]`` -> waveform float32 ``[channels, La * hop]`` (not trimmed)."""
        self._use("audio_vae")
        return self.audio_vae.decode(latents.float().to(self.audio_vae.device))[0].float().cpu()

    # -- internals ------------------------------------------------------------------------------

    def _use(self, *names: str) -> None:
        if self.placement is not None:
            self.placement.use(*names)

    def _placed(self, model: VelocityModel) -> VelocityModel:
        """``model`` with the expert it is asked for (plus the audio DiT and Bridge) put on the device first."""

        def velocity(expert: str, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            self._use(expert, "audio_dit", "dual_tower_bridge")
            return model(expert, *args, **kwargs)

        return velocity

    @staticmethod
    def _options(options: dict[str, Any]) -> GenerationOptions:
        valid = {f.name for f in dataclasses.fields(GenerationOptions)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f"unknown generate option(s) {unknown}; valid options: {sorted(valid)}.")
        return GenerationOptions(**options)

    def _noise(self, seed: int | None, video_noise: torch.Tensor | None, audio_noise: torch.Tensor | None,
               video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> tuple[int | None, torch.Tensor, torch.Tensor]:
        """Given noise (shape-checked) or a CPU-generator draw: video first, then audio (official order)."""
        if video_noise is None or audio_noise is None:
            seed = random.randrange(2**63) if seed is None else seed
            drawn_video, drawn_audio = seeded_noise(seed, video_shape, audio_shape)
            video_noise = drawn_video if video_noise is None else video_noise
            audio_noise = drawn_audio if audio_noise is None else audio_noise
        for name, noise, shape in (("video_noise", video_noise, video_shape), ("audio_noise", audio_noise, audio_shape)):
            _check_shape(name, noise, shape)
        return seed, video_noise.float().to(self.device), audio_noise.float().to(self.device)


def seeded_noise(seed: int, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 noise in the official draw order (video, then audio) from a CPU generator, so a seed
    gives the same clip on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    video = torch.randn(video_shape, generator=generator, dtype=torch.float32)
    return video, torch.randn(audio_shape, generator=generator, dtype=torch.float32)


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; this size/frames/fps needs {shape}.")
