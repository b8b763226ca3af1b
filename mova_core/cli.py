"""Command line: ``python -m mova_core demo``, ``generate`` and ``pack``.

Everything the user gives is checked before a model loads (setting ranges, output place, loudness target,
images; the size multiples and frame factor the model demands right after it loads, before any step); a
mistake prints one ``error: ...`` line and exits with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from tqdm import tqdm

from .conditioning import to_image_tensor
from .media import LoudnessTarget
from .lora import LoraStrengths
from .media.audio_input import read_audio_file
from .media.files import writable_folder_problem
from .pack import pack_checkpoint
from .pipeline import DRIVING_MODES, OFFICIAL_NEGATIVE_PROMPT, MovaPipeline
from .sampler import StepInfo
from .settings import DEFAULTS, GenerationSettings, geometry_problem, settings_problems
from .tiny import cached_tiny_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float8_e4m3fn": torch.float8_e4m3fn}
DEMO_PROMPT = "A woman sings on the beach at night while the waves crash; the audio shows her voice and the sea."
CLIP_NAME = "clip.mp4"  # the file name a folder given to --out receives (numbered when taken)
USAGE_ERROR = 2  # exit status of a refused command line, as argparse uses
OPTION_NAMES = {"height": "--height", "width": "--width", "num_frames": "--frames", "fps": "--fps", "steps": "--steps",
                "text_cfg": "--text-cfg", "bridge_cfg": "--bridge-cfg", "seed": "--seed"}


def _add_sampling_arguments(parser: argparse.ArgumentParser, *, height: int, width: int, frames: int,
                            steps: int) -> None:
    parser.add_argument("--out", default=CLIP_NAME,
                        help=f"output .mp4, or a folder (existing, or ending in /) to write {CLIP_NAME} into; an "
                             "existing file is never overwritten (a numbered name is used)")
    parser.add_argument("--height", type=int, default=height)
    parser.add_argument("--width", type=int, default=width)
    parser.set_defaults(default_frames=frames)
    parser.add_argument("--frames", type=int, default=None,
                        help=f"number of frames, 4k+1 (default {frames}, or with --audio the fewest covering it)")
    parser.add_argument("--fps", type=float, default=DEFAULTS.fps)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--text-cfg", type=float, default=DEFAULTS.text_cfg)
    parser.add_argument("--bridge-cfg", type=float, default=DEFAULTS.bridge_cfg,
                        help="1.0 = the released model's text CFG only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loudness", type=float, default=None, metavar="LUFS",
                        help="normalise the soundtrack to this integrated loudness (off by default, as officially)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mova_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate a short clip with a tiny random model in the official layout")
    _add_sampling_arguments(demo, height=64, width=112, frames=25, steps=8)
    demo.add_argument("--prompt", default=DEMO_PROMPT)
    demo.add_argument("--cache", type=Path, default=None, help="where the tiny model is kept (default ~/.cache/mova_core)")

    generate = commands.add_parser("generate", help="generate a clip with an official MOVA folder")
    _add_sampling_arguments(generate, height=DEFAULTS.height, width=DEFAULTS.width, frames=DEFAULTS.num_frames,
                            steps=DEFAULTS.steps)
    generate.add_argument("--model", type=Path, required=True,
                          help="MOVA folder (holds model_index.json) or packed MOVA .safetensors file")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--negative-prompt", default=OFFICIAL_NEGATIVE_PROMPT)
    generate.add_argument("--image", type=Path, default=None, help="first frame (I2VA); omit for T2VA")
    generate.add_argument("--last-image", type=Path, default=None, help="last frame (first + last frame; needs --image)")
    generate.add_argument("--audio", type=Path, default=None,
                          help="drive the picture with this sound (voice-over, song); without --frames the clip "
                               "covers it")
    generate.add_argument("--audio-mode", choices=DRIVING_MODES, default="freeze",
                          help="freeze: the sound is kept as given; strength: it is re-generated from --audio-strength")
    generate.add_argument("--audio-strength", type=float, default=None,
                          help="with --audio-mode strength: 0 = kept, 1 = from noise (default 1)")
    generate.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                          help="apply a LoRA (repeatable; strength 1 by default, on every component)")
    generate.add_argument("--cache-threshold", type=float, default=0.0,
                          help="step cache: reuse model passes predicted to change less than this (0 = off, exact; "
                               "e.g. 0.05)")
    generate.add_argument("--batch-guidance", action="store_true",
                          help="run the positive and negative passes as one batch (more memory, fewer calls)")
    generate.add_argument("--compile", action="store_true",
                          help="torch.compile every DiT block and Bridge layer (slower start, faster steps)")
    generate.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    generate.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    generate.add_argument("--offload", action="store_true",
                          help="keep weights in host memory; only the networks in use go to the device")

    pack = commands.add_parser("pack", help="pack a MOVA folder into one .safetensors file (loads like the folder)")
    pack.add_argument("--model", type=Path, required=True, help="MOVA folder (holds model_index.json)")
    pack.add_argument("--out", type=Path, required=True, help="the .safetensors file to write (never overwritten)")
    pack.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                      help="convert the weights (float8_e4m3fn: Linear weights of the DiTs, Bridge and umT5; the rest "
                           "bfloat16); default: keep the folder's dtypes")
    pack.add_argument("--no-text-encoder", action="store_true",
                      help="leave umT5 and its tokenizer out (encode prompts with ComfyUI's CLIPLoader(type='wan'))")
    pack.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def clip_path(out: str) -> Path:
    """Where ``--out`` puts the clip: into a folder (existing, or written with a trailing slash) as a numbered
    :data:`CLIP_NAME`, else the ``.mp4`` file named; ValueError when it cannot be written there."""
    path = Path(out)
    if path.is_dir() or out.endswith(("/", os.sep)):
        path = path / CLIP_NAME
    elif path.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: the clip is an MP4 (H.264 video + AAC audio); give a file name ending in "
                         ".mp4, or a folder (an existing one, or one ending in /).")
    problem = writable_folder_problem(path.parent)
    if problem:
        raise ValueError(f"--out {out}: {problem}; choose another place.")
    return path


def clip_settings(args: argparse.Namespace) -> GenerationSettings:
    """The sampling options as settings, checked against their documented ranges (NaN and infinities
    included) before any model loads; errors name the options."""
    frames = args.frames if args.frames is not None or getattr(args, "audio", None) else args.default_frames
    settings = GenerationSettings(height=args.height, width=args.width, num_frames=frames, fps=args.fps,
                                  steps=args.steps, text_cfg=args.text_cfg, bridge_cfg=args.bridge_cfg, seed=args.seed)
    problems = settings_problems(settings, OPTION_NAMES)
    if problems:
        raise ValueError(" ".join(problems))
    return settings


def loudness_target(lufs: float | None) -> LoudnessTarget | None:
    """``--loudness`` as a checked target (None: no normalisation)."""
    try:
        return None if lufs is None else LoudnessTarget(lufs=lufs)
    except ValueError as error:
        raise ValueError(f"--loudness {lufs:g}: {error}") from None


def open_image(file: Path | None, option: str) -> Image.Image | None:
    """The picture given to ``option``, checked now (a bad file fails before the model loads)."""
    if file is None:
        return None
    try:
        image = Image.open(file)
        image.load()
    except (OSError, ValueError) as error:
        raise ValueError(f"{option} {file}: not a readable image ({error}).") from None
    to_image_tensor(image, name=option)
    return image


class _LateBar:
    """A tqdm bar opened on first use, so it appears only once the command's checks have passed; closed on exit."""

    def __init__(self, **options: object):
        self.options = options
        self.bar: tqdm | None = None

    def __enter__(self) -> "_LateBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def get(self) -> tqdm:
        if self.bar is None:
            self.bar = tqdm(**self.options)
        return self.bar


