"""What the step cache reuses and how far its latents move, on a checkpoint (default: the mid-size random one of
``bench_vs_official.py``).

For each threshold: the model passes computed and reused, the sampling time, and the relative L2 deviation of the
video and audio latents from the uncached run (threshold 0), beside the deviation between two seeds as a scale.
Sampling only (no decoders). Pass counts and deviations are exact; times follow the machine's load. Random weights
are the worst case for the cache (their output changes fast from step to step); the thresholds that pay on the
released weights are not measured by this.

    python benchmarks/bench_step_cache.py [--model DIR] [--steps 20] [--thresholds 0.05 0.5 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_official import CLIP, TEXT_CFG, write_checkpoint  # noqa: E402
from mova_core.pipeline import MovaPipeline  # noqa: E402
from mova_core.settings import GenerationSettings  # noqa: E402
from mova_core.step_cache import PassStats  # noqa: E402

PROMPT, NEGATIVE = "a dog barks in the rain", "blurry, silent"


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def sample(pipe: MovaPipeline, steps: int, seed: int, threshold: float) -> tuple[tuple[torch.Tensor, ...], PassStats, float]:
    """Latents (video, audio), pass counts and seconds of one sampling run."""
    run = pipe.prepare(GenerationSettings(**CLIP, steps=steps, text_cfg=TEXT_CFG, seed=seed))
    positive, negative = pipe.encode_prompt(PROMPT), pipe.encode_prompt(NEGATIVE)
    stats = PassStats()
    started = time.perf_counter()
    with torch.no_grad():
        latents = pipe.sample(run, positive, negative, cache_threshold=threshold, stats=stats)
    return latents, stats, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a MOVA folder (default: the mid-size random checkpoint)")
    parser.add_argument("--folder", type=Path, default=Path("/work/bench-ckpt/mid-size"),
                        help="where the mid-size checkpoint is written when --model is not given")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.5, 1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = args.model or write_checkpoint(args.folder)
    pipe = MovaPipeline.from_pretrained(folder, dtype=torch.float32)
    other_seed, _, _ = sample(pipe, args.steps, args.seed + 1, 0.0)  # first: also the warm-up of the timings
    reference, stats, seconds = sample(pipe, args.steps, args.seed, 0.0)
    print(f"{folder}: {CLIP['width']}x{CLIP['height']}, {CLIP['num_frames']} frames, {args.steps} steps, text CFG "
          f"{TEXT_CFG}, float32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"threshold 0: {stats}; {seconds:.1f} s; another seed deviates by video "
          f"{relative(other_seed[0], reference[0]):.3f}, audio {relative(other_seed[1], reference[1]):.3f}")
    results = [(threshold, *sample(pipe, args.steps, args.seed, threshold)) for threshold in args.thresholds]
    again, _, seconds_again = sample(pipe, args.steps, args.seed, 0.0)  # the machine may have sped up or slowed down
    assert all(a.equal(b) for a, b in zip(again, reference)), "two uncached runs differ"
    seconds = min(seconds, seconds_again)
    print(f"threshold 0 again: the same latents; {seconds_again:.1f} s (ratios below: to the faster uncached run)")
    for threshold, latents, stats, cached_seconds in results:
        finite = all(bool(torch.isfinite(x).all()) for x in latents)
        print(f"threshold {threshold:g}: {stats}; {cached_seconds:.1f} s ({cached_seconds / seconds:.2f}x); "
              f"deviation video {relative(latents[0], reference[0]):.3f}, audio "
              f"{relative(latents[1], reference[1]):.3f}{'' if finite else '; NOT FINITE'}", flush=True)


if __name__ == "__main__":
    main()
