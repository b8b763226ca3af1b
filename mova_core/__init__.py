"""MOVA joint video+audio diffusion in pure PyTorch (no ComfyUI imports).

``from mova_core import MovaPipeline`` is the entry point of the Python API. It is resolved on first
use (module ``__getattr__``), so ``import mova_core`` itself imports neither torch nor any submodule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import MovaPipeline

__all__ = ["MovaPipeline"]


def __getattr__(name: str) -> Any:
    if name == "MovaPipeline":
        from .pipeline import MovaPipeline

        globals()[name] = MovaPipeline
        return MovaPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