def _pack(args: argparse.Namespace) -> Path:
    with _LateBar(desc="packing", unit="B", unit_scale=True, unit_divisor=1024) as late:
        def on_progress(done: int, total: int) -> None:
            bar = late.get()
            bar.total = total
            bar.update(done - bar.n)

        return pack_checkpoint(args.model, args.out, dtype=None if args.dtype is None else DTYPES[args.dtype],
                               include_text_encoder=not args.no_text_encoder, progress=on_progress)


def _run(pipe: MovaPipeline, args: argparse.Namespace, settings: GenerationSettings, out: Path,
         loudness: LoudnessTarget | None, *, negative_prompt: str, image: object = None, **options: object) -> Path:
    problem = geometry_problem(settings, pipe.geometry, OPTION_NAMES)  # what the loaded model demands of the size
    if problem:
        raise ValueError(problem)
    with _LateBar(total=settings.steps, desc="denoising", unit="step") as late:
        def on_step(info: StepInfo) -> None:
            late.get().set_postfix(t=f"{info.video_timestep:.0f}", expert=info.expert)
            late.get().update(1)

        result = pipe.generate(args.prompt, negative_prompt=negative_prompt, image=image, height=settings.height,
                               width=settings.width, num_frames=settings.num_frames, fps=settings.fps,
                               steps=settings.steps, text_cfg=settings.text_cfg, bridge_cfg=settings.bridge_cfg,
                               seed=settings.seed, callback=on_step, **options)
    if options.get("cache_threshold"):
        print(f"step cache: {result.stats}")
    return result.save(out, loudness=loudness)


