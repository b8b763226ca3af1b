"""The Linear layers of the models a LoRA is meant for: names, shapes, kohya spellings."""

from __future__ import annotations

from typing import Mapping

from torch import nn

from .keys import underscored
from .types import COMPONENTS, LoraError


def linear_shapes(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Module path -> ``[out, in]`` weight shape of every Linear in ``module`` (meta modules work)."""
    return {path: tuple(child.weight.shape) for path, child in module.named_modules()
            if isinstance(child, nn.Linear)}


def check_components(names: object, what: str) -> None:
    """Raise unless every name in ``names`` is a MOVA component."""
    unknown = [name for name in names if name not in COMPONENTS]
    if unknown:
        raise LoraError(f"{what}: unknown component(s) {unknown}; choose from {COMPONENTS}.")


class LinearIndex:
    """Linear layers per component, with the lookup kohya names need.

    ``modules`` maps component names (see ``COMPONENTS``) to the models; any subset works.
    """

    def __init__(self, modules: Mapping[str, nn.Module]):
        check_components(modules, "targets")
        self.shapes = {component: linear_shapes(module) for component, module in modules.items()}
        self._dotted: dict[str, set[str]] = {}
        for component, shapes in self.shapes.items():
            for path in shapes:
                for name in (path, f"{component}.{path}"):
                    self._dotted.setdefault(underscored(name), set()).add(name)

    def dotted(self, kohya_name: str) -> str:
        """The dotted module name (optionally component-prefixed) a kohya name stands for."""
        names = self._dotted.get(kohya_name, set())
        if len(names) != 1:
            reason = f"matches several layers {sorted(names)}" if names else "matches no Linear layer of the targets"
            raise LoraError(f"kohya name {kohya_name!r} {reason}")
        return next(iter(names))
