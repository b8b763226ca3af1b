"""MOVA generation in stages that every front end calls: prompt (+ first frame) -> video frames and audio.

:class:`MovaPipeline` loads an official MOVA folder and reproduces the official ``MOVA.__call__``:
umT5 prompt embeddings, the I2V condition, noise (video first, then audio), the two-expert flow
matching loop with text CFG (and optional bridge CFG), then the Wan 2.1 and DAC decoders. The stages
:meth:`~MovaPipeline.prepare` (every check, before any model runs), :meth:`~MovaPipeline.sample` and
the decoders are what :meth:`~MovaPipeline.generate`, the command line and the ComfyUI nodes call;
where the networks sit while a stage runs is a :class:`~mova_core.residency.Residency`.
Beyond the released ``__call__``: a last frame (the official ``prepare_latents`` ``last_image``
path) and re-generation from given latents with a denoising strength (the official scheduler's
``denoising_strength``).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .audio_vae import DAC, load_audio_vae
from .bridge import DualTowerBridge, load_bridge
from .checkpoint import open_checkpoint
from .compile import compile_blocks
from .conditioning import ImageInput, image_condition, prepare_reference_image
from .config import ModelIndex
from .dit import DiTTower, load_dit
from .joint import JointConstants, conditioned_forward
from .long_clip import generate_long
from .lora import AppliedLoras, LoraFile, LoraStack, LoraStrengths, load_lora
from .media import LoudnessTarget, write_mp4
from .media.audio_input import AudioInput, fit_audio, frames_covering, load_audio
from .offload import ModelPlacement
from .residency import PlacedResidency, Residency
from .sampler import AUDIO_TOWER_MODULES, HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, Guidance, Start, StepInfo, VelocityModel, sample
from .scheduler import FlowMatchPairScheduler
from .step_cache import PassStats, StepCache
from .settings import DEFAULTS, GenerationSettings, ModelGeometry, check_settings, size_multiples
from .text_encoder import TextEncoder
from .video_vae import VideoVAE, frames_from_pixels, load_video_vae

# Negative prompt of the official ``scripts/inference_single.py`` (the ``__call__`` default is "").
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指"
)


PROMPT_CACHE_SIZE = 4
"""How many prompts' embeddings a pipeline keeps (see :meth:`MovaPipeline.encode_prompt`)."""

DEFAULT_NEGATIVE_PROMPT = OFFICIAL_NEGATIVE_PROMPT
"""The negative prompt every front end uses when none is given (the official script's)."""

@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """Advanced ``generate`` settings (passed as keyword ``**options``)."""

    video_shift: float | None = None  # per-modality sigma shift; None = the scheduler's (official)
    audio_shift: float | None = None
    boundary_ratio: float | None = None  # expert switch; None = model_index.json
    decode_tile_size: int | None = None  # latent tile size for a memory-bounded video decode
    check_cancelled: Callable[[], None] | None = None  # called before every model pass; raise to stop
    last_image: ImageInput | None = None  # first + last frame: the clip ends on this picture (needs image)
    lead_frames: torch.Tensor | None = None  # continue a clip: its last frames [O, H, W, 3] in 0..1 open this one
    lead_audio: AudioInput | None = None  # ... and its last sound, kept (in latent space) under this clip's start
    video_init: torch.Tensor | None = None  # re-generation: raw Wan 2.1 video latents [1, z, T, h, w] ...
    audio_init: torch.Tensor | None = None  # ... and audio latents [1, Ca, La] to start from
    denoising_strength: float = 1.0  # < 1: start part-way from video_init/audio_init; 1 = from noise
    audio: AudioInput | None = None  # audio-driven: a file, (waveform, sample_rate) or a ComfyUI AUDIO
    audio_mode: str = "freeze"  # "freeze": held clean at timestep 0; "strength": noised to audio_strength
    audio_strength: float | None = None  # audio's own denoising strength (None = denoising_strength)
    video: torch.Tensor | None = None  # video-driven audio: frames float [F, H, W, 3] in 0..1 (or uint8)
    video_mode: str = "freeze"
    video_strength: float | None = None
    residency: Residency | None = None  # where the networks sit per stage (None: the pipeline's own)
    batch_guidance: bool = False  # the text-CFG passes as one batch of two (same numbers to float rounding)
    cache_threshold: float = 0.0  # step cache (mova_core.step_cache): 0 = off (exact); e.g. 0.05 skips passes


