"""Step and whole-call time of this port against the official MOVA implementation, interleaved.

Two worker processes load the same random mid-size checkpoint (official folder layout): ours in this
Python, the official code (OpenMOSS/MOVA) in its own environment, imported with the shims of
``tools/record_parity.py``. The driver asks them in turn (alternating which goes first) to run one guided
step (text CFG: positive + negative pass) or one whole generation, so both see the same machine load; only
one works at a time. Reported: median seconds and our/official ratios, for our exact path and each option
(batched guidance, compiled blocks, step cache at its recommended threshold: whole calls only), and the
minor page faults of each side per request.

glibc returns freed heap to the system and maps big buffers afresh (page-faulting them in again) until the
process has freed one buffer near 32 MiB; then it raises both thresholds for good. At this size the official
worker is there by its first step (it page-faults little), ours is not (one freed 24 MiB buffer takes its faults
from ~90,000 a step request to ~0); at the released shapes every process gets there in its first pass. ``--heap settled`` (the default) starts both
workers with glibc's settled thresholds, so the ratios compare the steps' work; ``--heap default`` leaves
glibc's start values.

    python benchmarks/bench_vs_official.py --official /work/official-mova --official-python /work/venv-official/bin/python
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCALE = 8  # widths 8x the demo model (video 768 / audio 384, 4 layers): matmul-bound like the real model
CLIP = dict(height=128, width=224, num_frames=25, fps=24.0)  # 784 video tokens, 52 audio tokens
WHOLE_CALL_STEPS = 4
TEXT_CFG = 5.0
CACHE_THRESHOLD = 0.05  # the README's recommended value (EasyCache's for Wan)
TIMESTEPS = (991.0, 950.0, 930.0)  # high-noise expert (boundary 900)
MARK = "@@bench "  # prefix of the workers' answers on stdout
SETTLED_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}  # glibc's maxima


def write_checkpoint(folder: Path) -> Path:
    """The mid-size random checkpoint (written once)."""
    sys.path.insert(0, str(REPO))
    from mova_core import tiny

    if not (folder / "model_index.json").is_file():
        def wider(config):
            return dataclasses.replace(config, dim=config.dim * SCALE, ffn_dim=config.ffn_dim * SCALE,
                                       num_heads=config.num_heads * SCALE, num_layers=4)
        video, audio = wider(tiny.VIDEO_DIT), wider(tiny.AUDIO_DIT)
        bridge = dataclasses.replace(tiny.BRIDGE, visual_layers=4, audio_layers=4, visual_hidden_dim=video.dim,
                                     audio_hidden_dim=audio.dim)
        tiny.write_tiny_checkpoint(folder, video_dit=video, audio_dit=audio, bridge=bridge)
    for name in ("video_dit", "video_dit_2", "audio_dit"):  # the official classes need this key spelled out
        path = folder / name / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**config, "has_image_input": False}, indent=2), encoding="utf-8")
    return folder


# -- workers -----------------------------------------------------------------------------------------


def _inputs(video_channels: int, condition_channels: int, audio_channels: int, text_dim: int, audio_len: int,
            grid: tuple[int, int, int]):
    import torch

    g = torch.Generator().manual_seed(0)
    return dict(video=torch.randn(1, video_channels, *grid, generator=g),
                condition=torch.randn(1, condition_channels, *grid, generator=g),
                audio=torch.randn(1, audio_channels, audio_len, generator=g),
                positive=torch.randn(1, 512, text_dim, generator=g), negative=torch.randn(1, 512, text_dim, generator=g))


class OursWorker:
    """This port: a step through the pipeline's velocity model (one JointConstants per run, as in a generation)."""

    def __init__(self, folder: Path):
        sys.path.insert(0, str(REPO))
        import torch
        from mova_core.pipeline import MovaPipeline

        self.torch, self.folder = torch, folder
        self.pipes = {"exact": MovaPipeline.from_pretrained(folder, dtype=torch.float32)}
        self.pipes["compile"] = MovaPipeline.from_pretrained(folder, dtype=torch.float32, compile=True)

    def _step_inputs(self, pipe):
        video_shape, audio_shape = pipe.latent_shapes(CLIP["height"], CLIP["width"], CLIP["num_frames"], CLIP["fps"])
        dit = pipe.experts["video_dit"]
        return _inputs(video_shape[1], dit.config.in_dim - video_shape[1], audio_shape[1], dit.config.text_dim,
                       audio_shape[2], video_shape[2:])

    def step(self, variant: str) -> float:
        """Seconds of the last of len(TIMESTEPS) guided steps (the first computes the run's constants)."""
        from mova_core.pipeline import velocity_model
        from mova_core.sampler import Guidance, _predict

        pipe = self.pipes["compile" if variant == "compile" else "exact"]
        x = self._step_inputs(pipe)
        model = velocity_model(pipe.experts, pipe.audio_dit, pipe.bridge, x["condition"], CLIP["fps"])
        contexts = {"positive": x["positive"], "negative": x["negative"]}
        with self.torch.no_grad():
            for t in TIMESTEPS:
                started = time.perf_counter()
                timestep = self.torch.tensor([t])
                _predict(model, "video_dit", Guidance(TEXT_CFG, 1.0), x["video"], x["audio"], contexts, timestep,
                         timestep, None, batch_guidance=variant == "batched")
                seconds = time.perf_counter() - started
        return seconds

    def call(self, variant: str) -> float:
        pipe = self.pipes["compile" if variant == "compile" else "exact"]
        options = {"batched": dict(batch_guidance=True), "cache": dict(cache_threshold=CACHE_THRESHOLD)}.get(variant, {})
        started = time.perf_counter()
        with self.torch.no_grad():
            pipe.generate("a dog barks in the rain", negative_prompt="", image=None, steps=WHOLE_CALL_STEPS,
                          text_cfg=TEXT_CFG, seed=0, **CLIP, **options)
        return time.perf_counter() - started


