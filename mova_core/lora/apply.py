"""Apply stacks of LoRAs to the MOVA modules without ever changing the base model for good.

A :class:`LoraStack` is an immutable list of (LoRA, per-component strengths); adding or
removing a LoRA gives a new stack (clone semantics). ``stack.apply(modules)`` patches the
modules and returns an :class:`AppliedLoras` handle whose ``remove()`` (or ``with`` exit)
puts them back exactly:

* ``merge=False`` (default): a forward hook on each adapted Linear adds
  ``sum_i factor_i * up_i(down_i(x))``. Weights are never touched, no weight copy is made,
  and fp8-stored weights keep their precision (the official inference path, ``LoRALinear``).
* ``merge=True``: each adapted weight is replaced by a new ``W + sum_i delta_i`` parameter
  (computed in float32, stored in W's dtype); removal reinstalls the original parameter
  objects, so they come back bit for bit. Costs one copy of each adapted weight while applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .types import COMPONENTS, LoraError, LoraFile, LoraWeights, shape_problem

Term = tuple[LoraWeights, float]  # (weights, strength)


def lora_delta(weights: LoraWeights, weight_shape: tuple[int, ...], *, strength: float = 1.0,
               name: str = "LoRA layer", device: torch.device | str | None = None) -> torch.Tensor:
    """``strength * (alpha / rank) * up @ down`` in float32, checked against the Linear ``weight_shape``."""
    problem = shape_problem(weights, weight_shape)
    if problem:
        raise LoraError(f"{name}: {problem}")
    up = weights.up.to(device=device, dtype=torch.float32)
    down = weights.down.to(device=device, dtype=torch.float32)
    return (up @ down) * (strength * weights.scale)


@dataclass(frozen=True)
class LoraStrengths:
    """How strongly one LoRA applies to each component (0 = not applied there)."""

    video_dit: float = 1.0
    video_dit_2: float = 1.0
    audio_dit: float = 1.0
    dual_tower_bridge: float = 1.0

    @classmethod
    def grouped(cls, video: float = 1.0, audio: float = 1.0, bridge: float = 1.0) -> "LoraStrengths":
        """One strength for both video experts, one for the audio DiT, one for the bridge."""
        return cls(video, video, audio, bridge)

    def of(self, component: str) -> float:
        if component not in COMPONENTS:
            raise LoraError(f"unknown component {component!r}; choose one of {COMPONENTS}.")
        return getattr(self, component)


class AppliedLoras:
    """Handle of a stack applied to modules; ``remove()`` restores them (idempotent)."""

    def __init__(self, undo: list[Callable[[], None]]) -> None:
        self._undo = undo

    def remove(self) -> None:
        while self._undo:
            self._undo[-1]()
            self._undo.pop()

    def __enter__(self) -> "AppliedLoras":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@dataclass(frozen=True)
class LoraStack:
    """An immutable, ordered set of LoRAs with their strengths."""

    entries: tuple[tuple[LoraFile, LoraStrengths], ...] = ()

    def add(self, lora: LoraFile, strengths: LoraStrengths = LoraStrengths()) -> "LoraStack":
        """A new stack with ``lora`` appended (the same file may appear more than once)."""
        return LoraStack(self.entries + ((lora, strengths),))

    def without(self, lora: LoraFile) -> "LoraStack":
        """A new stack without ``lora`` (matched by identity)."""
        if not any(entry is lora for entry, _ in self.entries):
            raise LoraError(f"{lora!r} is not in this stack.")
        return LoraStack(tuple((entry, s) for entry, s in self.entries if entry is not lora))

    def terms(self, component: str) -> dict[str, list[Term]]:
        """Module path -> (weights, strength) of every LoRA that adapts it with a non-zero strength."""
        layers: dict[str, list[Term]] = {}
        for lora, strengths in self.entries:
            strength = strengths.of(component)
            if strength != 0:
                for path, weights in lora.layers(component).items():
                    layers.setdefault(path, []).append((weights, strength))
        return layers

    def apply(self, modules: Mapping[str, nn.Module], *, merge: bool = False) -> AppliedLoras:
        """Patch ``modules`` (component name -> model) with every LoRA of the stack.

        Everything is checked before anything is patched: a missing component module, a path
        that is no Linear, or a mis-shaped LoRA raises :class:`LoraError` naming the layer.
        """
        planned = [(linear, terms) for component in COMPONENTS for linear, terms in self._plan(component, modules)]
        return AppliedLoras([_merge(linear, terms) if merge else _hook(linear, terms) for linear, terms in planned])

    def _plan(self, component: str, modules: Mapping[str, nn.Module]) -> list[tuple[nn.Linear, list[Term]]]:
        layers = self.terms(component)
        if not layers:
            return []
        if component not in modules:
            raise LoraError(f"the LoRA stack adapts {len(layers)} layers of {component}, but no {component} "
                            f"module was given; pass it or set that component's strength to 0.")
        plan = []
        for path, terms in layers.items():
            name = f"{component}.{path}"
            try:
                linear = modules[component].get_submodule(path)
            except AttributeError:
                linear = None
            if not isinstance(linear, nn.Linear):
                raise LoraError(f"{name}: the model has no Linear layer there.")
            for weights, _ in terms:
                problem = shape_problem(weights, tuple(linear.weight.shape))
                if problem:
                    raise LoraError(f"{name}: {problem}")
            plan.append((linear, terms))
        return plan


def _hook(linear: nn.Linear, terms: list[Term]) -> Callable[[], None]:
    # (down, up, factor) per term, converted for the device and dtype of the last input: converting at
    # every call would copy every LoRA factor host-to-device at every model pass.
    converted: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, torch.Tensor, float]]] = {}

    def factors(x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        key = (x.device, x.dtype)
        if key not in converted:
            converted.clear()
            converted[key] = [(weights.down.to(device=x.device, dtype=x.dtype),
                               weights.up.to(device=x.device, dtype=x.dtype), strength * weights.scale)
                              for weights, strength in terms]
        return converted[key]

    def add_lora(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        for down, up, factor in factors(x):
            output = output + F.linear(F.linear(x, down), up) * factor
        return output

    return linear.register_forward_hook(add_lora).remove


def _merge(linear: nn.Linear, terms: list[Term]) -> Callable[[], None]:
    original = linear.weight
    merged = original.detach().to(torch.float32)
    for weights, strength in terms:
        merged = merged + lora_delta(weights, tuple(original.shape), strength=strength, device=original.device)
    linear.weight = nn.Parameter(merged.to(original.dtype), requires_grad=False)
    patched = linear.weight

    def restore() -> None:
        if linear.weight is not patched:
            raise LoraError("a merged LoRA weight was replaced by another patch; remove LoRA patches "
                            "in the reverse order of applying them.")
        linear.weight = original

    return restore
