"""The normalised form every LoRA file is read into, and the error LoRA code raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import torch

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")
VIDEO_EXPERTS = ("video_dit", "video_dit_2")


class LoraError(ValueError):
    """A LoRA file that cannot be read, or that does not fit the model it is applied to."""


class LoraWeights(NamedTuple):
    """One adapted Linear: ``delta W = (alpha / rank) * up @ down`` (scale 1 when ``alpha`` is None).

    ``alpha`` follows ComfyUI's convention: it is divided by this layer's own rank
    (``down.shape[0]``). Official files with a file-wide ``rank``/``alpha`` are converted
    to it when read, so one rule serves every source.
    """

    down: torch.Tensor  # [rank, in_features]
    up: torch.Tensor  # [out_features, rank]
    alpha: float | None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    @property
    def weight_shape(self) -> tuple[int, int]:
        """The ``[out, in]`` shape of the Linear weight this LoRA adapts."""
        return (self.up.shape[0], self.down.shape[1])


def pair_problem(weights: LoraWeights) -> str | None:
    """Why ``down``/``up`` are not a LoRA pair (2-D, matching rank), or None when they are."""
    down, up = tuple(weights.down.shape), tuple(weights.up.shape)
    if len(down) != 2 or len(up) != 2 or up[1] != down[0]:
        return (f"down {down} and up {up} are not a Linear LoRA pair "
                f"(expected down [rank, in] and up [out, rank])")
    return None


def shape_problem(weights: LoraWeights, weight_shape: tuple[int, ...]) -> str | None:
    """Why ``weights`` cannot adapt a Linear weight of ``weight_shape``, or None when it can."""
    problem = pair_problem(weights)
    if problem is None and weights.weight_shape != tuple(weight_shape):
        problem = (f"up {tuple(weights.up.shape)} @ down {tuple(weights.down.shape)} gives "
                   f"{weights.weight_shape}, but the model's Linear weight is {tuple(weight_shape)}")
    return problem


@dataclass(frozen=True)
class LoraFile:
    """A LoRA read from disk: component -> module path (as in the state dict) -> weights.

    ``notes`` records decisions taken while reading (defaults used, keys without a component
    assigned by shape); ``unmatched`` lists file keys that were not used, with the reason
    (only non-empty when read with ``strict=False``).
    """

    source: str
    components: Mapping[str, Mapping[str, LoraWeights]]
    notes: tuple[str, ...] = ()
    unmatched: Mapping[str, str] = field(default_factory=dict)

    def layers(self, component: str) -> Mapping[str, LoraWeights]:
        """The adapted Linears of ``component`` (empty when the file has none)."""
        if component not in COMPONENTS:
            raise LoraError(f"unknown component {component!r}; choose one of {COMPONENTS}.")
        return self.components.get(component, {})

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {len(self.components[c])}" for c in COMPONENTS if c in self.components)
        return f"LoraFile({self.source!r}, layers {{{counts}}}, unmatched {len(self.unmatched)})"
