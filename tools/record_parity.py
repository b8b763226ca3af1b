#!/usr/bin/env python3
"""Record a parity reference folder from the official OpenMOSS/MOVA implementation.

The folder has the layout of ``tests/data/parity/*`` (and of the shared ``tiny-a`` folder):

    <out>/README.md            what was recorded, with the configuration
    <out>/manifest.json        configuration, load check, library versions, sha256 of every file
    <out>/checkpoint/          a tiny randomly initialised MOVA in the official folder layout,
                               written by the official classes' own ``save_pretrained``
    <out>/refs/*.safetensors   inputs and outputs of the official code run on that checkpoint
    <out>/refs/*.json          the scalar settings of each reference file
    <out>/refs/flf_condition.* the official first+last-frame condition (not in tiny-a's set; see
                               ``record_flf_condition``)

Run it with a Python environment that can import the official code (``mova`` from
github.com/OpenMOSS/MOVA) with torch 2.13.0 (CPU), diffusers 0.39.0 and transformers 4.57.6;
see the README section "Faithfulness: parity tests" for the exact commands:

    python tools/record_parity.py --preset tiny-d --out tests/data/parity/tiny-d \
        --official /work/official-mova

or ``--config my.json`` (a JSON object with the same keys as a preset; ``--preset`` can be
combined with it to start from a preset and override some keys).

Everything runs in float32 on the CPU with one thread and deterministic algorithms. All references
are computed with the pipeline *re-loaded* through ``MOVA.from_pretrained`` (as the official
inference script loads it), never with the in-memory objects that were saved.

Import shims (only where the official package imports something that cannot be installed beside
torch 2.13.0 CPU and that no inference path uses): ``torchvision`` (``pil_to_tensor``, imported by
the training base pipeline) and ``audiotools`` (``AudioSignal``, used only by the DAC's file
compression helpers; ``BaseModel`` is loaded from the installed descript-audiotools source file
itself, because ``audiotools/__init__`` needs torchaudio). ``crop_and_resize`` is loaded from
``mova/datasets/transforms/custom.py`` directly because ``mova.datasets`` imports torchvision.
Nothing that computes a recorded number is replaced.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import importlib.machinery
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable

SCRIPT_VERSION = 2
MAX_SEQUENCE_LENGTH = 512

# ----------------------------------------------------------------------------------------------
# Configurations. Keys follow tiny-a's manifest "config" (plus a few settings tiny-a fixed).

PRESETS: dict[str, dict[str, Any]] = {
    # 44.1 kHz DAC with hop 735 (rates 3*5*7*7, 60 latents/s), a non-square video patch, odd head
    # counts everywhere, more video than audio layers with the "custom" strategy (bridges at layers
    # 0 and 2 only, video layer 3 without bridge), shift 3, boundary 0.85, 25 fps, 5 steps.
    "tiny-d": {
        "seed": 20260214,
        "boundary_ratio": 0.85,
        "scheduler": {"shift": 3.0, "extra_one_step": False},
        "video_dit": {"dim": 36, "num_heads": 3, "ffn_dim": 72, "num_layers": 4, "freq_dim": 24,
                      "patch_size": [1, 2, 1]},
        "audio_dit": {"dim": 18, "num_heads": 3, "ffn_dim": 40, "num_layers": 3, "freq_dim": 16,
                      "patch_size": [1]},
        "bridge": {"head_dim": 6, "interaction_strategy": "custom", "audio_fps": 60.0,
                   "apply_cross_rope": True, "apply_first_frame_bias_in_rope": False,
                   "pooled_adaln": False, "trainable_condition_scale": False},
        "audio_vae": {"sample_rate": 44100, "encoder_dim": 2, "encoder_rates": [3, 5, 7, 7],
                      "latent_dim": 24, "decoder_dim": 32, "decoder_rates": [7, 7, 5, 3]},
        "video_vae": {"base_dim": 4, "z_dim": 12, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1,
                      "attn_scales": [], "temperal_downsample": [False, True, True]},
        "text": {"d_model": 16, "num_heads": 3, "d_kv": 6, "d_ff": 40, "num_layers": 2,
                 "relative_attention_num_buckets": 16, "relative_attention_max_distance": 64,
                 "extra_vocab": 3},
        "tokenizer": {
            "words": ["red", "fox", "and", "an", "old", "owl", "sing", "at", "dawn", "the", "river",
                      "hums", "softly", "caf\u00e9", "by", "A", "The", "water", "light"],
            "cjk": "\u753b\u9762\u5b57\u5e55\u6700\u5dee\u624b\u6307",
        },
        "prompt": "A  red fox &amp; an old owl sing at dawn by the caf\u00c3\u00a9.\n\t The river hums &lt;softly&gt;!  ",
        "run": {"height": 32, "width": 48, "num_frames": 9, "video_fps": 25.0, "joint_fps": [25.0, 10.0],
                "num_inference_steps": 5, "source_image_hw": [50, 60],
                "dit_timesteps": [961.25, 210.5], "joint_timesteps": [887.5, 655.0]},
        # first+last-frame condition at the run's H x W: a wider first and a taller last picture
        "flf": {"frame_counts": [5, 9, 13], "first_source_hw": [37, 71], "last_source_hw": [58, 41]},
        "scheduler_refs": {"settings": [[5, 3.0], [4, 3.0], [9, 3.0], [50, 3.0], [6, 1.5]],
                           "dual": {"steps": 7, "visual_shift": 3.0, "audio_shift": 1.5}},
    },
    # 24 kHz DAC with hop 480 (rates 2*4*6*10, 50 latents/s), square patch, portrait video of 9
    # frames at 16 fps, "shallow_focus" strategy (bridge at layer 0 only), a umT5 whose inner width
    # differs from d_model, shift 7 with extra_one_step, boundary 0.8, 3 steps, a Wan VAE of base_dim 3.
    "tiny-e": {
        "seed": 20260215,
        "boundary_ratio": 0.8,
        "scheduler": {"shift": 7.0, "extra_one_step": True},
        "video_dit": {"dim": 48, "num_heads": 8, "ffn_dim": 56, "num_layers": 3, "freq_dim": 20,
                      "patch_size": [1, 2, 2]},
        "audio_dit": {"dim": 36, "num_heads": 2, "ffn_dim": 64, "num_layers": 3, "freq_dim": 28,
                      "patch_size": [1]},
        "bridge": {"head_dim": 12, "interaction_strategy": "shallow_focus", "audio_fps": 50.0,
                   "apply_cross_rope": True, "apply_first_frame_bias_in_rope": False,
                   "pooled_adaln": False, "trainable_condition_scale": False},
        "audio_vae": {"sample_rate": 24000, "encoder_dim": 2, "encoder_rates": [2, 4, 6, 10],
                      "latent_dim": 16, "decoder_dim": 32, "decoder_rates": [10, 6, 4, 2]},
        "video_vae": {"base_dim": 3, "z_dim": 8, "dim_mult": [1, 2, 3, 3], "num_res_blocks": 1,
                      "attn_scales": [], "temperal_downsample": [False, True, True]},
        "text": {"d_model": 12, "num_heads": 2, "d_kv": 8, "d_ff": 36, "num_layers": 3,
                 "relative_attention_num_buckets": 24, "relative_attention_max_distance": 20,
                 "extra_vocab": 1},
        "tokenizer": {
            "words": ["rain", "taps", "on", "a", "tin", "roof", "dog", "barks", "twice", "and",
                      "thunder", "rolls", "far", "away", "Rain", "night", "street"],
            "cjk": "\u8272\u8c03\u4f4e\u8d28\u91cf\u9759\u6001",
        },
        "prompt": "Rain taps on a tin roof;   a dog barks twice &amp;amp; thunder rolls far away!!\r\n",
        "run": {"height": 48, "width": 32, "num_frames": 9, "video_fps": 16.0, "joint_fps": [16.0, 30.0],
                "num_inference_steps": 3, "source_image_hw": [40, 44],
                "dit_timesteps": [990.0, 47.75], "joint_timesteps": [933.5, 702.25]},
        "flf": {"frame_counts": [5, 9, 13], "first_source_hw": [45, 52], "last_source_hw": [83, 39]},
        "scheduler_refs": {"settings": [[3, 7.0], [4, 7.0], [8, 7.0], [50, 7.0], [5, 2.0]],
                           "dual": {"steps": 5, "visual_shift": 7.0, "audio_shift": 3.0}},
    },
}

NEGATIVE_PROMPT_FALLBACK = None  # read from the official scripts/inference_single.py


# ----------------------------------------------------------------------------------------------
# Official code import (with the minimal shims described in the module docstring)


def _spec_module(name: str, package: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)
    if package:
        module.__path__ = []
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    return module


def install_import_shims() -> list[str]:
    """Shims for imports the inference code never calls into; returns what was shimmed."""
    shimmed = []
    # diffusers / transformers decide library availability when first imported: import them
    # before any placeholder module appears in sys.modules.
    import diffusers  # noqa: F401
    import diffusers.utils.import_utils  # noqa: F401
    import transformers  # noqa: F401
    import transformers.utils.import_utils  # noqa: F401

    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:
        tv, tvt, tvf = (_spec_module("torchvision", True), _spec_module("torchvision.transforms", True),
                        _spec_module("torchvision.transforms.functional"))

        def pil_to_tensor(*_args, **_kwargs):
            raise RuntimeError("torchvision is shimmed by record_parity.py (training-only helper)")

        tvf.pil_to_tensor = pil_to_tensor
        tv.transforms, tvt.functional = tvt, tvf
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tvt,
                            "torchvision.transforms.functional": tvf})
        shimmed.append("torchvision.transforms.functional.pil_to_tensor (training base pipeline only)")

    try:
        import audiotools  # noqa: F401
    except Exception:
        spec = importlib.machinery.PathFinder.find_spec("audiotools")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("descript-audiotools is needed for audiotools.ml.BaseModel: "
                             "pip install --no-deps descript-audiotools")
        base_file = Path(list(spec.submodule_search_locations)[0]) / "ml" / "layers" / "base.py"
        base_spec = importlib.util.spec_from_file_location("audiotools.ml.layers.base", base_file)
        base = importlib.util.module_from_spec(base_spec)
        base_spec.loader.exec_module(base)
        package, ml = _spec_module("audiotools", True), _spec_module("audiotools.ml", True)

        class AudioSignal:  # only the DAC's file compression helpers use it
            def __init__(self, *_args, **_kwargs):
                raise RuntimeError("audiotools.AudioSignal is shimmed by record_parity.py")

        package.AudioSignal, package.ml, ml.BaseModel = AudioSignal, ml, base.BaseModel
        sys.modules.update({"audiotools": package, "audiotools.ml": ml})
        shimmed.append(f"audiotools (AudioSignal placeholder; BaseModel from {base_file.name} of descript-audiotools)")
    return shimmed


class Official:
    """Handles to the official classes and functions."""

    def __init__(self, root: Path):
        self.root = root
        sys.path.insert(0, str(root))
        self.shims = install_import_shims()
        import mova
        from mova.diffusion.models.dac_vae import DAC
        from mova.diffusion.models.interactionv2 import DualTowerConditionalBridge
        from mova.diffusion.models.wan_audio_dit import WanAudioModel
        from mova.diffusion.models.wan_video_dit import WanModel
        from mova.diffusion.pipelines import pipeline_mova
        from mova.diffusion.pipelines.pipeline_mova import MOVA, prompt_clean
        from mova.diffusion.schedulers.flow_match_pair import FlowMatchPairScheduler

        self.mova = mova
        self.DAC, self.Bridge, self.WanAudioModel, self.WanModel = DAC, DualTowerConditionalBridge, WanAudioModel, WanModel
        self.pipeline_module, self.MOVA, self.prompt_clean = pipeline_mova, MOVA, prompt_clean
        self.Scheduler = FlowMatchPairScheduler
        try:
            from mova.diffusion.pipelines.mova_lora import MOVALoRA
            self.MOVALoRA, self.lora_error = MOVALoRA, None
        except Exception as error:  # optional check only
            self.MOVALoRA, self.lora_error = None, f"{type(error).__name__}: {error}"
        custom = root / "mova" / "datasets" / "transforms" / "custom.py"
        spec = importlib.util.spec_from_file_location("mova_official_custom_transforms", custom)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.crop_and_resize = module.crop_and_resize
        self.negative_prompt = self._script_constant("NEGATIVE_PROMPT")

    def _script_constant(self, name: str) -> str:
        tree = ast.parse((self.root / "scripts" / "inference_single.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
        raise SystemExit(f"{name} not found in scripts/inference_single.py")

    def source_digest(self) -> str:
        """sha256 over ``relative path NUL content NUL`` of every mova/**/*.py, sorted by path."""
        digest = hashlib.sha256()
        for path in sorted((self.root / "mova").rglob("*.py")):
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()

    def commit(self) -> str | None:
        if os.environ.get("MOVA_OFFICIAL_COMMIT"):
            return os.environ["MOVA_OFFICIAL_COMMIT"]
        try:
            return subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip() or None
        except Exception:
            return None


# ----------------------------------------------------------------------------------------------
# Seeded draws


def generator(seed: int, *tags: Any):
    import torch

    text = "/".join(str(t) for t in (seed, *tags))
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.Generator().manual_seed(value)


def randn(seed: int, tag: str, shape, scale: float = 1.0):
    import torch

    return torch.randn(tuple(shape), generator=generator(seed, "input", tag), dtype=torch.float32) * scale


def uniform(seed: int, tag: str, shape, low: float, high: float):
    import torch

    return torch.rand(tuple(shape), generator=generator(seed, "input", tag), dtype=torch.float32) * (high - low) + low


# Matrix gain per component. The random Wan VAE decoder with gain 1 is chaotic: rounding its weights
# to bf16 moves the decoded frames by more than 0.1 (in the official code too), and many pixels clip.
MATRIX_GAIN = {"video_vae": 0.6}


def init_weights(module, seed: int, component: str) -> None:
    """Fill every parameter from its own generator, seeded by (seed, component, parameter name)."""
    import torch
    from torch import nn

    norm_params, embedding_params = set(), set()
    for sub in module.modules():
        kind = type(sub).__name__.lower()
        if isinstance(sub, (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)) or "norm" in kind:
            norm_params.update(id(p) for p in sub.parameters(recurse=False))
        if isinstance(sub, nn.Embedding):
            embedding_params.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for name, param in module.named_parameters():
            g = generator(seed, "weights", component, name)
            leaf = name.rsplit(".", 1)[-1]
            normal = torch.randn(param.shape, generator=g, dtype=torch.float32)
            if id(param) in embedding_params:
                value = 0.5 * normal
            elif id(param) in norm_params:
                value = 0.1 * normal if "bias" in leaf else 1.0 + 0.1 * normal
            elif leaf == "alpha":  # Snake
                value = 1.0 + 0.25 * torch.rand(param.shape, generator=g, dtype=torch.float32)
            elif leaf == "weight_g":  # legacy weight norm magnitude
                value = 0.7 * (1.0 + 0.1 * normal)
            elif leaf == "modulation":
                value = normal / math.sqrt(param.shape[-1])
            elif leaf == "probe":
                value = 0.5 * normal
            elif param.ndim == 1 or "bias" in leaf:
                value = 0.1 * normal
            else:
                fan_in = param.numel() // param.shape[0]
                value = MATRIX_GAIN.get(component, 1.0) * normal / math.sqrt(fan_in)
            param.copy_(value.to(param.dtype))


# ----------------------------------------------------------------------------------------------
# Tokenizer: a hand-written sentencepiece Unigram model converted by transformers

PUNCTUATION = ".,!?;:'\"-&<>()/"


def tokenizer_pieces(cfg: dict) -> list[tuple[str, float, str]]:
    pieces = [("<pad>", 0.0, "CONTROL"), ("</s>", 0.0, "CONTROL"), ("<unk>", 0.0, "UNKNOWN"), ("\u2581", -2.5, "NORMAL")]
    singles = list("abcdefghijklmnopqrstuvwxyz") + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + list("0123456789")
    singles += list(PUNCTUATION) + list(cfg["cjk"])
    seen = {p for p, _, _ in pieces}
    for i, char in enumerate(singles):
        if char not in seen:
            pieces.append((char, -9.0 - 0.01 * i, "NORMAL"))
            seen.add(char)
    for i, word in enumerate(cfg["words"]):
        piece = "\u2581" + word
        if piece not in seen:
            pieces.append((piece, -4.0 - 0.01 * i, "NORMAL"))
            seen.add(piece)
    return pieces


def build_tokenizer(cfg: dict, work: Path):
    from sentencepiece import sentencepiece_model_pb2 as spm
    from tokenizers import decoders, pre_tokenizers
    from transformers import T5TokenizerFast

    model = spm.ModelProto()
    model.trainer_spec.model_type = spm.TrainerSpec.UNIGRAM
    model.trainer_spec.unk_id, model.trainer_spec.eos_id = 2, 1
    model.trainer_spec.pad_id, model.trainer_spec.bos_id = 0, -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    model.normalizer_spec.escape_whitespaces = True
    model.normalizer_spec.precompiled_charsmap = b""
    kinds = {"NORMAL": spm.ModelProto.SentencePiece.NORMAL, "CONTROL": spm.ModelProto.SentencePiece.CONTROL,
             "UNKNOWN": spm.ModelProto.SentencePiece.UNKNOWN}
    pieces = tokenizer_pieces(cfg)
    for text, score, kind in pieces:
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = text, score, kinds[kind]
    model.trainer_spec.vocab_size = len(pieces)
    work.mkdir(parents=True, exist_ok=True)
    (work / "spiece.model").write_bytes(model.SerializeToString())
    tokenizer = T5TokenizerFast(vocab_file=str(work / "spiece.model"), extra_ids=0, model_max_length=MAX_SEQUENCE_LENGTH)
    backend = tokenizer.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    return tokenizer, len(pieces)


# ----------------------------------------------------------------------------------------------
# Model construction


def build_components(off: Official, cfg: dict, work: Path) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    seed = cfg["seed"]
    vv, av, vd, ad, br, tx = (cfg["video_vae"], cfg["audio_vae"], cfg["video_dit"], cfg["audio_dit"],
                              cfg["bridge"], cfg["text"])
    z = vv["z_dim"]
    g = generator(seed, "video_vae", "latent_stats")
    latents_mean = [round(v, 4) for v in (torch.rand(z, generator=g) - 0.5).tolist()]
    latents_std = [round(v, 4) for v in (0.5 + 2.0 * torch.rand(z, generator=g)).tolist()]
    video_vae = AutoencoderKLWan(base_dim=vv["base_dim"], z_dim=z, dim_mult=list(vv["dim_mult"]),
                                 num_res_blocks=vv["num_res_blocks"], attn_scales=list(vv["attn_scales"]),
                                 temperal_downsample=list(vv["temperal_downsample"]), dropout=0.0,
                                 latents_mean=latents_mean, latents_std=latents_std)
    audio_vae = off.DAC(encoder_dim=av["encoder_dim"], encoder_rates=list(av["encoder_rates"]),
                        latent_dim=av["latent_dim"], decoder_dim=av["decoder_dim"],
                        decoder_rates=list(av["decoder_rates"]), sample_rate=av["sample_rate"],
                        continuous=True, use_weight_norm=True)
    tokenizer, pieces = build_tokenizer(cfg["tokenizer"], work / "tokenizer_build")
    text_config = UMT5Config(
        vocab_size=pieces + tx["extra_vocab"], d_model=tx["d_model"], d_kv=tx["d_kv"], d_ff=tx["d_ff"],
        num_layers=tx["num_layers"], num_heads=tx["num_heads"],
        relative_attention_num_buckets=tx["relative_attention_num_buckets"],
        relative_attention_max_distance=tx["relative_attention_max_distance"], dropout_rate=0.0,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, tokenizer_class="T5Tokenizer",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, layer_norm_epsilon=1e-6)
    text_encoder = UMT5EncoderModel(text_config)
    text_dim = tx["d_model"]

    def video_dit():
        return off.WanModel(dim=vd["dim"], in_dim=2 * z + 4, ffn_dim=vd["ffn_dim"], out_dim=z, text_dim=text_dim,
                            freq_dim=vd["freq_dim"], eps=1e-6, patch_size=list(vd["patch_size"]),
                            num_heads=vd["num_heads"], num_layers=vd["num_layers"], has_image_input=False,
                            require_vae_embedding=True, require_clip_embedding=False)

    ca = av["latent_dim"]
    audio_dit = off.WanAudioModel(dim=ad["dim"], in_dim=ca, ffn_dim=ad["ffn_dim"], out_dim=ca, text_dim=text_dim,
                                  freq_dim=ad["freq_dim"], eps=1e-6, patch_size=list(ad["patch_size"]),
                                  num_heads=ad["num_heads"], num_layers=ad["num_layers"], has_image_input=False,
                                  require_vae_embedding=False, require_clip_embedding=False, vae_type="dac")
    components = {
        "video_vae": video_vae, "audio_vae": audio_vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
        "scheduler": off.Scheduler(shift=cfg["scheduler"]["shift"], extra_one_step=cfg["scheduler"]["extra_one_step"]),
        "video_dit": video_dit(), "video_dit_2": video_dit(), "audio_dit": audio_dit,
        "dual_tower_bridge": make_bridge(off, cfg, br),
    }
    for name, module in components.items():
        if isinstance(module, torch.nn.Module):
            init_weights(module, seed, name)
            module.eval()
    return components


def make_bridge(off: Official, cfg: dict, flags: dict):
    vd, ad, br = cfg["video_dit"], cfg["audio_dit"], cfg["bridge"]
    return off.Bridge(visual_layers=vd["num_layers"], audio_layers=ad["num_layers"], visual_hidden_dim=vd["dim"],
                      audio_hidden_dim=ad["dim"], audio_fps=br["audio_fps"], head_dim=br["head_dim"],
                      interaction_strategy=br["interaction_strategy"], apply_cross_rope=flags["apply_cross_rope"],
                      apply_first_frame_bias_in_rope=flags["apply_first_frame_bias_in_rope"],
                      trainable_condition_scale=br["trainable_condition_scale"], pooled_adaln=flags["pooled_adaln"])


BRIDGE_VARIANTS = {
    "flipped": {"apply_cross_rope": True, "apply_first_frame_bias_in_rope": True, "pooled_adaln": True},
    "no_cross_rope": {"apply_cross_rope": False, "apply_first_frame_bias_in_rope": False, "pooled_adaln": False},
}
WEIGHT_COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae", "text_encoder")


def class_path(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def load_check(off: Official, components: dict, checkpoint: Path, tokenizer_probe: list[str]) -> tuple[Any, dict]:
    """Re-load the saved folder as the official script does and verify it against what was saved."""
    import torch

    pipe = off.MOVA.from_pretrained(str(checkpoint), torch_dtype=torch.float32)
    report: dict[str, Any] = {}
    for name in WEIGHT_COMPONENTS:
        saved, loaded = components[name].state_dict(), getattr(pipe, name).state_dict()
        if type(getattr(pipe, name)) is not type(components[name]):
            raise SystemExit(f"load check: {name} re-loads as {class_path(getattr(pipe, name))}")
        if saved.keys() != loaded.keys():
            raise SystemExit(f"load check: {name} keys differ: {sorted(set(saved) ^ set(loaded))[:5]}")
        for key, tensor in saved.items():
            if loaded[key].dtype != torch.float32 or not torch.equal(loaded[key], tensor):
                raise SystemExit(f"load check: {name}.{key} is not bit-identical after re-loading")
        report[name] = {"cls": class_path(getattr(pipe, name)), "tensors": len(saved),
                        "params": sum(p.numel() for p in getattr(pipe, name).parameters())}
    for text in tokenizer_probe:
        a = components["tokenizer"](text).input_ids
        b = pipe.tokenizer(text).input_ids
        if a != b:
            raise SystemExit(f"load check: tokenizer ids differ for {text!r}: {a} vs {b}")
    report["tokenizer"] = {"cls": type(pipe.tokenizer).__name__, "vocab": len(pipe.tokenizer)}
    saved_config, loaded_config = ({k: v for k, v in dict(s.config).items() if not k.startswith("_")}
                                   for s in (components["scheduler"], pipe.scheduler))
    if saved_config != loaded_config:
        raise SystemExit(f"load check: scheduler config differs: {saved_config} vs {loaded_config}")
    report["scheduler"] = {"cls": type(pipe.scheduler).__name__,
                           "config": dict(sorted(loaded_config.items()))}
    if pipe.boundary_ratio != components["boundary_ratio"]:
        raise SystemExit("load check: boundary_ratio differs")

    also = []
    pipe16 = off.MOVA.from_pretrained(str(checkpoint), torch_dtype=torch.bfloat16)
    for name in WEIGHT_COMPONENTS:
        loaded = getattr(pipe16, name).state_dict()
        for key, tensor in components[name].state_dict().items():
            if not torch.equal(loaded[key], tensor.to(loaded[key].dtype)):
                raise SystemExit(f"bf16 load check: {name}.{key} is not the bf16 rounding of the saved tensor")
    also.append("MOVA.from_pretrained(torch_dtype=torch.bfloat16)")
    del pipe16
    if off.MOVALoRA is not None:
        lora = off.MOVALoRA.from_pretrained(str(checkpoint), torch_dtype=torch.float32)
        for name in WEIGHT_COMPONENTS:
            loaded = getattr(lora, name).state_dict()
            if any(not torch.equal(loaded[k], t) for k, t in components[name].state_dict().items()):
                raise SystemExit(f"MOVALoRA load check: {name} differs")
        also.append("MOVALoRA.from_pretrained(torch_dtype=torch.float32)")
        del lora
    else:
        report["movalora_not_checked"] = off.lora_error
    report["also_loaded_with"] = also
    return pipe, report


# ----------------------------------------------------------------------------------------------
# Geometry


def geometry(cfg: dict, fps: float) -> dict[str, int]:
    run, vv, av = cfg["run"], cfg["video_vae"], cfg["audio_vae"]
    hop = math.prod(av["encoder_rates"])
    spatial = 2 ** (len(vv["dim_mult"]) - 1)
    temporal = 2 ** sum(bool(t) for t in vv["temperal_downsample"])
    samples = int(av["sample_rate"] * run["num_frames"] / fps)
    return {
        "latent_frames": (run["num_frames"] - 1) // temporal + 1, "latent_height": run["height"] // spatial,
        "latent_width": run["width"] // spatial, "audio_num_samples": samples,
        "audio_latent_len": (samples - 1) // hop + 1,
    }


def fps_tag(fps: float) -> str:
    return f"fps{fps:g}"


def shift_tag(shift: float) -> str:
    return f"{shift:g}"


# ----------------------------------------------------------------------------------------------
# Reference recorders. Each returns (tensors, meta).


def record_scheduler(off: Official, cfg: dict):
    import torch

    seed, sched = cfg["seed"], cfg["scheduler"]
    extra = {"extra_one_step": True} if sched["extra_one_step"] else {}
    suffix = "_extra" if sched["extra_one_step"] else ""
    tensors, settings = {}, []
    for steps, shift in cfg["scheduler_refs"]["settings"]:
        key = f"steps{steps}_shift{shift_tag(shift)}{suffix}"
        scheduler = off.Scheduler(shift=shift, **extra)
        scheduler.set_timesteps(steps)
        x = randn(seed, f"scheduler/{key}/x", (2, 3, 5))
        v = randn(seed, f"scheduler/{key}/v", (2, 3, 5))
        timesteps = scheduler.timesteps
        sigma_from = torch.stack([scheduler.timestep_to_sigma(t) for t in timesteps])
        sigma_to = torch.stack([scheduler.timestep_to_sigma(timesteps[i + 1]) if i + 1 < steps else torch.tensor(0.0)
                                for i in range(steps)])
        x_next = torch.stack([scheduler.step_from_to(v, timesteps[i], timesteps[i + 1] if i + 1 < steps else None, x)
                              for i in range(steps)])
        tensors.update({
            f"{key}/timesteps": timesteps, f"{key}/sigmas": scheduler.sigmas,
            f"{key}/pair_timesteps": scheduler.get_pairs("timesteps"), f"{key}/pair_sigmas": scheduler.get_pairs("sigmas"),
            f"{key}/train_timesteps": scheduler.train_timesteps, f"{key}/train_sigmas": scheduler.train_sigmas,
            f"{key}/x": x, f"{key}/v": v, f"{key}/step_sigma_from": sigma_from, f"{key}/step_sigma_to": sigma_to,
            f"{key}/step_x_next": x_next,
        })
        settings.append({"key": key, "num_inference_steps": steps, "shift": float(shift), **extra})

    dual = cfg["scheduler_refs"]["dual"]
    key = f"dual_steps{dual['steps']}_v{shift_tag(dual['visual_shift'])}_a{shift_tag(dual['audio_shift'])}{suffix}"
    scheduler = off.Scheduler(shift=sched["shift"], **extra)
    scheduler.set_timesteps(dual["steps"])
    scheduler.set_pair_postprocess_by_name("dual_sigma_shift", visual_shift=dual["visual_shift"],
                                           audio_shift=dual["audio_shift"])
    tensors[f"{key}/pair_timesteps"] = scheduler.get_pairs("timesteps")
    tensors[f"{key}/pair_sigmas"] = scheduler.get_pairs("sigmas")
    tensors[f"{key}/audio_step_sigma_from"] = torch.stack(
        [scheduler.timestep_to_sigma(t) for t in scheduler.get_pairs("timesteps")[:, 1]])

    scheduler = off.Scheduler(shift=sched["shift"], **extra)
    probes = torch.tensor([1000.0, 999.9, 968.4, 900.0, 851.37, 500.0, 321.123, 12.0, 2.9, 1.5, 0.0])
    tensors["snap/probe_timesteps"] = probes
    tensors["snap/probe_sigmas"] = torch.stack([scheduler.timestep_to_sigma(t) for t in probes])
    meta = {
        "constants": {"num_train_timesteps": scheduler.num_train_timesteps, "sigma_max": scheduler.sigma_max,
                      "sigma_min": scheduler.sigma_min},
        "dual_sigma_shift": {"audio_shift": float(dual["audio_shift"]), "key": key, "num_inference_steps": dual["steps"],
                             "scheduler_shift": float(sched["shift"]), "visual_shift": float(dual["visual_shift"]), **extra},
        "settings": settings,
        "snap": {"scheduler_shift": float(sched["shift"]), **extra},
    }
    return tensors, meta


def context_tensor(cfg: dict, tag: str, valid: int):
    import torch

    context = torch.zeros(1, MAX_SEQUENCE_LENGTH, cfg["text"]["d_model"])
    context[:, :valid] = randn(cfg["seed"], tag, (1, valid, cfg["text"]["d_model"]))
    return context


def capture_first_call_arg(module, index: int, sink: dict, key: str):
    """Forward pre-hook on ``module`` storing positional argument ``index`` of its first call."""

    def hook(_module, args):
        if key not in sink:
            sink[key] = args[index]

    return module.register_forward_pre_hook(hook)


def record_tower(pipe, cfg: dict, which: str):
    import torch

    seed, run = cfg["seed"], cfg["run"]
    geo = geometry(cfg, run["video_fps"])
    valid = 9 if which == "video" else 7
    context = context_tensor(cfg, f"{which}_dit/context", valid)
    timesteps = torch.tensor(run["dit_timesteps"], dtype=torch.float32).view(-1, 1)
    z, ca = cfg["video_vae"]["z_dim"], cfg["audio_vae"]["latent_dim"]
    if which == "video":
        x = randn(seed, "video_dit/x", (1, 2 * z + 4, geo["latent_frames"], geo["latent_height"], geo["latent_width"]))
        models = ["video_dit", "video_dit_2"]
    else:
        x = randn(seed, "audio_dit/x", (1, ca, geo["audio_latent_len"]))
        models = ["audio_dit"]
    tensors = {"x": x, "context": context, "timesteps": timesteps}
    captured: dict[str, torch.Tensor] = {}
    for name in models:
        model = getattr(pipe, name)
        handle = capture_first_call_arg(model.blocks[0].self_attn, 1, captured, f"{name}/freqs")
        for i in range(timesteps.shape[0]):
            tensors[f"{name}/out_t{i}"] = model(x, timesteps[i], context)
        handle.remove()
    tensors["rope_freqs"] = torch.view_as_real(captured[f"{models[0]}/freqs"].contiguous())
    for name in models[1:]:
        assert torch.equal(captured[f"{name}/freqs"], captured[f"{models[0]}/freqs"])
    meta = {"audio_latent_len": geo["audio_latent_len"], "timesteps": [float(t) for t in run["dit_timesteps"]],
            "valid_context_tokens": valid}
    if which == "video":
        meta.update({"audio_num_samples": geo["audio_num_samples"],
                     "call": "WanModel.forward(x, timestep, context)  # y=None, clip_feature=None",
                     "latent_frames": geo["latent_frames"], "latent_height": geo["latent_height"],
                     "latent_width": geo["latent_width"]})
    else:
        meta["call"] = "WanAudioModel.forward(x, timestep, context)"
    return tensors, meta


class Tracer:
    """Forward hooks recording the hidden states of one ``inference_single_step`` call."""

    def __init__(self, pipe, visual_dit):
        self.out: dict[str, Any] = {}
        self.handles = []
        for stream, tower in (("video", visual_dit), ("audio", pipe.audio_dit)):
            for part in ("patch_embedding", "time_embedding", "time_projection", "text_embedding", "head"):
                self._output(getattr(tower, part), f"{stream}_{part}")
            for i, block in enumerate(tower.blocks):
                self._output(block, f"{stream}_block{i}")
            self.handles.append(capture_first_call_arg(tower.blocks[0].self_attn, 1, self.out, f"{stream}_rope_freqs"))

        def bridge_hook(_module, args, output):
            layer = args[0]
            self.out[f"bridge{layer}/visual"], self.out[f"bridge{layer}/audio"] = output

        self.handles.append(pipe.dual_tower_bridge.register_forward_hook(bridge_hook))

    def _output(self, module, key):
        def hook(_module, _args, output):
            if key not in self.out:
                self.out[key] = output

        self.handles.append(module.register_forward_hook(hook))

    def remove(self):
        import torch

        for handle in self.handles:
            handle.remove()
        for stream in ("video", "audio"):
            self.out[f"{stream}_rope_freqs"] = torch.view_as_real(self.out[f"{stream}_rope_freqs"].contiguous())
        return self.out


def record_joint_step(pipe, off: Official, cfg: dict, refs: Path):
    import torch

    seed, run = cfg["seed"], cfg["run"]
    z, ca = cfg["video_vae"]["z_dim"], cfg["audio_vae"]["latent_dim"]
    valid = 11
    context = context_tensor(cfg, "joint_step/context", valid)
    official_bridge = pipe.dual_tower_bridge
    bridges = {"official": official_bridge}
    for variant, flags in BRIDGE_VARIANTS.items():
        bridge = make_bridge(off, cfg, flags)
        init_weights(bridge, seed, f"bridge_{variant}")
        folder = refs / f"bridge_{variant}"
        bridge.save_pretrained(str(folder), safe_serialization=True)
        loaded = off.Bridge.from_pretrained(str(folder), torch_dtype=torch.float32)
        for key, tensor in bridge.state_dict().items():
            if not torch.equal(loaded.state_dict()[key], tensor):
                raise SystemExit(f"bridge_{variant}: {key} differs after re-loading")
        bridges[variant] = loaded.eval()
    first, *others = run["joint_fps"]
    plan = [("official", first, ["video_dit", "video_dit_2"])]
    plan += [("official", fps, ["video_dit"]) for fps in others]
    plan += [("flipped", fps, ["video_dit"]) for fps in run["joint_fps"]]
    plan += [("no_cross_rope", first, ["video_dit"])]
    t_video, t_audio = run["joint_timesteps"]
    tensors: dict[str, torch.Tensor] = {"context": context}
    cases = []
    for variant, fps, experts in plan:
        geo = geometry(cfg, fps)
        case = f"{variant}/{fps_tag(fps)}"
        visual = randn(seed, f"joint/{case}/visual_latents",
                       (1, 2 * z + 4, geo["latent_frames"], geo["latent_height"], geo["latent_width"]))
        audio = randn(seed, f"joint/{case}/audio_latents", (1, ca, geo["audio_latent_len"]))
        timestep = torch.tensor([t_video], dtype=torch.float32)
        audio_timestep = torch.tensor([t_audio], dtype=torch.float32)
        tensors.update({f"{case}/visual_latents": visual, f"{case}/audio_latents": audio,
                        f"{case}/timestep": timestep, f"{case}/audio_timestep": audio_timestep})
        bridge = bridges[variant]
        pipe.dual_tower_bridge = bridge
        rope: list = []
        original_build = bridge.build_aligned_freqs

        def build_and_keep(*args, _original=original_build, **kwargs):
            result = _original(*args, **kwargs)
            rope.append(result)
            return result

        bridge.build_aligned_freqs = build_and_keep
        try:
            for expert in experts:
                tracer = Tracer(pipe, getattr(pipe, expert)) if (variant, fps, expert) == ("official", first, "video_dit") else None
                video_out, audio_out = pipe.inference_single_step(
                    visual_dit=getattr(pipe, expert), visual_latents=visual, audio_latents=audio, context=context,
                    timestep=timestep, audio_timestep=audio_timestep, video_fps=fps)
                tensors[f"{case}/{expert}/video_out"] = video_out
                tensors[f"{case}/{expert}/audio_out"] = audio_out
                if tracer is not None:
                    for key, value in tracer.remove().items():
                        tensors[f"{case}/{expert}/trace/{key}"] = value
        finally:
            del bridge.build_aligned_freqs
            pipe.dual_tower_bridge = official_bridge
        if bridge.apply_cross_rope:
            (cos_v, sin_v), (cos_a, sin_a) = rope[0]
            for other in rope[1:]:
                assert all(torch.equal(a, b) for a, b in zip(other[0] + other[1], rope[0][0] + rope[0][1]))
            tensors.update({f"{case}/rope_video_cos": cos_v, f"{case}/rope_video_sin": sin_v,
                            f"{case}/rope_audio_cos": cos_a, f"{case}/rope_audio_sin": sin_a})
        else:
            assert not rope
        cases.append({
            "audio_latent_len": geo["audio_latent_len"], "audio_num_samples": geo["audio_num_samples"],
            "audio_timestep": float(t_audio), "bridge": variant,
            "bridge_flags": {k: bool(getattr(bridge, k)) for k in ("apply_cross_rope", "apply_first_frame_bias_in_rope",
                                                                  "pooled_adaln")},
            "case": case, "experts": experts, "latent_frames": geo["latent_frames"],
            "latent_height": geo["latent_height"], "latent_width": geo["latent_width"], "timestep": float(t_video),
            "video_fps": float(fps),
        })
    meta = {"cases": cases, "interaction_layers": [list(p) for p in official_bridge.interaction_mapping["a2v"]],
            "valid_context_tokens": valid}
    return tensors, meta


def record_video_vae(pipe, cfg: dict):
    import torch

    seed, run = cfg["seed"], cfg["run"]
    geo = geometry(cfg, run["video_fps"])
    vae, z = pipe.video_vae, cfg["video_vae"]["z_dim"]
    frames, height, width = run["num_frames"], run["height"], run["width"]
    video = uniform(seed, "video_vae/encode/video", (1, 3, frames, height, width), -1.0, 1.0)
    dist = vae.encode(video).latent_dist
    latent = randn(seed, "video_vae/decode/latent", (1, z, geo["latent_frames"], geo["latent_height"], geo["latent_width"]))
    image = uniform(seed, "video_vae/i2v/image", (1, 3, height, width), -1.0, 1.0)
    given = torch.zeros(1, z, geo["latent_frames"], geo["latent_height"], geo["latent_width"])
    _, condition = pipe.prepare_latents(image, 1, z, height, width, frames, torch.float32, torch.device("cpu"),
                                        latents=given)
    tensors = {
        "encode/video": video, "encode/mean": dist.mean, "encode/logvar": dist.logvar, "encode/std": dist.std,
        "encode/mean_normalized": pipe.normalize_video_latents(dist.mean),
        "decode/latent": latent, "decode/sample": vae.decode(latent).sample,
        "denormalize/latent_denormalized": pipe.denormalize_video_latents(latent),
        "latents_mean": torch.tensor(vae.config.latents_mean, dtype=torch.float32),
        "latents_std": torch.tensor(vae.config.latents_std, dtype=torch.float32),
        "i2v/image": image, "i2v/condition": condition,
    }
    meta = {"audio_latent_len": geo["audio_latent_len"], "audio_num_samples": geo["audio_num_samples"],
            "height": height, "latent_frames": geo["latent_frames"], "latent_height": geo["latent_height"],
            "latent_width": geo["latent_width"], "num_frames": frames,
            "scale_factor_spatial": vae.config.scale_factor_spatial,
            "scale_factor_temporal": vae.config.scale_factor_temporal, "width": width, "z_dim": z}
    return tensors, meta


def record_audio_vae(pipe, cfg: dict):
    import torch

    seed, run = cfg["seed"], cfg["run"]
    geo = geometry(cfg, run["video_fps"])
    dac = pipe.audio_vae
    sr, n = int(dac.sample_rate), geo["audio_num_samples"]
    t = torch.arange(n, dtype=torch.float64) / sr
    audio = (0.4 * torch.sin(2 * math.pi * 440.0 * t)).to(torch.float32).view(1, 1, n)
    audio = audio + 0.05 * randn(seed, "audio_vae/encode/noise", (1, 1, n))
    padded = dac.preprocess(audio, sr)
    dist = dac.encode(padded)[0]
    latent = randn(seed, "audio_vae/decode/latent", (1, dac.latent_dim, geo["audio_latent_len"]))
    tensors = {"encode/audio": audio, "encode/audio_padded": padded, "encode/mean": dist.mean,
               "encode/logvar": dist.logvar, "encode/std": dist.std, "decode/latent": latent,
               "decode/audio": dac.decode(latent)}
    meta = {"audio_num_samples": n, "delay": int(dac.delay), "hop_length": int(dac.hop_length),
            "latent_dim": int(dac.latent_dim), "latent_len": geo["audio_latent_len"], "padded_len": int(padded.shape[-1]),
            "sample_rate": sr}
    return tensors, meta


def record_text_encoder(pipe, off: Official, cfg: dict):
    import torch

    prompts = {"prompt": cfg["prompt"], "empty": "", "negative": off.negative_prompt}
    tensors, info = {}, {}
    for key, raw in prompts.items():
        cleaned = off.prompt_clean(raw)
        inputs = pipe.tokenizer([cleaned], padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = inputs.input_ids.to(torch.int64), inputs.attention_mask.to(torch.int64)
        seq_len = int(mask.sum())
        tensors[f"{key}/input_ids"], tensors[f"{key}/attention_mask"] = ids, mask
        tensors[f"{key}/last_hidden_state"] = pipe.text_encoder(ids, mask).last_hidden_state
        tensors[f"{key}/prompt_embeds"] = pipe._get_t5_prompt_embeds(raw)
        info[key] = {"cleaned": cleaned, "raw": raw, "seq_len": seq_len,
                     "tokens": pipe.tokenizer.convert_ids_to_tokens(ids[0, :seq_len].tolist())}
    order = ["prompt", "empty"]
    tensors["batch/prompt_embeds"] = pipe._get_t5_prompt_embeds([prompts[k] for k in order])
    meta = {"batch_order": order, "max_sequence_length": MAX_SEQUENCE_LENGTH, "prompts": info}
    return tensors, meta


def source_picture(cfg: dict, tag: str = "pipeline/source_image", hw: list[int] | None = None):
    """A smooth coloured picture with a little noise, of ``hw`` (default ``run.source_image_hw``),
    drawn from the generator of (seed, "input", ``tag``)."""
    import torch

    hs, ws = hw or cfg["run"]["source_image_hw"]
    g = generator(cfg["seed"], "input", tag)
    coarse = torch.rand(1, 3, 4, 5, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(hs, ws), mode="bilinear", align_corners=True)[0]
    noisy = smooth + 0.08 * torch.randn(3, hs, ws, generator=g)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def record_pipeline(pipe, off: Official, cfg: dict, cfg_scale: float):
    import numpy as np
    import torch
    from PIL import Image

    run = cfg["run"]
    geo = geometry(cfg, run["video_fps"])
    source = source_picture(cfg)
    image = off.crop_and_resize(Image.fromarray(source.numpy()), run["height"], run["width"])
    tensors: dict[str, torch.Tensor] = {"source_image_uint8": source,
                                        "image_uint8": torch.from_numpy(np.array(image)).contiguous()}
    noise: list[torch.Tensor] = []
    embeds: list[torch.Tensor] = []
    calls: list[dict] = []
    updates: list[dict] = []
    decoded: dict[str, torch.Tensor] = {}
    originals = {}

    def wrap(owner, name, wrapper):
        originals[(owner, name)] = getattr(owner, name)
        setattr(owner, name, wrapper(getattr(owner, name)))

    def randn_wrapper(fn):
        def inner(*args, **kwargs):
            out = fn(*args, **kwargs)
            noise.append(out.clone())
            return out
        return inner

    def preprocess_wrapper(fn):
        def inner(*args, **kwargs):
            out = fn(*args, **kwargs)
            tensors["image_preprocessed"] = out.clone()
            return out
        return inner

    def prepare_wrapper(fn):
        def inner(*args, **kwargs):
            latents, condition = fn(*args, **kwargs)
            tensors["init/condition"] = condition.clone()
            return latents, condition
        return inner

    def embeds_wrapper(fn):
        def inner(*args, **kwargs):
            out = fn(*args, **kwargs)
            embeds.append(out.clone())
            return out
        return inner

    def step_wrapper(fn):
        def inner(*, visual_dit, **kwargs):
            out = fn(visual_dit=visual_dit, **kwargs)
            expert = "video_dit" if visual_dit is pipe.video_dit else "video_dit_2" if visual_dit is pipe.video_dit_2 else "?"
            calls.append({"expert": expert, "context": kwargs["context"], "timestep": float(kwargs["timestep"]),
                          "audio_timestep": float(kwargs["audio_timestep"]), "video": out[0].clone(), "audio": out[1].clone()})
            return out
        return inner

    def update_wrapper(fn):
        def inner(model_output, timestep_from, timestep_to, sample):
            out = fn(model_output, timestep_from, timestep_to, sample)
            sigma_from = float(pipe.scheduler.timestep_to_sigma(timestep_from))
            sigma_to = 0.0 if timestep_to is None else float(pipe.scheduler.timestep_to_sigma(timestep_to))
            updates.append({"velocity": model_output.clone(), "out": out.clone(), "sigma_from": sigma_from,
                            "sigma_to": sigma_to})
            return out
        return inner

    def video_decode_wrapper(fn):
        def inner(latents, *args, **kwargs):
            out = fn(latents, *args, **kwargs)
            decoded["decode/video_latents_denormalized"] = latents.clone()
            decoded["decode/video"] = out.sample.clone()
            return out
        return inner

    def audio_decode_wrapper(fn):
        def inner(latents, *args, **kwargs):
            out = fn(latents, *args, **kwargs)
            decoded["decode/audio_latents"] = latents.clone()
            return out
        return inner

    wrap(off.pipeline_module, "randn_tensor", randn_wrapper)
    wrap(pipe.video_processor, "preprocess", preprocess_wrapper)
    wrap(pipe, "prepare_latents", prepare_wrapper)
    wrap(pipe, "_get_t5_prompt_embeds", embeds_wrapper)
    wrap(pipe, "inference_single_step", step_wrapper)
    wrap(pipe.scheduler, "step_from_to", update_wrapper)
    wrap(pipe.video_vae, "decode", video_decode_wrapper)
    wrap(pipe.audio_vae, "decode", audio_decode_wrapper)
    try:
        torch.manual_seed(42)
        video, audio = pipe(prompt=cfg["prompt"], image=image, negative_prompt=off.negative_prompt, seed=42,
                            height=run["height"], width=run["width"], num_frames=run["num_frames"],
                            video_fps=run["video_fps"], num_inference_steps=run["num_inference_steps"],
                            sigma_shift=5.0, cfg_scale=cfg_scale, cp_mesh=None)
    finally:
        for (owner, name), original in originals.items():
            if owner is off.pipeline_module:
                setattr(owner, name, original)
            else:
                delattr(owner, name) if name in vars(owner) else setattr(owner, name, original)

    steps = run["num_inference_steps"]
    assert len(noise) == 2 and len(embeds) == 2 and len(updates) == 2 * steps
    tensors["init/video_noise"], tensors["init/audio_noise"] = noise
    tensors["prompt_embeds"], tensors["negative_prompt_embeds"] = embeds
    tensors["paired_timesteps"] = pipe.scheduler.get_pairs().clone()
    per_step = 2 if cfg_scale != 1.0 else 1
    assert len(calls) == per_step * steps
    step_meta = []
    for i in range(steps):
        step_calls = calls[per_step * i: per_step * (i + 1)]
        names = []
        for call in step_calls:
            name = "posi" if call["context"] is embeds[0] or torch.equal(call["context"], embeds[0]) else "nega"
            names.append(name)
            tensors[f"step{i}/pred_{name}_video"] = call["video"]
            tensors[f"step{i}/pred_{name}_audio"] = call["audio"]
        video_update, audio_update = updates[2 * i], updates[2 * i + 1]
        tensors[f"step{i}/guided_video"], tensors[f"step{i}/guided_audio"] = video_update["velocity"], audio_update["velocity"]
        tensors[f"step{i}/latents"], tensors[f"step{i}/audio_latents"] = video_update["out"], audio_update["out"]
        step_meta.append({
            "audio_sigma_from": audio_update["sigma_from"], "audio_sigma_to": audio_update["sigma_to"],
            "audio_timestep": step_calls[0]["audio_timestep"], "expert": step_calls[0]["expert"],
            "model_calls": names, "step": i, "timestep": step_calls[0]["timestep"],
            "video_sigma_from": video_update["sigma_from"], "video_sigma_to": video_update["sigma_to"],
        })
    tensors.update(decoded)
    tensors["output/frames_uint8"] = torch.from_numpy(np.stack([np.array(frame) for frame in video[0]])).contiguous()
    tensors["output/audio"] = audio.clone()
    assert torch.equal(tensors["decode/audio_latents"], tensors[f"step{steps - 1}/audio_latents"])
    meta = {
        "audio_latent_len": geo["audio_latent_len"], "audio_num_samples": geo["audio_num_samples"],
        "audio_sample_rate": int(pipe.audio_sample_rate), "boundary_ratio": float(pipe.boundary_ratio),
        "boundary_timestep": float(pipe.boundary_ratio * pipe.scheduler.config.num_train_timesteps),
        "call": "MOVA.__call__", "cfg_scale": float(cfg_scale), "global_torch_manual_seed": 42,
        "height": run["height"], "latent_frames": geo["latent_frames"], "latent_height": geo["latent_height"],
        "latent_width": geo["latent_width"], "negative_prompt": off.negative_prompt, "num_frames": run["num_frames"],
        "num_inference_steps": steps, "prompt": cfg["prompt"], "scheduler_shift": float(pipe.scheduler.config.shift),
        "seed_argument": 42, "sigma_shift_argument": 5.0, "steps": step_meta, "video_fps": float(run["video_fps"]),
        "width": run["width"],
    }
    return tensors, meta


def flf_settings(cfg: dict) -> dict:
    """``cfg["flf"]``, or for a configuration without it: 5 frames, the run's frame count and 13, a
    first picture wider and a last picture taller than the run's ``height x width``."""
    run = cfg["run"]
    if "flf" in cfg:
        return cfg["flf"]
    height, width = run["height"], run["width"]
    return {"frame_counts": sorted({5, run["num_frames"], 13}),
            "first_source_hw": [height - 3, 2 * width + 7], "last_source_hw": [2 * height + 5, width - 5]}


