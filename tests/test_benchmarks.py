"""The GPU benchmark's logic, run at the tiny shapes on the CPU (``--tiny``): every row it reports appears,
with the step cache's pass counts and ratios to the bf16 baseline."""

from __future__ import annotations

import re
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import gpu_bench  # noqa: E402

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
