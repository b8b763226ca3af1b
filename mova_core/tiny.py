"""A tiny, randomly initialised MOVA checkpoint in the official folder layout.

Used by the demo and the tests: every component is built from this package's own modules (whose
state-dict keys are the official ones), filled with seeded random weights and saved exactly as the
official ``save_pretrained`` lays a MOVA folder out, so it loads through the same code path as the
real 60 GB checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import nn

from .audio_vae import DAC
from .bridge import DualTowerBridge
from .config import BridgeConfig, ConfigBase, DACConfig, DiTConfig, SchedulerConfig, UMT5Config, VideoVAEConfig
from .dit import DiTTower
from .text_encoder import UMT5Encoder
from .video_vae import VideoVAE

TEXT_DIM = 32
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
_COMPLETE_MARKER = ".complete"
_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
_WORDS = ("a the cat dog sea wave waves beach play plays on in and with sound music talks speaks says "
          "hello woman man sings guitar rain city night").split()

VIDEO_DIT = DiTConfig(dim=96, in_dim=36, ffn_dim=192, out_dim=16, text_dim=TEXT_DIM, freq_dim=32, num_heads=4,
                      num_layers=2, patch_size=(1, 2, 2))
AUDIO_DIT = DiTConfig(dim=48, in_dim=32, ffn_dim=96, out_dim=32, text_dim=TEXT_DIM, freq_dim=32, num_heads=2,
                      num_layers=2, patch_size=(1,), vae_type="dac", require_vae_embedding=False)
BRIDGE = BridgeConfig(visual_layers=2, audio_layers=2, visual_hidden_dim=96, audio_hidden_dim=48, audio_fps=50.0,
                      head_dim=24, interaction_strategy="full", apply_cross_rope=True)
VIDEO_VAE = VideoVAEConfig(base_dim=8, z_dim=16)
AUDIO_VAE = DACConfig(encoder_dim=2, encoder_rates=(2, 3, 4, 5, 8), latent_dim=32, decoder_dim=64,
                      decoder_rates=(8, 5, 4, 3, 2), sample_rate=48000, continuous=True, use_weight_norm=False)
TEXT = UMT5Config(vocab_size=128, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
SCHEDULER = SchedulerConfig(shift=5.0, extra_one_step=True)


def _random_tensor(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Seeded weights on a sane scale: N(0, 1/fan_in) matrices, 1 + 0.1·N scales, 0.1·N biases,
    U(1, 1.25) Snake alphas, N/sqrt(dim) modulation tables."""
    leaf = name.rsplit(".", 1)[-1]
    noise = torch.randn(shape, generator=generator)
    if leaf == "alpha":
        return 1.0 + 0.25 * torch.rand(shape, generator=generator)
    if leaf == "bias" or (leaf.endswith("_bias") and len(shape) == 1):
        return 0.1 * noise
    if leaf in ("modulation", "probe"):
        return noise / math.sqrt(shape[-1])
    if len(shape) == 1 or leaf == "gamma":
        return 1.0 + 0.1 * noise
    if name.endswith(("relative_attention_bias.weight", "shared.weight")):
        return 0.5 * noise
    fan_in = shape[1:].numel() if len(shape) > 1 else shape[0]
    return noise / math.sqrt(fan_in)


def random_state_dict(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: _random_tensor(name, tensor.shape, generator).contiguous()
            for name, tensor in module.state_dict().items()}


def _write_component(folder: Path, module: nn.Module, config: dict[str, Any], seed: int,
                     weights_file: str = WEIGHTS_FILE) -> None:
    folder.mkdir(parents=True)
    save_file(random_state_dict(module, seed), str(folder / weights_file))
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def _config(config: ConfigBase, class_name: str, **extra: Any) -> dict[str, Any]:
    return {"_class_name": class_name, **config.to_dict(), **extra}


def build_tokenizer() -> Tokenizer:
    """A small umT5-style Unigram tokenizer (Metaspace, ``</s>`` appended) covering ASCII text."""
    pieces = [(token, 0.0) for token in _SPECIAL_TOKENS] + [("\u2581", -3.0)]
    pieces += [(c, -8.0 - 0.01 * i) for i, c in enumerate(string.ascii_letters + string.digits + string.punctuation)]
    pieces += [("\u2581" + word, -4.0 - 0.01 * i) for i, word in enumerate(_WORDS)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=_SPECIAL_TOKENS.index("<unk>"), byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "\u2581")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", _SPECIAL_TOKENS.index("</s>"))])
    tokenizer.add_special_tokens(list(_SPECIAL_TOKENS))
    return tokenizer


