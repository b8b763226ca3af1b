"""Benchmark at the released MOVA shapes on the CPU: write a random checkpoint of the real sizes (both 14B
video experts, the audio DiT and the Bridge with fp8 Linear weights, about 33 GB; real VAEs; umT5 cut to one
layer), then load it with ``MovaPipeline.from_pretrained`` and generate a tiny clip, reporting load time,
seconds per model pass, peak RSS and peak anonymous RSS (memory the process holds; memory-mapped weight
pages are file-backed and do not count).

    python benchmarks/bench_real_shapes.py --folder /work/bench-ckpt/mova-real-fp8   # writes it once (~33 GB)

The checkpoint is written tensor by tensor (peak RAM: one tensor), never holding a network in memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import AnonPeak, gib, status_kib  # noqa: E402
from mova_core import presets, tiny  # noqa: E402
from mova_core.audio_vae import DAC  # noqa: E402
from mova_core.bridge import DualTowerBridge  # noqa: E402
from mova_core.dit import DiTTower  # noqa: E402
from mova_core.loading import build_on_meta  # noqa: E402
from mova_core.pack import packed_dtype  # noqa: E402
from mova_core.pipeline import MovaPipeline  # noqa: E402
from mova_core.safetensors_io import TensorEntry, write_streamed  # noqa: E402
from mova_core.text_encoder import UMT5Encoder  # noqa: E402
from mova_core.video_vae import VideoVAE  # noqa: E402

STORAGE = torch.float8_e4m3fn  # Linear weights of the DiTs, Bridge and umT5; everything else bf16
TEXT_ENCODER = dataclasses.replace(presets.TEXT_ENCODER, num_layers=1)
COMPLETE = ".complete"


def _components() -> dict[str, tuple[torch.nn.Module, dict, str]]:
    """name -> (network on the meta device, config.json, weights file name)."""
    weights = tiny.WEIGHTS_FILE
    text_config = {"architectures": ["UMT5EncoderModel"], "model_type": "umt5", "feed_forward_proj": "gated-gelu",
                   **TEXT_ENCODER.to_dict()}
    return {
        "video_dit": (build_on_meta(lambda: DiTTower(presets.VIDEO_DIT)), tiny._config(presets.VIDEO_DIT, "WanModel"), weights),
        "video_dit_2": (build_on_meta(lambda: DiTTower(presets.VIDEO_DIT)), tiny._config(presets.VIDEO_DIT, "WanModel"), weights),
        "audio_dit": (build_on_meta(lambda: DiTTower(presets.AUDIO_DIT)), tiny._config(presets.AUDIO_DIT, "WanAudioModel"), weights),
        "dual_tower_bridge": (build_on_meta(lambda: DualTowerBridge(presets.BRIDGE)),
                              tiny._config(presets.BRIDGE, "DualTowerConditionalBridge"), weights),
        "video_vae": (build_on_meta(lambda: VideoVAE(presets.VIDEO_VAE)),
                      tiny._config(presets.VIDEO_VAE, "AutoencoderKLWan", is_residual=False), weights),
        "audio_vae": (build_on_meta(lambda: DAC(presets.AUDIO_VAE)), tiny._config(presets.AUDIO_VAE, "DAC"), weights),
        "text_encoder": (build_on_meta(lambda: UMT5Encoder(TEXT_ENCODER)), text_config, "model.safetensors"),
    }


def write_checkpoint(root: Path) -> int:
    """Write the random real-shape checkpoint under ``root`` (once; a complete one is reused); returns bytes."""
    if (root / COMPLETE).is_file():
        return sum(f.stat().st_size for f in root.rglob("*.safetensors"))
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    written = 0
    for name, (network, config, weights_file) in _components().items():
        folder = root / name
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        storage = STORAGE if name not in ("video_vae", "audio_vae") else torch.bfloat16
        entries = [TensorEntry(key, packed_dtype(network, key, torch.float32, storage), tuple(tensor.shape),
                               lambda key=key, shape=tensor.shape: tiny._random_tensor(key, shape, generator))
                   for key, tensor in network.state_dict().items()]
        started = time.perf_counter()
        write_streamed(folder / weights_file, entries)
        size = (folder / weights_file).stat().st_size
        written += size
        print(f"wrote {name}: {size / 2**30:.2f} GiB in {time.perf_counter() - started:.0f} s", flush=True)
    if not (root / "tokenizer").exists():
        tiny._write_tokenizer(root / "tokenizer")
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(tiny._config(presets.SCHEDULER, "FlowMatchPairScheduler"), indent=2), encoding="utf-8")
    (root / "model_index.json").write_text(json.dumps(tiny._model_index(0.9), indent=2), encoding="utf-8")
    (root / COMPLETE).write_text("ok", encoding="utf-8")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path("/work/bench-ckpt/mova-real-fp8"))
    parser.add_argument("--steps", type=int, default=3, help="3 steps cross the expert boundary (shift 5)")
    parser.add_argument("--text-cfg", type=float, default=5.0)
    parser.add_argument("--write-only", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a child: its memory is not this process's peak
        size = pool.apply(write_checkpoint, (args.folder,))
    print(f"checkpoint: {size / 2**30:.1f} GiB at {args.folder} ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.write_only:
        return
    torch.manual_seed(0)
    with AnonPeak() as load_peak:
        started = time.perf_counter()
        pipe = MovaPipeline.from_pretrained(args.folder, dtype=STORAGE)
        load_seconds = time.perf_counter() - started
    print(f"load: {load_seconds:.1f} s, peak RSS {gib(status_kib('VmHWM')):.2f} GiB, peak anonymous RSS "
          f"{gib(load_peak.kib):.2f} GiB, RSS now {gib(status_kib('VmRSS')):.2f} GiB "
          f"(file-backed {gib(status_kib('RssFile')):.2f})", flush=True)

    passes: list[float] = []

    def timed(model):
        def call(*args, **kwargs):
            begin = time.perf_counter()
            out = model(*args, **kwargs)
            passes.append(time.perf_counter() - begin)
            print(f"  pass {len(passes)} ({args[0]}): {passes[-1]:.1f} s", flush=True)
            return out
        return call

    import mova_core.pipeline as pipeline_module
    original = pipeline_module._resident
    pipeline_module._resident = lambda model, *rest: timed(original(model, *rest))
    with AnonPeak() as run_peak, torch.inference_mode():
        started = time.perf_counter()
        clip = pipe.generate("a dog barks in the rain", height=32, width=32, num_frames=5, fps=24.0,
                             steps=args.steps, text_cfg=args.text_cfg, seed=0)
        run_seconds = time.perf_counter() - started
    pipeline_module._resident = original
    print(f"generate 32x32, 5 frames, {args.steps} steps, text CFG {args.text_cfg}: {run_seconds:.1f} s, "
          f"{clip.stats}; seconds per model pass: mean {sum(passes) / len(passes):.1f}, "
          f"min {min(passes):.1f}, max {max(passes):.1f}")
    print(f"peak RSS {gib(status_kib('VmHWM')):.2f} GiB, peak anonymous RSS {gib(run_peak.kib):.2f} GiB "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
