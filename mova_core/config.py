"""Configuration dataclasses read from the official MOVA ``config.json`` files.

Each ``from_dict`` reads the official diffusers-style config, ignores bookkeeping keys
(``_class_name``, ``_diffusers_version``) and raises :class:`ConfigError` for any value
this implementation cannot honour instead of silently ignoring it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T", bound="ConfigBase")


class ConfigError(ValueError):
    """A config value that this implementation cannot honour."""


DAMAGED_FILE_FIX = "the file is damaged or incomplete: download it again (or the whole MOVA folder)"


def read_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`ConfigError` naming the file and the fix when it is missing or broken."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing; download the complete MOVA folder again.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); {DAMAGED_FILE_FIX}.") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} holds a JSON {type(document).__name__}, not an object; {DAMAGED_FILE_FIX}.")
    return document


class ConfigBase:
    """Shared ``from_dict``/``from_file``: known fields are read, bookkeeping keys dropped,
    and keys listed in ``_REQUIRED_VALUES`` must hold the one value we support."""

    _IGNORED_KEYS: frozenset[str] = frozenset()
    _REQUIRED_VALUES: Mapping[str, Any] = {}

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any], *, source: str = "config") -> T:
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key, supported in cls._REQUIRED_VALUES.items():
            if key in values and values[key] != supported:
                raise ConfigError(
                    f"{source}: {key}={values[key]!r} is not supported by this implementation "
                    f"(only {supported!r}, as in the released MOVA checkpoints)."
                )
        unknown = [
            k for k in values
            if k not in fields and not k.startswith("_") and k not in cls._REQUIRED_VALUES and k not in cls._IGNORED_KEYS
        ]
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {sorted(unknown)}; this implementation cannot honour them.")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in fields}
        config = cls(**kwargs)
        config.validate(source)
        return config

    @classmethod
    def from_file(cls: type[T], path: str | Path) -> T:
        return cls.from_dict(read_json(path), source=str(path))

    def validate(self, source: str) -> None:
        """Raise :class:`ConfigError` when the values are inconsistent."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]


