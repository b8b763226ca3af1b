"""GPU step benchmark at the released MOVA shapes, with nothing but PyTorch and a CUDA device.

Builds the high-noise video expert, the audio DiT and the Bridge of the released configuration
(:mod:`mova_core.presets`) with random weights directly on the GPU (no checkpoint on disk) and times guided
steps of a 360p, 193-frame clip (text CFG: two passes a step) for: bf16 and fp8 weight storage, every
attention backend installed (sdpa, flash, sage), batched guidance, compiled blocks, and a few sampling
steps with the step cache on and off; prints seconds per step and peak VRAM of each. Made to finish in
under 8 minutes on one H100/H200 (the clip size and repeats are arguments).

    python benchmarks/gpu_bench.py                 # CUDA, real shapes
    python benchmarks/gpu_bench.py --tiny          # the tiny demo shapes on the CPU: checks the script itself

Random weights give real timings but not real step-cache behaviour: a random network's output changes too
fast for the cache to reuse passes at the recommended threshold, so the cache row shows its overhead only.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mova_core import presets, tiny  # noqa: E402
from mova_core.attention import available_backends  # noqa: E402
from mova_core.bridge import DualTowerBridge  # noqa: E402
from mova_core.compile import compile_blocks  # noqa: E402
from mova_core.dit import DiTTower  # noqa: E402
from mova_core.loading import storage_dtype  # noqa: E402
from mova_core.ops import operations_for  # noqa: E402
from mova_core.pipeline import velocity_model  # noqa: E402
from mova_core.sampler import HIGH_NOISE_EXPERT, Guidance, _predict, sample  # noqa: E402
from mova_core.scheduler import FlowMatchPairScheduler  # noqa: E402
from mova_core.step_cache import PassStats, StepCache  # noqa: E402

CACHE_THRESHOLD = 0.05
TEXT_CFG = 5.0


def _init_random(network: torch.nn.Module) -> None:
    """Random weights on a sane scale, drawn where the parameters live (fp8 drawn in bf16, then cast)."""
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            values = torch.empty(parameter.shape, device=parameter.device, dtype=torch.bfloat16
                                 if parameter.dtype.itemsize == 1 else parameter.dtype)
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("modulation", "probe"):
                values.normal_(0.0, 1.0 / math.sqrt(parameter.shape[-1]))
            elif leaf.endswith("bias"):
                values.normal_(0.0, 0.1)
            elif parameter.ndim == 1:
                values.normal_(1.0, 0.1)
            else:
                values.normal_(0.0, 1.0 / math.sqrt(parameter.shape[1:].numel()))
            parameter.copy_(values)


def build(factory: Callable[..., torch.nn.Module], config, storage: torch.dtype, device: torch.device,
          backend: str) -> torch.nn.Module:
    """A network of ``config`` on ``device``: Linear weights in ``storage``, the rest in bf16 (fp8) or ``storage``."""
    compute = torch.bfloat16 if storage.itemsize == 1 else storage
    with torch.device("meta"):  # dtypes are set on the meta device, so the device gets each tensor once
        network = factory(config, operations=operations_for(storage), attention_backend=backend)
        for module in network.modules():
            for name, parameter in list(module.named_parameters(recurse=False)):
                dtype = storage_dtype(module, name, storage, compute)
                setattr(module, name, torch.nn.Parameter(parameter.to(dtype), requires_grad=False))
    network = network.to_empty(device=device)
    _init_random(network)
    return network.eval()


def latent_shapes(height: int, width: int, frames: int, fps: float, video_z: int, audio_z: int,
                  hop: int, sample_rate: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Video ``[1, z, T, h, w]`` and audio ``[1, Ca, La]`` latent shapes of a clip (Wan 2.1 VAE 4x8x8, DAC hop)."""
    audio_len = (int(sample_rate * frames / fps) - 1) // hop + 1
    return (1, video_z, (frames - 1) // 4 + 1, height // 8, width // 8), (1, audio_z, audio_len)


class Bench:
    """The networks of one storage dtype and backend, and the timed runs on them."""

    def __init__(self, args, storage: torch.dtype, backend: str):
        self.args, self.device = args, torch.device(args.device)
        video_config, audio_config, bridge_config = (
            (tiny.VIDEO_DIT, tiny.AUDIO_DIT, tiny.BRIDGE) if args.tiny else
            (presets.VIDEO_DIT, presets.AUDIO_DIT, presets.BRIDGE))
        self.video = build(DiTTower, video_config, storage, self.device, backend)
        self.audio = build(DiTTower, audio_config, storage, self.device, backend)
        self.bridge = build(DualTowerBridge, bridge_config, storage, self.device, backend)
        hop, rate = (960, 48000)  # the released DAC (and the tiny one): 48 kHz, hop 2*3*4*5*8
        video_shape, audio_shape = latent_shapes(args.height, args.width, args.frames, args.fps,
                                                 video_config.out_dim, audio_config.in_dim, hop, rate)
        g = torch.Generator(self.device).manual_seed(0)
        randn = lambda *shape: torch.randn(*shape, generator=g, device=self.device)  # noqa: E731
        self.video_latents, self.audio_latents = randn(*video_shape), randn(*audio_shape)
        self.condition = randn(1, video_config.in_dim - video_config.out_dim, *video_shape[2:])
        self.contexts = {"positive": randn(1, 512, video_config.text_dim), "negative": randn(1, 512, video_config.text_dim)}

    def model(self):
        return velocity_model({HIGH_NOISE_EXPERT: self.video}, self.audio, self.bridge, self.condition, self.args.fps)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step_seconds(self, *, batch_guidance: bool = False) -> float:
        """Median seconds of a guided step (after one warm-up step that also compiles, when compiled)."""
        model, times = self.model(), []
        t = torch.tensor([950.0], device=self.device)
        with torch.inference_mode():
            for index in range(self.args.repeats + 1):
                self._sync()
                started = time.perf_counter()
                _predict(model, HIGH_NOISE_EXPERT, Guidance(TEXT_CFG, 1.0), self.video_latents, self.audio_latents,
                         self.contexts, t, t, None, batch_guidance=batch_guidance)
                self._sync()
                if index:
                    times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2]

    def sampling_seconds(self, threshold: float) -> tuple[float, PassStats]:
        """Seconds per step of a short sampling run through the step cache (high-noise expert throughout)."""
        stats = PassStats()
        model = StepCache(self.model(), threshold, self.args.cache_steps, stats)
        scheduler = FlowMatchPairScheduler(presets.SCHEDULER)
        with torch.inference_mode():
            self._sync()
            started = time.perf_counter()
            sample(model, scheduler, self.video_latents, self.audio_latents, self.contexts["positive"],
                   self.contexts["negative"], steps=self.args.cache_steps, boundary_timestep=0.0,
                   guidance=Guidance(TEXT_CFG, 1.0))
            self._sync()
        return (time.perf_counter() - started) / self.args.cache_steps, stats


