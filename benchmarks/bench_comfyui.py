"""The released-shape benchmark inside ComfyUI ``--cpu``: start a private ComfyUI with this pack, link a MOVA
checkpoint (e.g. the random released-shape one written by ``bench_real_shapes.py``) as ``models/mova/<name>``,
queue one loader -> text encode -> sampler -> decode -> mux workflow at a tiny clip (one model pass by default)
and sample the server process's ``/proc/<pid>/status`` while it runs: time to the end of the run, peak RSS
(``VmHWM``) and peak anonymous RSS (the highest ``RssAnon`` sampled; memory-mapped weight pages are
file-backed and do not count in it).

    python benchmarks/bench_comfyui.py --comfyui /path/to/ComfyUI --python /path/to/comfy-venv/bin/python \\
        --model /work/bench-ckpt/mova-real-fp8

Only the standard library is needed in the calling interpreter; ComfyUI runs under ``--python``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memory import AnonPeak, gib, status_kib  # noqa: E402  (benchmarks/, beside this script)
from tests.integration.comfy_server import ComfyServer  # noqa: E402  (standard library only)

MODEL_NAME = "bench-mova"


def workflow(args: argparse.Namespace) -> dict:
    """API prompt: MOVAModelLoader -> MOVATextEncode -> MOVASampler -> MOVADecode -> MOVAAVMux."""
    return {
        "1": {"class_type": "MOVAModelLoader", "inputs": {
            "model_name": MODEL_NAME, "weight_dtype": args.weight_dtype, "attention": "comfy"}},
        "2": {"class_type": "MOVATextEncode", "inputs": {"mova_model": ["1", 0], "text": "a dog barks in the rain"}},
        "3": {"class_type": "MOVASampler", "inputs": {
            "mova_model": ["1", 0], "positive": ["2", 0], "width": args.width, "height": args.height,
            "frames": args.frames, "fps": 24.0, "steps": args.steps, "seed": 0, "text_cfg": args.text_cfg,
            "bridge_cfg": args.bridge_cfg, "video_shift": 0.0, "audio_shift": 0.0, "boundary": -1.0}},
        "4": {"class_type": "MOVADecode", "inputs": {
            "mova_model": ["1", 0], "video_latent": ["3", 0], "audio_latent": ["3", 1], "normalize_loudness": False,
            "target_lufs": -16.0, "tiled_decode": False, "tile_size": 256, "tile_overlap": 64}},
        "5": {"class_type": "MOVAAVMux", "inputs": {
            "images": ["4", 0], "audio": ["4", 1], "fps": ["4", 2], "filename_prefix": "bench", "crf": 0}},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (main.py)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with ComfyUI's requirements")
    parser.add_argument("--model", type=Path, required=True, help="MOVA folder or packed file to link")
    parser.add_argument("--weight-dtype", default="fp8_e4m3fn", choices=("bf16", "fp16", "fp8_e4m3fn", "fp32"))
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--text-cfg", type=float, default=1.0, help="1 = no negative pass")
    parser.add_argument("--bridge-cfg", type=float, default=1.0, help="1 = no bridge-off pass")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between /proc samples")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--run-timeout", type=float, default=3600.0)
    parser.add_argument("--base-dir", type=Path, default=None, help="ComfyUI base directory (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mova-bench-comfy-") as tmp:
        base = args.base_dir or Path(tmp)
        server = ComfyServer(args.comfyui, args.python, base, REPO)
        server.link_model("mova", args.model, MODEL_NAME)
        started = time.perf_counter()
        server.start(args.start_timeout)
        pid = server.process.pid
        idle = {"rss": status_kib("VmRSS", pid), "anon": status_kib("RssAnon", pid)}
        print(f"ComfyUI --cpu up in {time.perf_counter() - started:.1f} s (pid {pid}): RSS {gib(idle['rss']):.2f} GiB, "
              f"anonymous {gib(idle['anon']):.2f} GiB", flush=True)
        try:
            with AnonPeak(args.interval, pid) as anon_peak:
                started = time.perf_counter()
                entry = server.run_workflow(workflow(args), args.run_timeout)
                seconds = time.perf_counter() - started
            peak_rss = status_kib("VmHWM", pid)  # the kernel's own peak: exact, no sampling needed
            anon_end = status_kib("Anonymous", pid, "smaps_rollup")
            log = server.log_text()
        finally:
            server.stop()
    result = {
        "clip": f"{args.width}x{args.height}, {args.frames} frames, {args.steps} steps, text_cfg {args.text_cfg}, "
                f"bridge_cfg {args.bridge_cfg}, {args.weight_dtype}",
        "run_seconds": round(seconds, 1),
        "idle_rss_gib": round(gib(idle["rss"]), 2), "idle_anon_gib": round(gib(idle["anon"]), 2),
        "peak_rss_gib": round(gib(peak_rss), 2), "peak_anon_gib": round(gib(anon_peak.kib), 2),
        "anon_at_end_gib": round(gib(anon_end), 2),
        "status": entry["status"].get("status_str"),
    }
    mova_lines = [line for line in log.splitlines() if "MOVA" in line or "Prompt executed" in line]
    print("\n".join(mova_lines[-10:]))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