class OfficialWorker:
    """The official implementation: ``MOVA.inference_single_step`` twice per step, ``MOVA.__call__`` per call."""

    def __init__(self, folder: Path, official: Path):
        sys.path.insert(0, str(REPO / "tools"))
        import record_parity
        import torch

        import tempfile
        import torch.distributed as dist

        self.torch = torch
        self.off = record_parity.Official(official)
        if not dist.is_initialized():  # MOVA.__call__ asks for the rank (one process, as record_parity.py runs it)
            store = Path(tempfile.mkdtemp(prefix="mova-bench-")) / "gloo_store"
            dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        self.pipe = self.off.MOVA.from_pretrained(str(folder), torch_dtype=torch.float32)
        self.pipe.to("cpu")

    def step(self, variant: str) -> float:
        pipe, torch = self.pipe, self.torch
        frames, h, w = (CLIP["num_frames"] - 1) // 4 + 1, CLIP["height"] // 8, CLIP["width"] // 8
        audio_len = (int(pipe.audio_sample_rate * CLIP["num_frames"] / CLIP["fps"]) - 1) // pipe.audio_vae.hop_length + 1
        dit = pipe.video_dit
        x = _inputs(dit.out_dim, dit.in_dim - dit.out_dim, pipe.audio_dit.in_dim, dit.text_dim, audio_len, (frames, h, w))
        visual = torch.cat([x["video"], x["condition"]], dim=1)
        with torch.no_grad():
            for t in TIMESTEPS:
                started = time.perf_counter()
                timestep = torch.tensor([t])
                outputs = [pipe.inference_single_step(dit, visual, x["audio"], context, timestep, timestep, CLIP["fps"])
                           for context in (x["positive"], x["negative"])]
                [pos_v, pos_a], [neg_v, neg_a] = outputs
                neg_v + TEXT_CFG * (pos_v - neg_v), neg_a + TEXT_CFG * (pos_a - neg_a)
                seconds = time.perf_counter() - started
        return seconds

    def call(self, variant: str) -> float:
        from PIL import Image

        white = Image.new("RGB", (CLIP["width"], CLIP["height"]), (255, 255, 255))
        started = time.perf_counter()
        with self.torch.no_grad():
            self.pipe(prompt="a dog barks in the rain", image=white, negative_prompt="", seed=0,
                      height=CLIP["height"], width=CLIP["width"], num_frames=CLIP["num_frames"],
                      video_fps=CLIP["fps"], num_inference_steps=WHOLE_CALL_STEPS, cfg_scale=TEXT_CFG)
        return time.perf_counter() - started