def _peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def report(name: str, seconds: float, baseline: float | None, device: torch.device, extra: str = "") -> None:
    ratio = "" if baseline is None else f"  ({seconds / baseline:.2f}x bf16 sdpa)"
    print(f"{name:34s} {seconds:8.3f} s/step{ratio}  peak VRAM {_peak_gib(device)}{extra}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (checks the script)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames", type=int, default=193)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-steps", type=int, default=6)
    parser.add_argument("--skip", nargs="*", default=[], choices=["fp8", "backends", "batched", "compile", "cache"])
    args = parser.parse_args(argv)
    if args.tiny:
        args.device = args.device or "cpu"
        args.height, args.width, args.frames = 32, 48, 9
    args.device = args.device or "cuda"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; run with --tiny to check the script on the CPU.")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, clip {args.width}x{args.height}, {args.frames} frames, "
          f"text CFG {TEXT_CFG} (2 passes a step); {'tiny' if args.tiny else 'released'} shapes, random weights",
          flush=True)
    started = time.perf_counter()

    _reset(device)
    bench = Bench(args, torch.bfloat16, "sdpa")
    baseline = bench.step_seconds()
    report("bf16, sdpa", baseline, None, device)
    if "batched" not in args.skip:
        _reset(device)
        report("bf16, sdpa, batched guidance", bench.step_seconds(batch_guidance=True), baseline, device)
    if "cache" not in args.skip:
        for threshold in (0.0, CACHE_THRESHOLD):
            _reset(device)
            seconds, stats = bench.sampling_seconds(threshold)
            report(f"bf16, sdpa, {args.cache_steps} steps, cache {threshold:g}", seconds, baseline, device, f"; {stats}")
    if "compile" not in args.skip:
        _reset(device)
        compile_started = time.perf_counter()
        compile_blocks([bench.video, bench.audio, bench.bridge])
        seconds = bench.step_seconds()  # the warm-up step compiles
        report("bf16, sdpa, compiled blocks", seconds, baseline, device,
               f"; compile + warm-up {time.perf_counter() - compile_started:.0f} s")
    del bench
    if "backends" not in args.skip:
        for backend in [b for b in ("flash", "sage") if b in available_backends()]:
            if device.type != "cuda":
                continue
            _reset(device)
            report(f"bf16, {backend}", Bench(args, torch.bfloat16, backend).step_seconds(), baseline, device)
    if "fp8" not in args.skip:
        _reset(device)
        report("fp8 storage (bf16 compute), sdpa", Bench(args, torch.float8_e4m3fn, "sdpa").step_seconds(),
               baseline, device)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