def _write_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "model_max_length": 512, **special}, indent=2), encoding="utf-8")


def _model_index(boundary_ratio: float) -> dict[str, Any]:
    return {
        "_class_name": "MOVA", "audio_vae_type": "dac", "boundary_ratio": boundary_ratio,
        "video_dit": ["mova.diffusion.models.wan_video_dit", "WanModel"],
        "video_dit_2": ["mova.diffusion.models.wan_video_dit", "WanModel"],
        "audio_dit": ["mova.diffusion.models.wan_audio_dit", "WanAudioModel"],
        "dual_tower_bridge": ["mova.diffusion.models.interactionv2", "DualTowerConditionalBridge"],
        "audio_vae": ["mova.diffusion.models.dac_vae", "DAC"],
        "video_vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "scheduler": ["mova.diffusion.schedulers.flow_match_pair", "FlowMatchPairScheduler"],
    }


def write_tiny_checkpoint(folder: str | Path, *, seed: int = 0, boundary_ratio: float = 0.9,
                          video_dit: DiTConfig = VIDEO_DIT, audio_dit: DiTConfig = AUDIO_DIT,
                          bridge: BridgeConfig = BRIDGE, scheduler: SchedulerConfig = SCHEDULER) -> Path:
    """Write a complete tiny MOVA folder at ``folder`` (which must not exist yet); the denoiser
    shapes (for example a benchmark's wider networks), the scheduler and the boundary can be replaced."""
    root = Path(folder)
    if root.exists():
        raise FileExistsError(f"{root} already exists; choose a new folder for the tiny checkpoint.")
    with torch.device("meta"):  # shapes only: the weights are drawn by random_state_dict
        modules = {
            "video_dit": DiTTower(video_dit), "video_dit_2": DiTTower(video_dit), "audio_dit": DiTTower(audio_dit),
            "dual_tower_bridge": DualTowerBridge(bridge), "video_vae": VideoVAE(VIDEO_VAE),
            "audio_vae": DAC(AUDIO_VAE), "text_encoder": UMT5Encoder(TEXT),
        }
    configs = {
        "video_dit": _config(video_dit, "WanModel"), "video_dit_2": _config(video_dit, "WanModel"),
        "audio_dit": _config(audio_dit, "WanAudioModel"),
        "dual_tower_bridge": _config(bridge, "DualTowerConditionalBridge"),
        "video_vae": _config(VIDEO_VAE, "AutoencoderKLWan", is_residual=False),
        "audio_vae": _config(AUDIO_VAE, "DAC"),
        "text_encoder": {"architectures": ["UMT5EncoderModel"], "model_type": "umt5",
                         "feed_forward_proj": "gated-gelu", **TEXT.to_dict()},
    }
    root.mkdir(parents=True)
    for offset, (name, module) in enumerate(modules.items()):
        weights_file = "model.safetensors" if name == "text_encoder" else WEIGHTS_FILE
        _write_component(root / name, module, configs[name], seed * 1000 + offset, weights_file)
    _write_tokenizer(root / "tokenizer")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(_config(scheduler, "FlowMatchPairScheduler"), indent=2), encoding="utf-8")
    (root / "model_index.json").write_text(json.dumps(_model_index(boundary_ratio), indent=2), encoding="utf-8")
    return root


def default_cache_dir() -> Path:
    return Path(os.environ.get("MOVA_CACHE_DIR", Path.home() / ".cache" / "mova_core"))


def cached_tiny_checkpoint(cache_dir: str | Path | None = None, *, seed: int = 0) -> Path:
    """The tiny checkpoint in ``cache_dir`` (built once, atomically: a half-written one is never used)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"tiny-mova-seed{seed}"
    if (target / _COMPLETE_MARKER).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-mova-", dir=cache))
    try:
        built = write_tiny_checkpoint(staging / "model", seed=seed)
        (built / _COMPLETE_MARKER).write_text("ok", encoding="utf-8")
        if target.exists():  # an incomplete leftover of an interrupted build
            shutil.rmtree(target)
        built.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
