"""Shared fixtures: the parity reference folder (``MOVA_PARITY_DIR``) and tolerance helpers."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARITY_DIR = REPO_ROOT.parent / "shared" / "parity" / "tiny-a"
PACK_PACKAGE = "comfyui_mova_av"


def _register_pack() -> None:
    """Import the repository as the package ``comfyui_mova_av`` (as ComfyUI does, under another name), so
    tests can import ``comfyui_mova_av.nodes.<module>``: the node modules reach mova_core relatively."""
    if PACK_PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        PACK_PACKAGE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_PACKAGE] = module
    spec.loader.exec_module(module)


_register_pack()


def parity_root() -> Path:
    return Path(os.environ.get("MOVA_PARITY_DIR", DEFAULT_PARITY_DIR))


class Reference:
    """One ``refs/<name>.safetensors`` + ``.json`` pair of the parity folder."""

    def __init__(self, root: Path, name: str):
        self.root = root
        self.tensors: dict[str, torch.Tensor] = load_file(str(root / "refs" / f"{name}.safetensors"))
        self.meta: dict[str, Any] = json.loads((root / "refs" / f"{name}.json").read_text(encoding="utf-8"))

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    root = parity_root()
    if not (root / "refs").is_dir() or not (root / "checkpoint").is_dir():
        pytest.skip(f"parity fixture not found at {root} (set MOVA_PARITY_DIR)")
    return root


@pytest.fixture(scope="session")
def reference(parity_dir: Path):
    """``reference("video_dit")`` -> :class:`Reference` (cached per session)."""
    cache: dict[str, Reference] = {}

    def get(name: str) -> Reference:
        if name not in cache:
            cache[name] = Reference(parity_dir, name)
        return cache[name]

    return get


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = "") -> None:
    """``|actual - expected| <= rel * max|expected|`` elementwise: a tolerance on the reference's scale."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    expected = expected.to(torch.float64)
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.to(torch.float64) - expected).abs().max()
    assert err <= rel * scale, f"{what}: max error {err:.3e} exceeds {rel:g} x reference scale {scale:.3e}"
