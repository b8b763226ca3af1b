"""The benchmarks' logic on tiny models on the CPU: the GPU benchmark at the tiny shapes (``--tiny``) reports every
row, with the step cache's pass counts and ratios to the bf16 baseline; the step-cache benchmark counts passes and
measures deviations."""

from __future__ import annotations

import re
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import bench_step_cache  # noqa: E402
import gpu_bench  # noqa: E402
from mova_core.tiny import write_tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow


def test_gpu_bench_runs_at_tiny_shapes_on_the_cpu(capsys):
    gpu_bench.main(["--tiny", "--repeats", "1", "--cache-steps", "4", "--skip", "compile"])
    out = capsys.readouterr().out
    assert "CPU, torch" in out and "tiny shapes" in out
    for row in ("bf16, sdpa ", "bf16, sdpa, batched guidance", "4 steps, cache 0 ", "4 steps, cache 0.05",
                "fp8 storage (bf16 compute), sdpa"):
        assert row in out, row
    assert re.search(r"cache 0 .* 8 of 8 model passes computed", out)
    assert len(re.findall(r"\d+\.\d+x bf16 sdpa", out)) == 4


def test_step_cache_bench_counts_passes_and_measures_the_deviation(tmp_path, capsys):
    folder = write_tiny_checkpoint(tmp_path / "model", boundary_ratio=0.6)
    bench_step_cache.main(["--model", str(folder), "--steps", "6", "--thresholds", "0", "3"])
    out = capsys.readouterr().out
    seeds = re.search(r"another seed deviates by video (\d+\.\d+), audio (\d+\.\d+)", out)
    assert seeds and float(seeds[1]) > 0.1 and float(seeds[2]) > 0.1
    assert re.search(r"threshold 0: 12 of 12 model passes computed.*deviation video 0\.000, audio 0\.000", out)
    reused = re.search(r"threshold 3: (\d+) of 12 model passes computed, (\d+) reused.*deviation video (\d+\.\d+), "
                       r"audio (\d+\.\d+)$", out, re.M)
    assert reused and int(reused[2]) > 0 and int(reused[1]) + int(reused[2]) == 12
    assert 0 < float(reused[3]) < float(seeds[1]) and 0 < float(reused[4]) < float(seeds[2])
