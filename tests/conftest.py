"""Shared fixtures: the parity reference folders and tolerance helpers.

Parity tests run once per reference folder: the folder named by ``MOVA_PARITY_DIR`` if that is set
(only that one); otherwise every folder under ``tests/data/parity/`` (recorded by
``tools/record_parity.py``, shipped with the repository) plus ``../shared/parity/tiny-a`` where it
exists."""

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
IN_REPO_PARITY_DIR = REPO_ROOT / "tests" / "data" / "parity"
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
    """``MOVA_PARITY_DIR`` if set, else the shared tiny-a folder (the FLF fixture's VAE lives there)."""
    return Path(os.environ.get("MOVA_PARITY_DIR", DEFAULT_PARITY_DIR))


def _is_parity_folder(path: Path) -> bool:
    return (path / "refs").is_dir() and (path / "checkpoint").is_dir()


def parity_dirs() -> list[Path]:
    """The reference folders the parity tests run on (see the module docstring)."""
    if os.environ.get("MOVA_PARITY_DIR"):
        return [Path(os.environ["MOVA_PARITY_DIR"])]
    folders = sorted(p for p in IN_REPO_PARITY_DIR.iterdir() if _is_parity_folder(p)) if IN_REPO_PARITY_DIR.is_dir() else []
    if _is_parity_folder(DEFAULT_PARITY_DIR):
        folders.append(DEFAULT_PARITY_DIR)
    return folders


def _parity_ids(folders: list[Path]) -> list[str]:
    """Readable test ids: the folder name, with its parent's name where two folders share one."""
    names = [folder.name for folder in folders]
    return [f"{folder.parent.name}-{folder.name}" if names.count(folder.name) > 1 else folder.name for folder in folders]


_PARITY_DIRS = parity_dirs()


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


@pytest.fixture(scope="session", params=_PARITY_DIRS or [None], ids=_parity_ids(_PARITY_DIRS) or ["no-parity-folder"])
def parity_dir(request) -> Path:
    """One reference folder per parametrisation (test ids name the folder, e.g. ``[tiny-d]``)."""
    root = request.param
    if root is None or not _is_parity_folder(root):
        pytest.skip(f"parity fixture not found at {root or IN_REPO_PARITY_DIR} (set MOVA_PARITY_DIR)")
    return root


@pytest.fixture(scope="session")
def reference(parity_dir: Path):
    """``reference("video_dit")`` -> :class:`Reference` of the current ``parity_dir`` (cached per folder)."""
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
