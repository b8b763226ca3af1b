"""``load_lora``: any supported file or folder -> a normalised :class:`LoraFile`."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from .files import LoraTensors, read_lora_tensors
from .keys import ALPHA, DOWN, UP, split_component, split_role, strip_prefixes
from .targets import LinearIndex, check_components
from .types import VIDEO_EXPERTS, LoraError, LoraFile, LoraWeights, pair_problem, shape_problem

Layer = tuple[str | None, str]  # (component or None when the key has no component prefix, module path)
_UNPREFIXED_GROUPS = (VIDEO_EXPERTS, ("audio_dit",), ("dual_tower_bridge",))
_SUMMARY_REASONS = 8
_SUMMARY_KEYS = 3


def load_lora(
    path: str | Path,
    targets: Mapping[str, nn.Module] | None = None,
    *,
    alpha: float | None = None,
    unprefixed_to: Sequence[str] | None = None,
    strict: bool = True,
) -> LoraFile:
    """Read a LoRA in any supported container and key spelling (see :mod:`.files`, :mod:`.keys`).

    ``targets`` maps component names to the models (meta-device models are fine). With it,
    every layer is checked against the model's Linear names and shapes, kohya names are
    mapped back to module paths, and layers without a component prefix (a plain DiT LoRA)
    go to the component group whose shapes they fit: both video experts, the audio DiT or
    the bridge (recorded in ``notes``). ``unprefixed_to`` names the components for such
    layers explicitly. ``alpha`` overrides the file's alpha, as the official loader allows.

    Keys that cannot be used raise :class:`LoraError` listing them; with ``strict=False``
    they are skipped and listed in ``LoraFile.unmatched`` instead.
    """
    raw = read_lora_tensors(path)
    index = None if targets is None else LinearIndex(targets)
    problems: dict[str, str] = {}
    layers = _pair_layers(_group_by_layer(raw.tensors, index, problems), raw, alpha, problems)
    notes = list(raw.notes)
    components = _place_layers(layers, index, unprefixed_to, notes, problems)
    if problems and strict:
        raise LoraError(_summary(str(path), problems))
    if problems:
        notes.append(f"{len(problems)} keys skipped; see LoraFile.unmatched.")
    return LoraFile(str(path), components, tuple(notes), problems)


def _group_by_layer(
    tensors: Mapping[str, torch.Tensor], index: LinearIndex | None, problems: dict[str, str],
) -> dict[Layer, dict[str, tuple[str, torch.Tensor]]]:
    """Layer -> role -> (file key, tensor), with every key spelling normalised.

    A layer given twice (for example in two spellings) is dropped and all its keys reported:
    which copy is meant cannot be told.
    """
    slots: dict[Layer, dict[str, list[tuple[str, torch.Tensor]]]] = {}
    for key, tensor in tensors.items():
        split = split_role(key)
        if split is None:
            problems[key] = ("not a plain LoRA down/up/alpha tensor (LoCon mid, LoHa, LoKr, DoRA, "
                             "diff and norm patches are not supported)")
            continue
        name, role = split
        name, kohya = strip_prefixes(name)
        if kohya:
            if index is None:
                problems[key] = "kohya-style name: pass targets= (the models) to map it to a module path"
                continue
            try:
                name = index.dotted(name)
            except LoraError as error:
                problems[key] = str(error)
                continue
        slots.setdefault(split_component(name), {}).setdefault(role, []).append((key, tensor))
    unique: dict[Layer, dict[str, tuple[str, torch.Tensor]]] = {}
    for layer, roles in slots.items():
        keys = [key for entries in roles.values() for key, _ in entries]
        if len(keys) > len(roles):
            problems.update(dict.fromkeys(keys, f"layer given more than once ({keys}); keep one spelling"))
        else:
            unique[layer] = {role: entries[0] for role, entries in roles.items()}
    return unique


def _pair_layers(
    slots: Mapping[Layer, Mapping[str, tuple[str, torch.Tensor]]],
    raw: LoraTensors,
    alpha_override: float | None,
    problems: dict[str, str],
) -> dict[Layer, tuple[tuple[str, ...], LoraWeights]]:
    """Layer -> (its file keys, weights); incomplete or malformed layers go to ``problems``."""
    layers: dict[Layer, tuple[tuple[str, ...], LoraWeights]] = {}
    for layer, roles in slots.items():
        keys = tuple(key for key, _ in roles.values())
        missing = [role for role in (DOWN, UP) if role not in roles]
        alpha_tensor = roles[ALPHA][1] if ALPHA in roles else None
        problem = f"no {' or '.join(missing)} tensor for this layer" if missing else None
        if problem is None and alpha_tensor is not None and alpha_tensor.numel() != 1:
            problem = f"alpha must be a scalar, found shape {tuple(alpha_tensor.shape)}"
        weights = None if problem else LoraWeights(roles[DOWN][1], roles[UP][1], None)
        problem = problem or pair_problem(weights)
        if problem:
            problems.update(dict.fromkeys(keys, problem))
            continue
        layer_alpha = None if alpha_tensor is None else float(alpha_tensor)
        layers[layer] = (keys, weights._replace(alpha=_alpha(layer_alpha, weights.rank, raw, alpha_override)))
    return layers


def _alpha(layer_alpha: float | None, rank: int, raw: LoraTensors, override: float | None) -> float | None:
    """The layer's alpha in ComfyUI's convention (divided by the layer's own rank).

    A per-layer ``.alpha`` already is; a file-wide alpha (official trainers, or ``override``)
    is divided by the file-wide rank, so it is rescaled by ``rank / file rank``.
    """
    if override is not None:
        value, per_rank = override, raw.rank
    elif layer_alpha is not None:
        value, per_rank = layer_alpha, None
    else:
        value, per_rank = raw.alpha, raw.rank
    if value is None or per_rank is None:
        return value
    return value * rank / per_rank


def _place_layers(
    layers: Mapping[Layer, tuple[tuple[str, ...], LoraWeights]],
    index: LinearIndex | None,
    unprefixed_to: Sequence[str] | None,
    notes: list[str],
    problems: dict[str, str],
) -> dict[str, dict[str, LoraWeights]]:
    """Component -> module path -> weights, checked against ``index`` where it knows the component."""
    placed = [(component, path, keys, weights) for (component, path), (keys, weights) in layers.items()
              if component is not None]
    bare = [(path, keys, weights) for (component, path), (keys, weights) in layers.items() if component is None]
    if bare:
        try:
            group = _unprefixed_components(bare, index, unprefixed_to, notes)
        except LoraError as error:
            problems.update({key: str(error) for _, keys, _ in bare for key in keys})
            group = ()
        placed += [(component, path, keys, weights) for path, keys, weights in bare for component in group]
    components: dict[str, dict[str, LoraWeights]] = {}
    for component, path, keys, weights in placed:
        shapes = index.shapes.get(component) if index is not None else None
        if shapes is not None:
            problem = (f"no Linear layer {path!r} in {component}" if path not in shapes
                       else shape_problem(weights, shapes[path]))
            if problem:
                problems.update(dict.fromkeys(keys, f"{component}.{path}: {problem}"))
                continue
        components.setdefault(component, {})[path] = weights
    return components


def _fits(weights: LoraWeights, shapes: Mapping[str, tuple[int, int]], path: str) -> bool:
    return path in shapes and shape_problem(weights, shapes[path]) is None


def _unprefixed_components(
    bare: Sequence[tuple[str, tuple[str, ...], LoraWeights]],
    index: LinearIndex | None,
    unprefixed_to: Sequence[str] | None,
    notes: list[str],
) -> tuple[str, ...]:
    """The components layers without a component prefix belong to: as asked, or by shape."""
    if unprefixed_to is not None:
        check_components(unprefixed_to, "unprefixed_to")
        notes.append(f"{len(bare)} layers without a component prefix applied to {list(unprefixed_to)} as requested.")
        return tuple(unprefixed_to)
    if index is None:
        raise LoraError("key has no component prefix (video_dit., video_dit_2., audio_dit., dual_tower_bridge.): "
                        "pass targets= (the models) to match it by shape, or unprefixed_to=")
    fitting: dict[tuple[str, ...], int] = {}
    for group in _UNPREFIXED_GROUPS:
        present = tuple(component for component in group if component in index.shapes)
        if present:
            fitting[present] = sum(all(_fits(weights, index.shapes[c], path) for c in present)
                                   for path, _, weights in bare)
    best = max(fitting.values(), default=0)
    winners = [group for group, count in fitting.items() if count == best]
    if best == 0:
        raise LoraError(f"key has no component prefix and fits no Linear of the targets {list(index.shapes)} "
                        f"by name and shape")
    if len(winners) > 1:
        raise LoraError(f"key has no component prefix and its shapes fit several targets {winners}: "
                        f"pass unprefixed_to= to choose")
    notes.append(f"{len(bare)} layers without a component prefix fit the {'/'.join(winners[0])} shapes "
                 f"({best} of them); applied to {list(winners[0])}.")
    return winners[0]


def _summary(source: str, problems: Mapping[str, str]) -> str:
    by_reason: dict[str, list[str]] = {}
    for key, reason in problems.items():
        by_reason.setdefault(reason, []).append(key)
    lines = [f"  - {reason}: {keys[:_SUMMARY_KEYS]}" + (f" and {len(keys) - _SUMMARY_KEYS} more" if len(keys) > _SUMMARY_KEYS else "")
             for reason, keys in list(by_reason.items())[:_SUMMARY_REASONS]]
    more = len(by_reason) - _SUMMARY_REASONS
    tail = [f"  - ... and {more} other problems"] if more > 0 else []
    return (f"{source}: {len(problems)} LoRA keys cannot be used:\n" + "\n".join(lines + tail)
            + "\nFix the file or the targets, or pass strict=False to skip them (listed in LoraFile.unmatched).")