def record_flf_condition(pipe, off: Official, cfg: dict, checkpoint: Path):
    """The official first+last-frame condition, which no official script records: both source pictures
    through the official ``crop_and_resize`` (to the run's height x width) and
    ``video_processor.preprocess``, then ``MOVA.prepare_latents(image, ..., last_image=last)``
    for each of ``flf.frame_counts``; the condition (mask channels + normalized latents) is stored."""
    import numpy as np
    import torch
    from PIL import Image

    run, flf = cfg["run"], flf_settings(cfg)
    height, width, z = run["height"], run["width"], cfg["video_vae"]["z_dim"]
    spatial = pipe.vae_scale_factor_spatial
    patch_h, patch_w = cfg["video_dit"]["patch_size"][1:]
    if height % (spatial * patch_h) or width % (spatial * patch_w):
        raise SystemExit(f"flf: {height}x{width} is not a multiple of the VAE factor x the video patch")
    tensors: dict[str, torch.Tensor] = {}
    pictures = {}
    for which in ("first", "last"):
        source = source_picture(cfg, f"flf/{which}_source", flf[f"{which}_source_hw"])
        resized = off.crop_and_resize(Image.fromarray(source.numpy()), height, width)
        preprocessed = pipe.video_processor.preprocess(resized, height=height, width=width).to(torch.float32)
        tensors[f"{which}_source_uint8"] = source
        tensors[f"{which}_image_uint8"] = torch.from_numpy(np.array(resized)).contiguous()
        tensors[f"{which}_image_preprocessed"] = preprocessed
        pictures[which] = preprocessed
    for frames in flf["frame_counts"]:
        latent_frames = (frames - 1) // pipe.vae_scale_factor_temporal + 1
        given = torch.zeros(1, z, latent_frames, height // spatial, width // spatial)
        _, condition = pipe.prepare_latents(pictures["first"], 1, z, height, width, frames, torch.float32,
                                            torch.device("cpu"), latents=given, last_image=pictures["last"])
        tensors[f"frames{frames}/condition"] = condition
    vae_folder = checkpoint / "video_vae"
    meta = {
        "first_source_hw": list(flf["first_source_hw"]), "frame_counts": list(flf["frame_counts"]),
        "height": height, "keys": sorted(tensors), "last_source_hw": list(flf["last_source_hw"]),
        "official_commit": off.commit(), "recorder": "tools/record_parity.py",
        "video_vae_sha256": {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                             for path in sorted(vae_folder.glob("*.safetensors"))},
        "what": ("official MOVA.prepare_latents(image, ..., last_image=last) of this folder's video VAE; both "
                 "images through the official crop_and_resize + video_processor.preprocess"),
        "width": width,
    }
    return tensors, meta


# ----------------------------------------------------------------------------------------------
# Output


def save_ref(refs: Path, name: str, tensors: dict, meta: dict) -> None:
    import torch
    from safetensors.torch import save_file

    allowed = {torch.float32, torch.float64, torch.int64, torch.uint8}
    clean = {}
    for key, value in tensors.items():
        value = value.detach()
        if value.dtype not in allowed:
            raise SystemExit(f"refs/{name}: {key} has dtype {value.dtype}")
        clean[key] = value.contiguous().clone()
    save_file(clean, str(refs / f"{name}.safetensors"))
    (refs / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                       encoding="utf-8")


def file_entries(out: Path) -> list[dict]:
    from safetensors import safe_open

    entries = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel == "manifest.json":
            continue
        entry = {"bytes": path.stat().st_size, "path": rel, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        if rel.startswith("refs/") and rel.endswith(".safetensors") and rel.count("/") == 1:
            with safe_open(str(path), "pt") as handle:
                entry["tensors"] = {key: {"dtype": handle.get_slice(key).get_dtype(),
                                          "shape": list(handle.get_slice(key).get_shape())}
                                    for key in sorted(handle.keys())}
        entries.append(entry)
    return entries


def readme_text(name: str, cfg: dict, report: dict, versions: dict, shims: list[str]) -> str:
    run, geo = cfg["run"], geometry(cfg, cfg["run"]["video_fps"])
    vd, ad, br, av, vv, tx = (cfg["video_dit"], cfg["audio_dit"], cfg["bridge"], cfg["audio_vae"], cfg["video_vae"],
                              cfg["text"])
    hop = math.prod(av["encoder_rates"])
    rows = [
        ("video DiT dim / heads / head_dim / ffn / layers", f"{vd['dim']} / {vd['num_heads']} / {vd['dim'] // vd['num_heads']} / {vd['ffn_dim']} / {vd['num_layers']}"),
        ("video DiT patch, in_dim, out_dim, freq_dim", f"{tuple(vd['patch_size'])}, {2 * vv['z_dim'] + 4}, {vv['z_dim']}, {vd['freq_dim']}"),
        ("audio DiT dim / heads / head_dim / ffn / layers, patch", f"{ad['dim']} / {ad['num_heads']} / {ad['dim'] // ad['num_heads']} / {ad['ffn_dim']} / {ad['num_layers']}, {ad['patch_size']}"),
        ("bridge head_dim, strategy -> bridged layers", f"{br['head_dim']}, `{br['interaction_strategy']}` -> {report['interaction_layers']}"),
        ("bridge heads a2v / v2a, audio_fps", f"{vd['dim'] // br['head_dim']} / {ad['dim'] // br['head_dim']}, {br['audio_fps']}"),
        ("DAC sr, encoder rates (hop), decoder rates", f"{av['sample_rate']}, {av['encoder_rates']} ({hop}), {av['decoder_rates']}"),
        ("DAC encoder_dim / decoder_dim / latent_dim", f"{av['encoder_dim']} / {av['decoder_dim']} / {av['latent_dim']}"),
        ("Wan VAE base_dim / z_dim / res blocks / dim_mult", f"{vv['base_dim']} / {vv['z_dim']} / {vv['num_res_blocks']} / {vv['dim_mult']}"),
        ("umT5 d_model / heads / d_kv / d_ff / layers / buckets / max_dist", f"{tx['d_model']} / {tx['num_heads']} / {tx['d_kv']} / {tx['d_ff']} / {tx['num_layers']} / {tx['relative_attention_num_buckets']} / {tx['relative_attention_max_distance']}"),
        ("tokenizer pieces / text vocab_size", f"{report['tokenizer']['vocab']} / {report['tokenizer']['vocab'] + tx['extra_vocab']}"),
        ("scheduler shift, extra_one_step, boundary_ratio", f"{cfg['scheduler']['shift']}, {cfg['scheduler']['extra_one_step']}, {cfg['boundary_ratio']}"),
        ("pipeline run: H x W, F, fps, N", f"{run['height']}x{run['width']}, {run['num_frames']}, {run['video_fps']}, {run['num_inference_steps']}"),
        ("-> T, h, w / n, La", f"{geo['latent_frames']}, {geo['latent_height']}, {geo['latent_width']} / {geo['audio_num_samples']}, {geo['audio_latent_len']}"),
        ("joint-step fps values (La)", ", ".join(f"{f:g} ({geometry(cfg, f)['audio_latent_len']})" for f in run["joint_fps"])),
        ("FLF condition: frames; first / last source H x W", f"{', '.join(str(f) for f in flf_settings(cfg)['frame_counts'])}; {' x '.join(map(str, flf_settings(cfg)['first_source_hw']))} / {' x '.join(map(str, flf_settings(cfg)['last_source_hw']))}"),
    ]
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    shim_lines = "\n".join(f"* {s}" for s in shims) or "* none"
    return f"""# MOVA reference parity fixture: {name}

A tiny, randomly initialised MOVA checkpoint in the official folder layout (`checkpoint/`) and
input/output pairs recorded from the official OpenMOSS/MOVA code (package `mova`
{versions['mova']}, source digest `{versions['mova_source_sha256'][:16]}...`) running on it
(`refs/`). Recorded by `tools/record_parity.py` of comfyui-mova-av; the file names, tensor keys,
JSON fields and dtypes are those of the `tiny-a` fixture, whose README describes every file
(sections 1-7). This README only gives what differs: the configuration, and one file tiny-a does
not have: `refs/flf_condition.*`, the official first+last-frame condition
(`MOVA.prepare_latents(image, ..., last_image=last)` with both source pictures through the official
`crop_and_resize` + `video_processor.preprocess`; no official script records it).

Everything is float32 on CPU, one thread, deterministic algorithms; torch {versions['torch']},
diffusers {versions['diffusers']}, transformers {versions['transformers']}. The checkpoint was
written by `MOVA(...).save_pretrained(dir, safe_serialization=True)` and every reference was
computed with the pipeline re-loaded by `MOVA.from_pretrained(dir, torch_dtype=torch.float32)`
(verified bit-identical; also loaded with: {', '.join(report['also_loaded_with'])}).

## Configuration

| | {name} |
|---|---|
{table}

Joint-step cases: `official` at every fps (the first also with `video_dit_2`), `flipped`
(first-frame bias + pooled AdaLN) at every fps, `no_cross_rope` at the first fps. The pipeline runs
use the experts {report['experts_cfg5']} for steps 0..{run['num_inference_steps'] - 1}.

Weights: every parameter is drawn from its own generator seeded by (seed {cfg['seed']},
component, parameter name): matrices N(0, 1/fan_in) (video VAE: 0.6 N(0, 1/fan_in), so
that its random decoder is not chaotic), norm scales 1 + 0.1 N, biases 0.1 N,
modulation tables N/sqrt(dim), Snake alphas U(1, 1.25), weight-norm magnitudes 0.7 (1 + 0.1 N),
embeddings 0.5 N. Inputs come from generators seeded by (seed, "input", tag) and are all stored.

The tokenizer is a hand-written sentencepiece Unigram model (`<pad>`, `</s>`, `<unk>`, `\u2581`,
ASCII letters, digits, punctuation, a few CJK characters and whole words `\u2581word`), converted by
`T5TokenizerFast(vocab_file=..., extra_ids=0)` with the backend pre-tokenizer and decoder set to
`Metaspace(prepend_scheme="always")`.

Import shims used while recording (imports no inference path calls; nothing that computes a
recorded number is replaced):

{shim_lines}

## Re-recording

```
python tools/record_parity.py --preset {name} --out tests/data/parity/{name} --official <official MOVA checkout>
```

with the environment described in the repository README ("Faithfulness: parity tests").
`manifest.json` lists the configuration, library versions and the sha256 of every file.
"""


def record(cfg: dict, name: str, out: Path, official_root: Path, force: bool) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    off = Official(official_root)
    if out.exists():
        if not force:
            raise SystemExit(f"{out} exists (use --force to replace it)")
        shutil.rmtree(out)
    (out / "refs").mkdir(parents=True)
    checkpoint = out / "checkpoint"
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        work = Path(tmp)
        components = build_components(off, cfg, work)
        mova = off.MOVA(boundary_ratio=cfg["boundary_ratio"], audio_vae_type="dac",
                        **{k: v for k, v in components.items()})
        mova.save_pretrained(str(checkpoint), safe_serialization=True)
        components["boundary_ratio"] = cfg["boundary_ratio"]
        probe = [cfg["prompt"], off.prompt_clean(cfg["prompt"]), off.prompt_clean(off.negative_prompt), ""]
        pipe, report = load_check(off, components, checkpoint, probe)
        del mova, components

        refs = out / "refs"
        print("scheduler", flush=True)
        save_ref(refs, "scheduler", *record_scheduler(off, cfg))
        print("video_dit / audio_dit", flush=True)
        save_ref(refs, "video_dit", *record_tower(pipe, cfg, "video"))
        save_ref(refs, "audio_dit", *record_tower(pipe, cfg, "audio"))
        print("joint_step", flush=True)
        joint_tensors, joint_meta = record_joint_step(pipe, off, cfg, refs)
        save_ref(refs, "joint_step", joint_tensors, joint_meta)
        print("video_vae / audio_vae / text_encoder", flush=True)
        save_ref(refs, "video_vae", *record_video_vae(pipe, cfg))
        save_ref(refs, "audio_vae", *record_audio_vae(pipe, cfg))
        save_ref(refs, "text_encoder", *record_text_encoder(pipe, off, cfg))
        store = work / "gloo_store"
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        try:
            experts = {}
            for scale in (5.0, 1.0):
                print(f"pipeline cfg {scale:g}", flush=True)
                tensors, meta = record_pipeline(pipe, off, cfg, scale)
                save_ref(refs, f"pipeline_cfg{scale:g}", tensors, meta)
                experts[scale] = [s["expert"] for s in meta["steps"]]
        finally:
            dist.destroy_process_group()
        print("flf_condition", flush=True)
        save_ref(refs, "flf_condition", *record_flf_condition(pipe, off, cfg, checkpoint))

    report["interaction_layers"] = joint_meta["interaction_layers"]
    report["experts_cfg5"] = experts[5.0]
    if len(set(experts[5.0])) != 2:
        print(f"warning: the pipeline run uses only {set(experts[5.0])}", file=sys.stderr)
    import diffusers
    import transformers

    versions = {"diffusers": diffusers.__version__, "mova": off.mova.__version__,
                "mova_source_sha256": off.source_digest(), "official_commit": off.commit(),
                "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    (out / "README.md").write_text(readme_text(name, cfg, report, versions, off.shims), encoding="utf-8")
    load_report = {k: v for k, v in report.items() if k not in ("interaction_layers", "experts_cfg5")}
    entries = file_entries(out)
    manifest = {"config": cfg, "config_name": name, "files": entries, "load_check": load_report,
                "import_shims": off.shims, "recorder": {"script": "tools/record_parity.py", "version": SCRIPT_VERSION},
                "total_bytes": sum(e["bytes"] for e in entries), "versions": versions}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    print(f"wrote {out}: {manifest['total_bytes']} bytes in {len(entries)} files (+ manifest.json)")


def deep_update(base: dict, changes: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a configuration defined in this script")
    parser.add_argument("--config", type=Path, help="JSON configuration (overrides the preset's keys)")
    parser.add_argument("--name", help="fixture name for README/manifest (default: preset or output folder name)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--official", type=Path, default=Path(os.environ.get("MOVA_OFFICIAL_DIR", "../official-mova")),
                        help="checkout of github.com/OpenMOSS/MOVA (default $MOVA_OFFICIAL_DIR or ../official-mova)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    if not args.preset and not args.config:
        parser.error("give --preset and/or --config")
    cfg = copy.deepcopy(PRESETS[args.preset]) if args.preset else {}
    if args.config:
        cfg = deep_update(cfg, json.loads(args.config.read_text(encoding="utf-8")))
    if not (args.official / "mova" / "diffusion").is_dir():
        parser.error(f"{args.official} is not a checkout of OpenMOSS/MOVA (no mova/diffusion)")
    record(cfg, args.name or args.preset or args.out.name, args.out, args.official.resolve(), args.force)


if __name__ == "__main__":
    main()