@dataclasses.dataclass(frozen=True)
class DiTConfig(ConfigBase):
    """``video_dit``/``video_dit_2`` (``WanModel``) and ``audio_dit`` (``WanAudioModel``)."""

    dim: int
    in_dim: int
    ffn_dim: int
    out_dim: int
    text_dim: int
    freq_dim: int
    num_heads: int
    num_layers: int
    patch_size: tuple[int, ...]
    eps: float = 1e-6
    vae_type: str | None = None
    require_vae_embedding: bool = True
    require_clip_embedding: bool = False

    # Training-time / unused flags of the official class; only their released value is supported.
    _REQUIRED_VALUES = {
        "has_image_input": False,
        "has_image_pos_emb": False,
        "has_ref_conv": False,
        "add_control_adapter": False,
        "seperated_timestep": False,
        "fuse_vae_embedding_in_latents": False,
    }
    _IGNORED_KEYS = frozenset({"in_dim_control_adapter"})  # only read when add_control_adapter is set

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def is_audio(self) -> bool:
        return len(self.patch_size) == 1

    def validate(self, source: str) -> None:
        if self.dim % self.num_heads:
            raise ConfigError(f"{source}: dim {self.dim} is not divisible by num_heads {self.num_heads}.")
        if len(self.patch_size) not in (1, 3):
            raise ConfigError(f"{source}: patch_size must have 1 (audio) or 3 (video) entries, got {self.patch_size}.")
        if self.is_audio and self.vae_type not in (None, "dac"):
            raise ConfigError(f"{source}: audio vae_type {self.vae_type!r} is not supported (only 'dac').")
        if not self.is_audio and (self.head_dim // 3) % 2:
            raise ConfigError(
                f"{source}: head_dim {self.head_dim} cannot be split into the 3-D RoPE bands "
                "(head_dim // 3 must be even, as in the official code)."
            )
        if self.require_clip_embedding:
            raise ConfigError(f"{source}: require_clip_embedding=True (CLIP image branch) is not supported.")


INTERACTION_STRATEGIES = ("full", "shallow_focus", "distributed", "progressive", "custom")


@dataclasses.dataclass(frozen=True)
class BridgeConfig(ConfigBase):
    """``dual_tower_bridge`` (``DualTowerConditionalBridge``)."""

    visual_layers: int = 30
    audio_layers: int = 30
    visual_hidden_dim: int = 3072
    audio_hidden_dim: int = 3072
    audio_fps: float = 44100 / 2048
    head_dim: int = 128
    interaction_strategy: str = "shallow_focus"
    apply_cross_rope: bool = False
    apply_first_frame_bias_in_rope: bool = False
    trainable_condition_scale: bool = False
    pooled_adaln: bool = False

    def validate(self, source: str) -> None:
        if self.interaction_strategy not in INTERACTION_STRATEGIES:
            raise ConfigError(
                f"{source}: interaction_strategy {self.interaction_strategy!r} is unknown; "
                f"expected one of {INTERACTION_STRATEGIES}."
            )
        for name in ("visual_hidden_dim", "audio_hidden_dim"):
            if getattr(self, name) % self.head_dim:
                raise ConfigError(f"{source}: {name} {getattr(self, name)} is not divisible by head_dim {self.head_dim}.")

    @property
    def interaction_layers(self) -> tuple[int, ...]:
        """Layer indices that get a bridge block, as the official strategies define them."""
        n = min(self.visual_layers, self.audio_layers)
        if self.interaction_strategy == "full":
            layers = range(n)
        elif self.interaction_strategy == "shallow_focus":
            layers = range(min(10, n // 3))
        elif self.interaction_strategy == "distributed":
            layers = range(0, n, 3)
        elif self.interaction_strategy == "progressive":
            layers = sorted(set(range(min(8, n))) | set(range(8, n, 3)))
        else:  # custom
            layers = [0, 2, 4, 6, 8, 12, 16, 20]
        return tuple(i for i in layers if i < n)


@dataclasses.dataclass(frozen=True)
class SchedulerConfig(ConfigBase):
    """``scheduler/scheduler_config.json`` (``FlowMatchPairScheduler``)."""

    shift: float = 3.0
    extra_one_step: bool = False
    num_train_timesteps: int = 1000
    sigma_max: float = 1.0
    sigma_min: float = 0.003 / 1.002
    inverse_timesteps: bool = False
    reverse_sigmas: bool = False
    exponential_shift: bool = False
    exponential_shift_mu: float | None = None
    shift_terminal: float | None = None
    num_inference_steps: int = 100


@dataclasses.dataclass(frozen=True)
class ModelIndex(ConfigBase):
    """``model_index.json`` of a MOVA folder: which components exist and the expert boundary."""

    boundary_ratio: float = 0.9
    audio_vae_type: str = "dac"
    components: tuple[str, ...] = ()

    COMPONENTS = (
        "video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge",
        "video_vae", "audio_vae", "text_encoder", "tokenizer", "scheduler",
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "model_index.json") -> "ModelIndex":
        if values.get("audio_vae_type", "dac") != "dac":
            raise ConfigError(f"{source}: audio_vae_type {values['audio_vae_type']!r} is not supported (only 'dac').")
        boundary = float(values.get("boundary_ratio", 0.9))
        if not 0.0 <= boundary <= 1.0:
            raise ConfigError(f"{source}: boundary_ratio {boundary} must lie in [0, 1].")
        components = tuple(name for name in cls.COMPONENTS if name in values)
        return cls(boundary_ratio=boundary, components=components)

    @property
    def boundary_timestep(self) -> float:
        return self.boundary_ratio * 1000.0


# Wan 2.1 latent statistics (the diffusers defaults; checkpoints state their own in config.json).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclasses.dataclass(frozen=True)
class VideoVAEConfig(ConfigBase):
    """``video_vae/config.json`` (diffusers ``AutoencoderKLWan``, Wan 2.1 layout).

    ``dropout`` is accepted and unused (inference only). ``scale_factor_*`` may be ``None``; when
    given they must agree with the network (``2**downsamples``).
    """

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    in_channels: int = 3
    out_channels: int = 3
    scale_factor_temporal: int | None = 4
    scale_factor_spatial: int | None = 8

    # Wan 2.2 VAE features (residual down/up blocks, pixel patching) are not implemented.
    _REQUIRED_VALUES = {"is_residual": False, "patch_size": None}

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    def validate(self, source: str) -> None:
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(
                f"{source}: temperal_downsample needs one entry per downsampling stage "
                f"(len(dim_mult) - 1 = {len(self.dim_mult) - 1}), got {list(self.temperal_downsample)}."
            )
        if self.attn_scales:
            raise ConfigError(
                f"{source}: attn_scales={list(self.attn_scales)} is not supported; the Wan 2.1 VAE uses [] "
                "(diffusers' AutoencoderKLWan cannot run encoder attention with its frame cache either)."
            )
        for name, derived in (("scale_factor_temporal", self.temporal_factor), ("scale_factor_spatial", self.spatial_factor)):
            stated = getattr(self, name)
            if stated is not None and stated != derived:
                raise ConfigError(f"{source}: {name}={stated} does not match the network, which scales by {derived}.")
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ConfigError(f"{source}: {name} has {len(getattr(self, name))} entries; z_dim is {self.z_dim}.")
        if any(s <= 0 for s in self.latents_std):
            raise ConfigError(f"{source}: latents_std entries must be positive.")

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(T, h, w)`` of the latents of a ``num_frames x height x width`` video; raises ValueError
        for sizes the VAE cannot encode."""
        t, s = self.temporal_factor, self.spatial_factor
        if num_frames < 1 or (num_frames - 1) % t:
            raise ValueError(f"num_frames={num_frames}: must be 1 + a multiple of {t} (for example {t * 20 + 1}).")
        if height < s or width < s or height % s or width % s:
            raise ValueError(f"height x width = {height} x {width}: both must be positive multiples of {s}.")
        return (num_frames - 1) // t + 1, height // s, width // s


@dataclasses.dataclass(frozen=True)
class DACConfig(ConfigBase):
    """``audio_vae/config.json``. Defaults are the official constructor's; only ``continuous=True`` runs."""

    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int | None = None
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    sample_rate: int = 44100
    continuous: bool = False
    use_weight_norm: bool = True

    # Codebook keys only serve the discrete (quantised) DAC, which MOVA does not use; a stored
    # ``hop_length`` is not a constructor argument (the official class derives it, as we do).
    _IGNORED_KEYS = frozenset({"n_codebooks", "codebook_size", "codebook_dim", "quantizer_dropout", "hop_length"})

    def __post_init__(self) -> None:
        if self.latent_dim is None:  # the official default: the encoder's final width
            object.__setattr__(self, "latent_dim", self.encoder_dim * 2 ** len(self.encoder_rates))

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    def validate(self, source: str) -> None:
        if not self.continuous:
            raise ConfigError(f"{source}: continuous must be true (MOVA uses the continuous DAC; the quantised one is not supported).")
        if min(self.encoder_rates + self.decoder_rates, default=0) < 1:
            raise ConfigError(f"{source}: encoder_rates and decoder_rates must be non-empty lists of positive ints.")
        if math.prod(self.decoder_rates) != self.hop_length:
            raise ConfigError(
                f"{source}: decoder_rates {list(self.decoder_rates)} upsample by {math.prod(self.decoder_rates)} but "
                f"encoder_rates {list(self.encoder_rates)} downsample by {self.hop_length}; they must match."
            )
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise ConfigError(
                f"{source}: decoder_dim {self.decoder_dim} must be divisible by 2**{len(self.decoder_rates)} "
                "(each decoder block halves the width)."
            )


@dataclasses.dataclass(frozen=True)
class UMT5Config(ConfigBase):
    """``text_encoder/config.json`` (a transformers ``UMT5Config``); defaults are transformers'."""

    vocab_size: int = 250112
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    # transformers derives the activation from this key (``dense_act_fn``/``is_gated_act`` follow it).
    _REQUIRED_VALUES = {"feed_forward_proj": "gated-gelu"}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> "UMT5Config":
        """transformers configs carry many generic keys (dropout, decoder, generation); only the
        encoder's shape and activation matter at inference, the rest is ignored."""
        known = {f.name for f in dataclasses.fields(cls)} | set(cls._REQUIRED_VALUES)
        return super().from_dict({k: v for k, v in values.items() if k in known}, source=source)

    def validate(self, source: str) -> None:
        if self.relative_attention_num_buckets < 4:
            raise ConfigError(f"{source}: relative_attention_num_buckets must be at least 4 (bidirectional buckets).")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv
