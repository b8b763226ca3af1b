"""Benchmark: load a MOVA denoiser (both experts, audio DiT, bridge) and time one guided joint step.

Prints wall times and peak RSS, and the ratios that matter:
  * load peak RSS growth / bytes of the checkpoint files read (streaming target: at most about 1.0;
    weights whose dtype needs no conversion stay memory-mapped, so the growth is smaller);
  * one step with text CFG (2 passes) and with text + bridge CFG (3 passes) relative to one pass.

    python benchmarks/bench_denoiser.py                       # a random checkpoint, medium size
    python benchmarks/bench_denoiser.py --model /models/MOVA-360p --dtype bfloat16 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mova_core import tiny  # noqa: E402
from mova_core.bridge import load_bridge  # noqa: E402
from mova_core.config import DiTConfig, ModelIndex  # noqa: E402
from mova_core.dit import load_dit  # noqa: E402
from mova_core.pipeline import velocity_model  # noqa: E402
from mova_core.sampler import HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, Guidance  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float8_e4m3fn": torch.float8_e4m3fn}
DENOISER = (HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT, "audio_dit", "dual_tower_bridge")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def scaled_checkpoint(folder: Path, scale: int) -> Path:
    """A random checkpoint whose widths are ``scale`` times the tiny demo model's."""
    def wider(config: DiTConfig) -> DiTConfig:
        return dataclasses.replace(config, dim=config.dim * scale, ffn_dim=config.ffn_dim * scale,
                                   num_heads=config.num_heads * scale, num_layers=4)

    video, audio = wider(tiny.VIDEO_DIT), wider(tiny.AUDIO_DIT)
    bridge = dataclasses.replace(tiny.BRIDGE, visual_layers=4, audio_layers=4, visual_hidden_dim=video.dim,
                                 audio_hidden_dim=audio.dim)
    return tiny.write_tiny_checkpoint(folder, video_dit=video, audio_dit=audio, bridge=bridge)


def file_bytes(root: Path, names: tuple[str, ...]) -> int:
    return sum(f.stat().st_size for name in names for f in (root / name).glob("*.safetensors"))


def weight_bytes(modules: dict[str, torch.nn.Module]) -> int:
    return sum(t.numel() * t.element_size() for m in modules.values() for t in m.state_dict().values())


def time_step(model, guidance: Guidance, video, audio, context, t, device, repeats: int) -> float:
    """Seconds per guided step (mean over ``repeats`` after one warm-up)."""
    for attempt in range(repeats + 1):
        if attempt == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        for step_pass in guidance.passes:
            model(HIGH_NOISE_EXPERT, video, audio, context, t, t, bridge=step_pass.bridge)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="MOVA folder; default: a random checkpoint (see --scale)")
    parser.add_argument("--scale", type=int, default=8, help="width multiplier of the random checkpoint")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dtype, device = DTYPES[args.dtype], torch.device(args.device)

    with tempfile.TemporaryDirectory() as scratch:
        root = args.model
        if root is None:  # written by a child process so its memory does not count as load memory
            root = Path(scratch) / "model"
            writer = multiprocessing.get_context("spawn").Process(target=scaled_checkpoint, args=(root, args.scale))
            writer.start()
            writer.join()
        rss_before = peak_rss_bytes()
        started = time.perf_counter()
        modules = {name: (load_bridge if name == "dual_tower_bridge" else load_dit)(root / name, dtype=dtype,
                                                                                   device=device)
                   for name in DENOISER}
        load_seconds = time.perf_counter() - started
        load_rss = peak_rss_bytes() - rss_before
        loaded = weight_bytes(modules)
        source = file_bytes(root, DENOISER)

        video_dit, audio_dit = modules[HIGH_NOISE_EXPERT], modules["audio_dit"]
        boundary = ModelIndex.from_file(root / "model_index.json").boundary_timestep
        frames, h, w = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
        audio_len = (int(48000 * args.frames / args.fps) - 1) // 960 + 1
        generator = torch.Generator().manual_seed(0)
        latent_channels = video_dit.config.out_dim
        video = torch.randn(1, latent_channels, frames, h, w, generator=generator).to(device)
        condition = torch.randn(1, video_dit.config.in_dim - latent_channels, frames, h, w, generator=generator)
        audio = torch.randn(1, audio_dit.config.in_dim, audio_len, generator=generator).to(device)
        context = torch.randn(1, 512, video_dit.config.text_dim, generator=generator).to(device)
        t = torch.tensor([boundary + 10.0], device=device)
        model = velocity_model({HIGH_NOISE_EXPERT: video_dit, LOW_NOISE_EXPERT: modules[LOW_NOISE_EXPERT]},
                               audio_dit, modules["dual_tower_bridge"], condition.to(device), args.fps)
        with torch.inference_mode():
            timings = {name: time_step(model, guidance, video, audio, context, t, device, args.repeats)
                       for name, guidance in (("1 pass (no CFG)", Guidance(1.0, 1.0)),
                                              ("text CFG (2 passes)", Guidance(5.0, 1.0)),
                                              ("text + bridge CFG (3 passes)", Guidance(5.0, 2.0)))}

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"dtype {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load: {load_seconds:.2f} s, checkpoint files {source / 2**20:.1f} MiB, loaded weights "
          f"{loaded / 2**20:.1f} MiB, peak RSS growth {load_rss / 2**20:.1f} MiB ({load_rss / source:.2f}x the files)")
    single = timings["1 pass (no CFG)"]
    for name, seconds in timings.items():
        print(f"step, {name}: {seconds * 1000:.1f} ms ({seconds / single:.2f}x one pass)")
    print(f"peak RSS {peak_rss_bytes() / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
