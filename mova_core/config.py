"""Configuration dataclasses read from the official MOVA ``config.json`` files.

Each ``from_dict`` reads the official diffusers-style config, ignores bookkeeping keys
(``_class_name``, ``_diffusers_version``) and raises :class:`ConfigError` for any value
this implementation cannot honour instead of silently ignoring it.
"""

from __future__ import annotations

import dataclasses
import json
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
