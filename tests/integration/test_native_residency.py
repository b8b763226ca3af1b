"""The native MODEL's expert residency in a real ComfyUI (in-process, see ``expert_swap.py``): with the plan forced to
one expert (what happens when VRAM is short), the other expert is loaded once at the switch, the LoRA is applied to it
exactly once, and the latents are those of the plan that keeps everything (the CPU's) and of MOVA Sampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mova_core.sampler import LOW_NOISE_EXPERT
from mova_core.tiny import cached_tiny_checkpoint

from .conftest import PACK_DIR
from .test_mova_nodes import LORA, write_tiny_lora


def test_one_expert_residency_loads_the_other_at_the_switch_with_its_lora_once(comfyui_path: Path, tmp_path: Path):
    write_tiny_lora(tmp_path / LORA)
    result = subprocess.run(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), str(Path(__file__).with_name("expert_swap.py")),
         str(comfyui_path), str(PACK_DIR), str(cached_tiny_checkpoint()), str(tmp_path), LORA],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.split("SWAP ", 1)[1])
    assert report["planned_loads"] == [], "on the CPU the plan keeps both experts: no reload"
    assert report["forced_loads"] == [LOW_NOISE_EXPERT], "one reload, at the switch to the low-noise expert"
    assert report["forced_vs_planned"] <= 1e-6 * report["scale"]
    assert report["planned_vs_sampler"] <= 1e-4 * report["scale"], "the LoRA is applied once, as in MOVA Sampler"