def worker_main(kind: str, folder: Path, official: Path | None, threads: int) -> None:
    import resource

    import torch

    torch.set_num_threads(threads)
    worker = OursWorker(folder) if kind == "ours" else OfficialWorker(folder, official)
    print(MARK + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        what, variant = line.split()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = getattr(worker, what)(variant)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        print(MARK + json.dumps({"seconds": seconds, "faults": faults}), flush=True)


# -- driver ------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, python: str, kind: str, folder: Path, official: Path, threads: int, env: dict[str, str]):
        self.process = subprocess.Popen(
            [python, __file__, "--worker", kind, "--folder", str(folder), "--official", str(official),
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._read()

    def _read(self) -> dict:
        """The next answer (libraries may print other lines on stdout: skipped)."""
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise SystemExit(f"worker exited with status {self.process.wait()}")

    def run(self, what: str, variant: str) -> dict:
        """{"seconds": ..., "faults": ...} of one request."""
        self.process.stdin.write(f"{what} {variant}\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, default=Path("/work/official-mova"))
    parser.add_argument("--official-python", default="/work/venv-official/bin/python")
    parser.add_argument("--folder", type=Path, default=Path("/work/bench-ckpt/mid-size"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--call-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (1: steadier ratios on a machine shared with other work)")
    parser.add_argument("--heap", choices=("settled", "default"), default="settled",
                        help="glibc heap thresholds of both workers (see above)")
    parser.add_argument("--worker", choices=("ours", "official"))
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, args.folder, args.official, args.threads)

    write_checkpoint(args.folder)
    env = os.environ | SETTLED_HEAP if args.heap == "settled" else {
        key: value for key, value in os.environ.items() if key not in SETTLED_HEAP}
    workers = {"official": Worker(args.official_python, "official", args.folder, args.official, args.threads, env),
               "ours": Worker(sys.executable, "ours", args.folder, args.official, args.threads, env)}
    # warm-up (compiles the compiled variant, first-call allocations)
    for variant in ("exact", "compile"):
        workers["ours"].run("step", variant)
    workers["official"].run("step", "exact")
    plan = [("step", v, args.repeats) for v in ("exact", "batched", "compile")] + [
        ("call", v, args.call_repeats) for v in ("exact", "batched", "cache", "compile")]
    print(f"mid-size random checkpoint ({args.folder}), clip {CLIP['width']}x{CLIP['height']}, "
          f"{CLIP['num_frames']} frames, float32 CPU ({args.threads} thread each), text CFG {TEXT_CFG}; whole call "
          f"{WHOLE_CALL_STEPS} steps; glibc heap {args.heap}")
    for what, variant, repeats in plan:
        answers = {"ours": [], "official": []}
        for index in range(repeats):  # interleaved, alternating who goes first
            order = ("ours", "official") if index % 2 == 0 else ("official", "ours")
            for side in order:
                answers[side].append(workers[side].run(what, variant if side == "ours" else "exact"))
        ours, official = ([answer["seconds"] for answer in answers[side]] for side in ("ours", "official"))
        faults = {side: statistics.median(answer["faults"] for answer in answers[side]) for side in answers}
        ratios = [a / b for a, b in zip(ours, official)]
        print(f"{what:4s} {variant:8s} ours {statistics.median(ours):7.3f} s  official "
              f"{statistics.median(official):7.3f} s  ratio median {statistics.median(ratios):.3f} "
              f"(pairs: {' '.join(f'{r:.2f}' for r in ratios)}); page faults per request: ours "
              f"{faults['ours']:.0f}, official {faults['official']:.0f}", flush=True)
    for worker in workers.values():
        worker.close()


if __name__ == "__main__":
    main()
