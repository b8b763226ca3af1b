"""benchmarks/bench_comfyui.py without ComfyUI: its defaults ask for one model pass, and the sampler reads /proc."""

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
def test_sampler_reads_the_peaks_of_a_process():
    with bench_comfyui.Sampler(os.getpid(), interval=0.01) as peak:
        pass
    assert peak.hwm > 0 and peak.anon > 0
    assert bench_comfyui.proc_kib(os.getpid(), "NoSuchField") == 0