def _command(args: argparse.Namespace) -> Path:
    """Run the chosen command; the path written."""
    if args.command == "pack":
        return _pack(args)
    settings, out, loudness = clip_settings(args), clip_path(args.out), loudness_target(args.loudness)
    if args.command == "demo":
        pipe = MovaPipeline.from_pretrained(cached_tiny_checkpoint(args.cache), dtype=torch.float32)
        return _run(pipe, args, settings, out, loudness, negative_prompt="")
    image, last_image = open_image(args.image, "--image"), open_image(args.last_image, "--last-image")
    driving = _driving_audio(args)
    loras = [_lora_option(option) for option in args.lora]
    if not (math.isfinite(args.cache_threshold) and 0.0 <= args.cache_threshold <= 1.0):
        raise ValueError(f"--cache-threshold {args.cache_threshold:g}: give a number from 0 (off) to 1.")
    pipe = MovaPipeline.from_pretrained(args.model, dtype=DTYPES[args.dtype], device=args.device, offload=args.offload,
                                        compile=args.compile)
    for file, strength in loras:
        pipe.add_lora(file, LoraStrengths(strength, strength, strength, strength))
    return _run(pipe, args, settings, out, loudness, negative_prompt=args.negative_prompt, image=image,
                last_image=last_image, cache_threshold=args.cache_threshold, batch_guidance=args.batch_guidance,
                **driving)


def _driving_audio(args: argparse.Namespace) -> dict[str, object]:
    """``--audio`` read now (a bad file fails before the model loads) as ``generate`` options."""
    if args.audio is None:
        if args.audio_strength is not None or args.audio_mode != "freeze":
            raise ValueError("--audio-mode and --audio-strength need --audio (the sound that drives the picture).")
        return {}
    try:
        audio = read_audio_file(args.audio)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"--audio {args.audio}: {str(error).removeprefix('audio: ')}") from None
    return {"audio": audio, "audio_mode": args.audio_mode, "audio_strength": args.audio_strength}


def _lora_option(option: str) -> tuple[Path, float]:
    """``--lora FILE[:STRENGTH]`` checked: the file exists and the strength is a finite number."""
    file, _, strength = option.rpartition(":") if ":" in option else (option, "", "1")
    try:
        value = float(strength)
    except ValueError:
        value = float("nan")
    if not file or not math.isfinite(value):
        raise ValueError(f"--lora {option}: give FILE or FILE:STRENGTH with a finite strength, e.g. style.safetensors:0.8.")
    if not Path(file).exists():
        raise ValueError(f"--lora {option}: {file} does not exist.")
    return Path(file), value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        path = _command(args)
    except (ValueError, OSError) as error:  # bad input or files: one line, unless --debug
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