@dataclasses.dataclass
class Generation:
    """A generated clip: ``video`` float32 [F, H, W, 3] in 0..1, ``audio`` float32 [channels, samples].

    ``video_latents`` (raw Wan 2.1 latents, as ComfyUI LATENTs hold them) and ``audio_latents`` are what
    was decoded: pass them as ``video_init``/``audio_init`` to re-generate the clip with a
    ``denoising_strength`` below 1.
    """

    video: torch.Tensor
    audio: torch.Tensor
    sample_rate: int
    fps: float
    seed: int | None
    video_latents: torch.Tensor | None = None
    audio_latents: torch.Tensor | None = None
    stats: PassStats | None = None  # model passes computed and reused from the step cache

    def save(self, path: str | Path, *, loudness: LoudnessTarget | None = None, overwrite: bool = False) -> Path:
        """Write an .mp4 (H.264 + AAC); never overwrites unless asked. Returns the final path."""
        return write_mp4(path, self.video, self.audio, fps=self.fps, sample_rate=self.sample_rate,
                         loudness=loudness, overwrite=overwrite)


@dataclasses.dataclass(frozen=True)
class Driving:
    """What :meth:`MovaPipeline.drive` settled: the settings (frame count, strengths), the start latents, and the
    given frames and sound fitted to the clip (returned as they are where they were frozen)."""

    settings: GenerationSettings
    video_init: torch.Tensor | None = None
    audio_init: torch.Tensor | None = None
    video: torch.Tensor | None = None
    audio: torch.Tensor | None = None

    def kept(self, modality: str) -> torch.Tensor | None:
        """The given signal of ``"video"``/``"audio"`` when it was frozen (the clip's own), else None."""
        given = self.video if modality == "video" else self.audio
        return given if given is not None and self.settings.strength(modality) == 0.0 else None


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A checked run (:meth:`MovaPipeline.prepare`): settings with the seed drawn, latent shapes, guidance,
    noise (float32, CPU) and the conditioning inputs, ready for :meth:`MovaPipeline.sample`."""

    settings: GenerationSettings
    guidance: Guidance
    video_shape: tuple[int, ...]
    audio_shape: tuple[int, ...]
    num_samples: int
    boundary_timestep: float
    video_noise: torch.Tensor
    audio_noise: torch.Tensor
    image: torch.Tensor
    last_image: torch.Tensor | None = None
    lead_frames: torch.Tensor | None = None
    lead_audio: torch.Tensor | None = None
    lead_audio_mask: torch.Tensor | None = None
    video_init: torch.Tensor | None = None
    audio_init: torch.Tensor | None = None

    @property
    def needs_negative(self) -> bool:
        """Whether the guidance runs negative-prompt passes (text or bridge CFG)."""
        return len(self.guidance.passes) > 1

    @property
    def unchanged(self) -> bool:
        """Both strengths 0: the given latents are the result, no model runs."""
        return self.settings.strength("video") == self.settings.strength("audio") == 0.0


def velocity_model(experts: Mapping[str, DiTTower], audio_dit: DiTTower, bridge_module: DualTowerBridge | None,
                   condition: torch.Tensor, fps: float) -> VelocityModel:
    """The sampler's model: the named expert + audio DiT + bridge on ``[noisy latents ‖ condition]``. What stays
    constant during the generation (prompt keys/values, RoPE tables) is computed once (:class:`JointConstants`)."""
    constants = JointConstants()

    def velocity(expert: str, video_latents: torch.Tensor, audio_latents: torch.Tensor, context: Any,
                 video_timestep: torch.Tensor, audio_timestep: torch.Tensor, *, bridge: bool):
        return conditioned_forward(experts[expert], audio_dit, bridge_module, video_latents, audio_latents, condition,
                                   context, video_timestep, audio_timestep, fps, bridge_enabled=bridge,
                                   constants=constants)

    return velocity


def _resident(model: VelocityModel, residency: Residency, video_shape: tuple[int, ...],
              audio_shape: tuple[int, ...]) -> VelocityModel:
    """``model`` that asks ``residency`` for the expert it is given whenever the expert changes."""
    current: list[str] = []

    def velocity(expert: str, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if current != [expert]:
            residency.denoiser(expert, video_shape, audio_shape)
            current[:] = [expert]
        return model(expert, *args, **kwargs)

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
        self._prompt_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.scheduler = scheduler
        self.model_index = model_index
        self.device = torch.device(device)
        networks = {**self.experts, "audio_dit": audio_dit, "dual_tower_bridge": bridge, "video_vae": video_vae,
                    "audio_vae": audio_vae}
        if text_encoder is not None:  # None: prompts come as embeddings (an adapter may load it on demand)
            networks["text_encoder"] = text_encoder.model
        self.residency = PlacedResidency(self.device, ModelPlacement(networks, self.device) if offload else None)
        """Where the stages put the networks when no other :class:`Residency` is given (ComfyUI gives its own)."""

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                        *, attention_backend: str = "sdpa", offload: bool = False,
                        compile: bool = False) -> "MovaPipeline":
        """Load an official MOVA folder (``model_index.json`` and one sub-folder per component) or a
        packed single-file MOVA (:mod:`mova_core.packed`; one packed without the text encoder loads
        with ``text_encoder=None``, so prompts must come as embeddings).

        ``dtype`` is the weight dtype of the DiTs, bridge and text encoder (float8_e4m3fn: stored in
        fp8, computed in bf16); the VAEs use ``dtype`` too, except that fp8 keeps them in bf16.
        ``offload=True`` keeps the weights in host memory and moves only the networks in use to
        ``device`` (text encoder, then the active expert with the audio DiT and Bridge, then the VAEs).
        ``compile=True``: ``torch.compile`` every DiT block and Bridge layer (:mod:`mova_core.compile`; compiled
        on the first step, and again for another clip size).
        """
        checkpoint = open_checkpoint(path)
        load_device = "cpu" if offload else device
        index = checkpoint.model_index()
        vae_dtype = torch.bfloat16 if dtype == torch.float8_e4m3fn else dtype
        dit_args = dict(dtype=dtype, device=load_device, attention_backend=attention_backend)
        pipeline = cls(
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
        if compile:
            compile_blocks([*pipeline.experts.values(), pipeline.audio_dit, pipeline.bridge])
        return pipeline

    # -- LoRA -----------------------------------------------------------------------------------

    def add_lora(self, lora: str | Path | LoraFile, strengths: LoraStrengths = LoraStrengths(), *,
                 merge: bool = False) -> AppliedLoras:
        """Apply a LoRA (a file or official folder in any supported spelling, or a loaded :class:`LoraFile`) to
        the video experts, the audio DiT and the Bridge with per-component ``strengths``; LoRAs added one after
        another stack. The returned handle's ``remove()`` (or ``with`` exit) restores the base model exactly.
        ``merge=True`` adds the deltas into the weights (faster steps, one weight copy per adapted layer)."""
        modules = {**self.experts, AUDIO_TOWER_MODULES[0]: self.audio_dit, AUDIO_TOWER_MODULES[1]: self.bridge}
        if not isinstance(lora, LoraFile):
            lora = load_lora(lora, modules)
        return LoraStack().add(lora, strengths).apply(modules, merge=merge)

    # -- geometry -------------------------------------------------------------------------------

    @property
    def geometry(self) -> ModelGeometry:
        """What this model fixes about valid clips (size multiples, frame factor)."""
        vae = self.video_vae.config
        return ModelGeometry(size_multiples(self.experts[HIGH_NOISE_EXPERT].config.patch_size, vae.spatial_factor),
                            vae.temporal_factor)

    def audio_num_samples(self, num_frames: int, fps: float) -> int:
        return int(self.audio_vae.sample_rate * num_frames / fps)

    def latent_shapes(self, height: int, width: int, num_frames: int, fps: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the video ``[1, z, T, h, w]`` and audio ``[1, Ca, La]`` noise."""
        frames, h, w = self.video_vae.config.latent_shape(num_frames, height, width)
        audio_len = (self.audio_num_samples(num_frames, fps) - 1) // self.audio_vae.hop_length + 1
        return (1, self.video_vae.config.z_dim, frames, h, w), (1, self.audio_vae.latent_dim, audio_len)

    # -- stages ---------------------------------------------------------------------------------

    def prepare(self, settings: GenerationSettings, *, image: ImageInput | None = None, last_image: ImageInput | None = None,
                lead_frames: torch.Tensor | None = None, lead_audio: torch.Tensor | None = None,
                video_init: torch.Tensor | None = None, audio_init: torch.Tensor | None = None,
                video_noise: torch.Tensor | None = None, audio_noise: torch.Tensor | None = None,
                names: Mapping[str, str] | None = None) -> PreparedRun:
        """Stage 1: check everything and fix what the run needs, before any model runs.

        ``image=None`` is T2VA (a white first frame, the official recipe); ``last_image`` ends the clip on
        that picture. ``video_init`` (raw Wan 2.1 latents) and ``audio_init`` are re-generated when
        ``settings.denoising_strength`` < 1. ``video_noise``/``audio_noise`` replace the seeded draws.
        ``names`` maps argument names to a front end's input names in errors (e.g. ``num_frames`` ->
        ``frames``). Raises ``ValueError`` naming the argument and the fix.
        """
        name = lambda argument: (names or {}).get(argument, argument)  # noqa: E731
        check_settings(settings, self.geometry, names=names)
        self.scheduler.check_shifts(settings.video_shift, settings.audio_shift)
        if last_image is not None and image is None:
            raise ValueError(f"{name('last_image')} needs {name('image')} (the first frame): MOVA always conditions "
                             f"on a first frame; give {name('image')} too, or leave {name('last_image')} out.")
        if last_image is not None and settings.num_frames < 2:
            raise ValueError(f"{name('last_image')} needs a clip of more than one frame; "
                             f"{name('num_frames')}={settings.num_frames}, use "
                             f"{self.geometry.temporal_factor + 1} or more.")
        video_shape, audio_shape = self.latent_shapes(settings.height, settings.width, settings.num_frames,
                                                      settings.fps)
        clip = (f"height={settings.height}, width={settings.width}, {name('num_frames')}={settings.num_frames}, "
                f"fps={settings.fps:g}")
        inits = _init_latents(settings, {"video": video_init, "audio": audio_init},
                              {"video": video_shape, "audio": audio_shape}, clip, name)
        if settings.seed is None:
            settings = dataclasses.replace(settings, seed=random.randrange(2**63))
        drawn = (None, None) if video_noise is not None and audio_noise is not None else seeded_noise(
            settings.seed, video_shape, audio_shape)
        noise = [drawn[i] if given is None else given for i, given in enumerate((video_noise, audio_noise))]
        for argument, tensor, shape in (("video_noise", noise[0], video_shape), ("audio_noise", noise[1], audio_shape)):
            _check_shape(name(argument), tensor, shape, clip)
        boundary = self.model_index.boundary_ratio if settings.boundary_ratio is None else settings.boundary_ratio
        return PreparedRun(
            settings=settings, guidance=Guidance(text_cfg=settings.text_cfg, bridge_cfg=settings.bridge_cfg),
            video_shape=video_shape, audio_shape=audio_shape,
            num_samples=self.audio_num_samples(settings.num_frames, settings.fps),
            boundary_timestep=self.scheduler.boundary_timestep(boundary),
            video_noise=noise[0].float(), audio_noise=noise[1].float(),
            image=prepare_reference_image(image, settings.height, settings.width, name=name("image")),
            last_image=None if last_image is None else prepare_reference_image(
                last_image, settings.height, settings.width, name=name("last_image")),
            lead_frames=None if lead_frames is None else _lead_frames(lead_frames, settings),
            lead_audio=None if lead_audio is None else _padded(lead_audio, audio_shape, name("lead_audio")),
            lead_audio_mask=None if lead_audio is None else _lead_mask(lead_audio, audio_shape),
            video_init=inits[0], audio_init=inits[1])

    def sample(self, run: PreparedRun, positive: torch.Tensor, negative: torch.Tensor | None = None, *,
               residency: Residency | None = None, callback: Callable[[StepInfo], None] | None = None,
               check_cancelled: Callable[[], None] | None = None,
               batch_guidance: bool = False, cache_threshold: float = 0.0,
               stats: PassStats | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2: the I2V condition and the denoising loop -> raw Wan 2.1 video latents ``[1, z, T, h, w]`` and
        audio latents ``[1, Ca, La]`` (float32, on the residency's device).

        ``positive``/``negative``: prompt embeddings ``[1, L, text_dim]`` (``negative`` only when
        ``run.needs_negative``). ``check_cancelled`` is called before every model pass and stops by raising.
        ``batch_guidance``: the positive and negative passes run as one batch (more memory, fewer calls).
        ``cache_threshold`` > 0: reuse passes by the step cache rule (:mod:`mova_core.step_cache`); ``stats`` counts them.
        """
        if run.unchanged:
            return run.video_init, run.audio_init
        if run.needs_negative and negative is None:
            raise ValueError("this guidance runs negative-prompt passes (text_cfg or bridge_cfg != 1): give a "
                             "negative prompt embedding.")
        residency = residency or self.residency
        s = run.settings
        condition = self.condition(run, residency=residency)
        device = residency.device
        model = StepCache(_resident(velocity_model(self.experts, self.audio_dit, self.bridge, condition.to(device),
                                                   s.fps), residency, run.video_shape, run.audio_shape),
                          cache_threshold, s.steps, stats)
        to_device = lambda tensor: None if tensor is None else tensor.float().to(device)  # noqa: E731
        video_init = None if run.video_init is None else self.video_vae.normalize(run.video_init.float())
        video, audio = sample(
            model, self.scheduler, to_device(run.video_noise), to_device(run.audio_noise), to_device(positive),
            to_device(negative) if run.needs_negative else None,
            steps=s.steps, boundary_timestep=run.boundary_timestep, guidance=run.guidance,
            video_shift=s.video_shift, audio_shift=s.audio_shift,
            video=Start(to_device(video_init), s.strength("video")), audio=Start(to_device(run.audio_init),
                                                                               s.strength("audio"),
                                                                               run.lead_audio, run.lead_audio_mask),
            callback=callback, check_cancelled=check_cancelled, batch_guidance=batch_guidance,
        )
        return self.video_vae.denormalize(video), audio

    def condition(self, run: PreparedRun, *, residency: Residency | None = None) -> torch.Tensor:
        """The run's I2V condition float32 ``[1, t + z, T, h, w]`` (first frame, last frame, known lead frames;
        :func:`~mova_core.conditioning.image_condition`), encoded with the video VAE."""
        (residency or self.residency).video_vae(run.settings.height, run.settings.width)
        return image_condition(self.video_vae, run.image, run.settings.num_frames, last_image=run.last_image,
                               lead_frames=run.lead_frames)

    def decode_video(self, latents: torch.Tensor, *, tile_size: int | None = None, tile_overlap: int | None = None,
                     residency: Residency | None = None, output_device: torch.device | str = "cpu") -> torch.Tensor:
        """Stage 3: raw Wan 2.1 video latents ``[1, z, T, h, w]`` -> frames float32 ``[F, H, W, 3]`` in 0..1.

        ``tile_size``/``tile_overlap`` (latent pixels): a spatially tiled decode with bounded memory."""
        vae = self.video_vae
        factor = vae.config.spatial_factor
        height, width = (side * factor for side in latents.shape[-2:])
        if tile_size is not None:
            height, width = min(height, tile_size * factor), min(width, tile_size * factor)
        (residency or self.residency).video_vae(height, width)
        tiling = {} if tile_size is None else {"tile_size": tile_size, **(
            {} if tile_overlap is None else {"tile_overlap": tile_overlap})}
        pixels = vae.decode(latents.to(device=vae.device, dtype=vae.dtype), **tiling)
        return frames_from_pixels(pixels, torch.device(output_device))

    def decode_audio(self, latents: torch.Tensor, num_samples: int | None = None, *,
                     residency: Residency | None = None) -> torch.Tensor:
        """Stage 3: audio latents ``[1, Ca, La]`` -> waveform float32 ``[channels, samples]`` on the CPU, trimmed
        to ``num_samples`` (the clip's length) when given."""
        (residency or self.residency).audio_vae()
        waveform = self.audio_vae.decode(latents.float().to(self.audio_vae.device))[0].float().cpu()
        return waveform if num_samples is None else waveform[:, :num_samples]

    # -- whole runs -----------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, *, residency: Residency | None = None) -> torch.Tensor:
        """umT5 embeddings ``[1, 512, text_dim]`` of ``prompt``. The last :data:`PROMPT_CACHE_SIZE` prompts are kept
        (a few MiB each), so the windows of a long clip and re-rolled seeds encode (and place umT5) only once."""
        if prompt in self._prompt_cache:
            self._prompt_cache.move_to_end(prompt)
            return self._prompt_cache[prompt]
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text encoder (text_encoder=None, e.g. a file packed with "
                             "--no-text-encoder); load a checkpoint that includes umT5 to encode prompts.")
        (residency or self.residency).text_encoder()
        self._prompt_cache[prompt] = self.text_encoder.encode([prompt])
        while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return self._prompt_cache[prompt]

    def generate(self, prompt: str | torch.Tensor, negative_prompt: str | torch.Tensor = DEFAULT_NEGATIVE_PROMPT,
                 image: ImageInput | None = None,
                 height: int = DEFAULTS.height, width: int = DEFAULTS.width,
                 num_frames: int | None = DEFAULTS.num_frames, fps: float = DEFAULTS.fps, steps: int = DEFAULTS.steps,
                 text_cfg: float = DEFAULTS.text_cfg, bridge_cfg: float = DEFAULTS.bridge_cfg, seed: int | None = None,
                 video_noise: torch.Tensor | None = None, audio_noise: torch.Tensor | None = None,
                 callback: Callable[[StepInfo], None] | None = None, **options: Any) -> Generation:
        """Generate a clip (:meth:`drive`, :meth:`prepare`, :meth:`sample`, then the decoders); ``image=None`` is T2VA.
        Prompts are text, or umT5 embeddings ``[1, L, text_dim]`` (e.g. from ComfyUI's conditioning).

        ``video_noise``/``audio_noise`` replace the random draws; otherwise ``seed`` (random when
        None) seeds a CPU generator, so a seed means the same clip on every device.
        ``options``: see :class:`GenerationOptions` (``last_image`` for first + last frame;
        ``video_init``/``audio_init`` with ``denoising_strength`` < 1 to re-generate given latents;
        ``audio`` to drive the picture with given sound, ``video`` to give frames a soundtrack).
        ``num_frames=None`` with ``audio``: the fewest frames that cover it (with ``video``: its frames).
        """
        opts = self._options(options)
        settings = GenerationSettings(
            height=height, width=width, num_frames=num_frames, fps=fps, steps=steps, text_cfg=text_cfg,
            bridge_cfg=bridge_cfg, seed=seed, video_shift=opts.video_shift, audio_shift=opts.audio_shift,
            boundary_ratio=opts.boundary_ratio, denoising_strength=opts.denoising_strength,
            video_strength=opts.video_strength, audio_strength=opts.audio_strength)
        residency = opts.residency or self.residency
        driving = self.drive(settings, audio=opts.audio, audio_mode=opts.audio_mode, video=opts.video,
                             video_mode=opts.video_mode, video_init=opts.video_init, audio_init=opts.audio_init,
                             residency=residency)
        settings, video_init, audio_init = driving.settings, driving.video_init, driving.audio_init
        image = _first_frame(image, driving.video, opts.lead_frames)
        run = self.prepare(settings, image=image, last_image=opts.last_image, video_init=video_init,
                           audio_init=audio_init, video_noise=video_noise, audio_noise=audio_noise,
                           lead_frames=opts.lead_frames,
                           lead_audio=self._lead_audio_latents(opts.lead_audio, residency))
        positive = None if run.unchanged else self._embeddings(prompt, residency)
        negative = self._embeddings(negative_prompt, residency) if run.needs_negative and not run.unchanged else None
        video_latents, audio_latents = self.sample(run, positive, negative, residency=residency, callback=callback,
                                                   check_cancelled=opts.check_cancelled,
                                                   batch_guidance=opts.batch_guidance,
                                                   cache_threshold=opts.cache_threshold, stats=(stats := PassStats()))
        return Generation(
            video=driving.kept("video") if driving.kept("video") is not None else
            self.decode_video(video_latents, tile_size=opts.decode_tile_size, residency=residency),
            audio=driving.kept("audio") if driving.kept("audio") is not None else
            self.decode_audio(audio_latents, run.num_samples, residency=residency),
            sample_rate=self.audio_vae.sample_rate, fps=fps, seed=run.settings.seed,
            video_latents=video_latents.cpu(), audio_latents=audio_latents.cpu(), stats=stats)

    def generate_long(self, prompt: str | torch.Tensor | Sequence[str | torch.Tensor], num_frames: int | None, *, window_frames: int = DEFAULTS.num_frames,
                      overlap_frames: int = 25, fps: float = DEFAULTS.fps, seed: int | None = None,
                      callback: Callable[[StepInfo], None] | None = None,
                      check_cancelled: Callable[[], None] | None = None, **generate_options: Any) -> Generation:
        """A clip of ``num_frames`` frames (and ``int(sample_rate * num_frames / fps)`` samples) made window by
        window (:mod:`mova_core.long_clip`): each window after the first continues the previous one's last
        ``overlap_frames`` frames and keeps its audio over them; both are crossfaded over the overlap.

        ``prompt``: one for every window (text or embeddings), or a list with one per window. ``audio``: drives
        the whole clip (cut per window); ``num_frames=None`` then makes the clip as long as the audio. ``image``
        opens the first window, ``last_image`` closes the last. ``seed`` + k seeds window k. ``callback`` counts
        steps over the whole clip; ``check_cancelled`` also runs between windows. Other options as for
        :meth:`generate`.
        """
        return generate_long(self, prompt, num_frames, window_frames=window_frames, overlap_frames=overlap_frames,
                             fps=fps, seed=seed, callback=callback, check_cancelled=check_cancelled,
                             **generate_options)

    def _embeddings(self, prompt: str | torch.Tensor, residency: Residency) -> torch.Tensor:
        """A prompt's umT5 embeddings: encoded from text, or given (``[1, L, text_dim]``, e.g. ComfyUI conditioning)."""
        return prompt if isinstance(prompt, torch.Tensor) else self.encode_prompt(prompt, residency=residency)

    def _lead_audio_latents(self, audio: AudioInput | None, residency: Residency) -> torch.Tensor | None:
        """The whole latent frames of the audio a clip continues (a partly covered last frame is left free)."""
        if audio is None:
            return None
        waveform = load_audio(audio, self.audio_vae.sample_rate)
        whole = waveform.shape[1] // self.audio_vae.hop_length
        if whole == 0:
            raise ValueError(f"lead_audio: {waveform.shape[1]} samples is shorter than one audio latent frame "
                             f"({self.audio_vae.hop_length} samples); give more, or none.")
        return self.encode_audio(waveform[:, : whole * self.audio_vae.hop_length], residency=residency)

    def drive(self, settings: GenerationSettings, *, audio: AudioInput | None = None, audio_mode: str = "freeze",
              video: torch.Tensor | None = None, video_mode: str = "freeze", video_init: torch.Tensor | None = None,
              audio_init: torch.Tensor | None = None, names: Mapping[str, str] | None = None,
              residency: Residency | None = None) -> "Driving":
        """Stage 1a, for clips built around given sound or frames: load and fit them, settle ``num_frames`` (None:
        the fewest frames that cover the audio, or the frames' count) and each given modality's strength
        (``"freeze"``: 0, held as given; ``"strength"``: ``settings.audio_strength``/``video_strength``, None = 1),
        check the settings, then encode the signals into start latents. Without given signals it only checks."""
        name = lambda argument: (names or {}).get(argument, argument)  # noqa: E731
        given_audio = None if audio is None else load_audio(audio, self.audio_vae.sample_rate)
        given_video = None if video is None else _frames_input(video, settings.height, settings.width)
        settings = dataclasses.replace(
            settings, num_frames=self.frame_count(settings.num_frames, given_audio, given_video, settings.fps,
                                                   name("num_frames")),
            video_strength=_driven_strength(name("video_mode"), given_video, video_mode, settings.video_strength),
            audio_strength=_driven_strength(name("audio_mode"), given_audio, audio_mode, settings.audio_strength))
        check_settings(settings, self.geometry, names=names)  # before any network encodes the given signals
        given_audio = None if given_audio is None else fit_audio(
            given_audio, self.audio_num_samples(settings.num_frames, settings.fps))
        return Driving(
            settings=settings, video=given_video, audio=given_audio,
            video_init=_one_of("video", video_init, given_video, lambda f: self.encode_video(f, residency=residency)),
            audio_init=_one_of("audio", audio_init, given_audio, lambda w: self.encode_audio(w, residency=residency)))

    def frame_count(self, num_frames: int | None, audio: torch.Tensor | None, frames: torch.Tensor | None,
                     fps: float, name: str = "num_frames") -> int:
        """``num_frames``, or for None the given frames' count or the fewest frames that cover the given audio."""
        if num_frames is not None:
            return num_frames
        if frames is not None:
            return frames.shape[0]
        if audio is None:
            raise ValueError(f"{name} is left to the given audio, but no audio is given; set {name} (e.g. "
                             f"{DEFAULTS.num_frames}) or give the audio the clip should cover.")
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps={fps!r} must be a positive number, e.g. {DEFAULTS.fps}.")
        return frames_covering(audio.shape[1], self.audio_vae.sample_rate, fps, self.geometry.temporal_factor)

    def encode_video(self, frames: torch.Tensor, *, residency: Residency | None = None) -> torch.Tensor:
        """Frames float ``[F, H, W, 3]`` in 0..1 (F = 4k+1) -> raw Wan 2.1 video latents ``[1, z, T, h, w]``
        (the posterior mean), e.g. a ``video_init`` for re-generation."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected float [F, H, W, 3] in 0..1, got shape {tuple(frames.shape)}.")
        (residency or self.residency).video_vae(frames.shape[1], frames.shape[2])
        vae = self.video_vae
        pixels = frames.float().clamp(0, 1).permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
        return vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).float()

    def encode_audio(self, waveform: torch.Tensor, *, residency: Residency | None = None) -> torch.Tensor:
        """Waveform float ``[channels, samples]`` at the model's sample rate (channels averaged to mono)
        -> audio latents ``[1, Ca, ceil(samples / hop)]`` (the posterior mean), e.g. an ``audio_init``."""
        if waveform.ndim != 2:
            raise ValueError(f"waveform: expected float [channels, samples], got shape {tuple(waveform.shape)}.")
        (residency or self.residency).audio_vae()
        mono = waveform.float().mean(dim=0, keepdim=True).unsqueeze(0)
        return self.audio_vae.encode(mono.to(self.audio_vae.device)).float()

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _options(options: dict[str, Any]) -> GenerationOptions:
        valid = {f.name for f in dataclasses.fields(GenerationOptions)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f"unknown generate option(s) {unknown}; valid options: {sorted(valid)}.")
        return GenerationOptions(**options)


def seeded_noise(seed: int, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 noise in the official draw order (video, then audio) from a CPU generator, so a seed
    gives the same clip on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    video = torch.randn(video_shape, generator=generator, dtype=torch.float32)
    return video, torch.randn(audio_shape, generator=generator, dtype=torch.float32)


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...], clip: str) -> None:
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{name} has shape {got}, but {clip} needs {shape}; give latents of this clip's size, "
                         "or change the settings to the clip's.")


def _init_latents(settings: GenerationSettings, inits: Mapping[str, torch.Tensor | None],
                  shapes: Mapping[str, tuple[int, ...]], clip: str,
                  name: Callable[[str], str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The latents each modality starts from (float32), checked; None where its strength is 1 (from noise)."""
    needed = [modality for modality in ("video", "audio") if settings.strength(modality) < 1.0]
    missing = [modality for modality in needed if inits[modality] is None]
    if missing:
        setting = settings.strength_setting(missing[0])
        governed = [f"{name(m + '_init')}" for m in needed if settings.strength_setting(m) == setting]
        absent = [name(m + "_init") for m in missing]
        raise ValueError(
            f"{name(setting)}={getattr(settings, setting):g} re-generates given latents, but {' and '.join(absent)} "
            f"{'is' if len(absent) == 1 else 'are'} missing: give {'both ' if len(governed) > 1 else ''}"
            f"{' and '.join(governed)}, or set {name(setting)} to 1 to generate from noise.")
    for modality in needed:
        _check_shape(name(modality + "_init"), inits[modality], shapes[modality], clip)
    return tuple(inits[m].float() if m in needed else None for m in ("video", "audio"))


DRIVING_MODES = ("freeze", "strength")
"""How given audio (or video) drives a clip: held clean while the other modality is generated, or re-generated
from its noised latents with a strength (0 = kept, 1 = from noise)."""


def _driven_strength(mode_name: str, given: torch.Tensor | None, mode: str, strength: float | None) -> float | None:
    """The modality's own strength: 0 when its given signal is frozen, else ``strength``."""
    if mode not in DRIVING_MODES:
        raise ValueError(f"{mode_name}={mode!r} is not available; choose one of {list(DRIVING_MODES)}.")
    if given is None:
        return strength
    return 0.0 if mode == "freeze" else (1.0 if strength is None else strength)


def _one_of(modality: str, init: torch.Tensor | None, given: torch.Tensor | None,
            encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
    """The modality's start latents: given latents, or the given signal encoded (not both)."""
    if init is not None and given is not None:
        raise ValueError(f"give {modality} or {modality}_init, not both: {modality}_init is already encoded.")
    return init if given is None else encode(given)


def _frames_input(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Given frames as float32 ``[F, H, W, 3]`` in 0..1 (uint8 scaled), checked against the clip's size."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"video: expected frames [F, H, W, 3] (float in 0..1 or uint8), got {shape}.")
    if tuple(frames.shape[1:3]) != (height, width):
        raise ValueError(f"video: frames are {frames.shape[2]}x{frames.shape[1]}, but the clip is {width}x{height}; "
                         "set width and height to the frames' size or resize the frames.")
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float().clamp(0, 1)


def _lead_frames(frames: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """Leading frames ``[O, H, W, 3]`` in 0..1 as the condition's ``[1, 3, O, H, W]`` in [-1, 1], checked."""
    frames = _frames_input(frames, settings.height, settings.width)
    if not 1 <= frames.shape[0] < settings.num_frames:
        raise ValueError(f"lead_frames: {frames.shape[0]} frames; a clip of num_frames={settings.num_frames} can "
                         f"continue 1 to {settings.num_frames - 1} of them.")
    return frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1


def _padded(latents: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Audio latents ``[1, C, L <= La]`` zero-padded to the clip's ``shape``."""
    if latents.ndim != 3 or latents.shape[:2] != shape[:2] or latents.shape[2] > shape[2]:
        raise ValueError(f"{name}: latents of shape {tuple(latents.shape)} do not fit the clip's {shape}.")
    return torch.nn.functional.pad(latents.float(), (0, shape[2] - latents.shape[2]))


def _lead_mask(latents: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """1 on the latent frames ``latents`` covers, 0 after."""
    mask = torch.zeros(1, 1, shape[2])
    mask[..., : latents.shape[2]] = 1.0
    return mask


def _first_frame(image: ImageInput | None, video: torch.Tensor | None, lead: torch.Tensor | None) -> ImageInput | None:
    """The picture the condition starts from: ``image``, else the first given or leading frame."""
    if lead is not None:
        if image is not None:
            raise ValueError("give image or lead_frames, not both: the first leading frame is the clip's first frame.")
        return lead[0]
    return video[0] if image is None and video is not None else image
