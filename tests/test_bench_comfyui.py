"""benchmarks/bench_comfyui.py without ComfyUI: its defaults ask for one model pass, and its memory sampler reads /proc."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_comfyui  # noqa: E402


def test_defaults_are_one_pass_of_the_stored_fp8():
    args = bench_comfyui.parse_args(["--comfyui", "/c", "--model", "/m"])
    sampler = bench_comfyui.workflow(args)["3"]["inputs"]
    assert (sampler["steps"], sampler["text_cfg"], sampler["bridge_cfg"]) == (1, 1.0, 1.0)
    assert sampler["width"] % 16 == 0 and sampler["height"] % 16 == 0 and (sampler["frames"] - 1) % 4 == 0
    graph = bench_comfyui.workflow(args)
    assert graph["1"]["inputs"]["weight_dtype"] == "fp8_e4m3fn"
    assert [graph[key]["class_type"] for key in sorted(graph)] == [
        "MOVAModelLoader", "MOVATextEncode", "MOVASampler", "MOVADecode", "MOVAAVMux"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_the_memory_sampler_reads_another_process():
    from memory import AnonPeak, status_kib

    with AnonPeak(interval=0.01, pid=os.getpid()) as peak:
        pass
    assert peak.kib > 0 and status_kib("VmHWM", os.getpid()) > 0
    assert status_kib("NoSuchField", os.getpid()) == 0 and status_kib("VmHWM", 2**31) == 0
