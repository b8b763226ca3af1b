"""umT5 text encoder, its tokenizer and MOVA's prompt embedding (``text_encoder/`` + ``tokenizer/``).

:meth:`TextEncoder.encode` reproduces the official ``_get_t5_prompt_embeds``: clean the prompt,
tokenize to a fixed 512 tokens (``</s>`` appended, ``<pad>`` after), run the umT5 encoder with the
attention mask and zero every row past the real length. The result always has all 512 rows.

umT5 (HF ``UMT5EncoderModel``): T5 RMS norms computed in fp32, self-attention without the
1/sqrt(d) scale and with a relative position bias per layer (bidirectional buckets), gated-GELU
(tanh) feed-forward, pre-norm residuals, final RMS norm.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import ftfy
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing
from torch import nn

from .config import ConfigError, UMT5Config
from .loading import ComponentPath, KeyView, LazyStateDict, load_network
from .ops import cast_like

MAX_SEQUENCE_LENGTH = 512
PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
EMBEDDING_KEY = "shared.weight"
ALTERNATIVE_EMBEDDING_KEY = "encoder.embed_tokens.weight"  # the same (tied) table under the encoder's name


def clean_prompt(text: str) -> str:
    """The official ``prompt_clean``: ftfy, HTML-unescape twice, strip, collapse whitespace runs.

    ftfy also turns full-width punctuation into ASCII (``，`` -> ``,``).
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------------------------
# Tokenizer


def parse_tokenizer(document: str, source: str) -> Tokenizer:
    """A fast-tokenizer JSON document; ConfigError naming ``source`` and the fix when it is broken."""
    try:
        return Tokenizer.from_str(document)
    except Exception as error:  # tokenizers raises plain Exception for every parse problem
        raise ConfigError(f"{source}: not a readable tokenizer.json ({str(error)[:200]}); re-download or re-pack the "
                          "checkpoint's tokenizer.") from None


class UMT5Tokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library, called like MOVA calls ``T5TokenizerFast``:
    ``padding="max_length"``, ``truncation=True``, special tokens on (``</s>`` appended by the file's
    post-processor), attention mask returned.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int = MAX_SEQUENCE_LENGTH, *, source: str = "tokenizer"):
        self.pad_id = self._token_id(tokenizer, PAD_TOKEN, source)
        self.eos_id = self._token_id(tokenizer, EOS_TOKEN, source)
        if tokenizer.post_processor is None:  # what the slow T5Tokenizer does; converted T5 files already say so
            tokenizer.post_processor = TemplateProcessing(single=f"$A {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, self.eos_id)])
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=PAD_TOKEN)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @staticmethod
    def _token_id(tokenizer: Tokenizer, token: str, source: str) -> int:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ConfigError(f"{source}: the vocabulary has no {token!r} token; is this a T5/umT5 tokenizer.json?")
        return token_id

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = MAX_SEQUENCE_LENGTH) -> "UMT5Tokenizer":
        """``path`` is the ``tokenizer/`` folder or its ``tokenizer.json``."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(
                f"{file} not found: the umT5 tokenizer needs tokenizer.json (the fast-tokenizer file of the "
                "checkpoint's tokenizer/ folder; spiece.model alone is not read)."
            )
        return cls(parse_tokenizer(file.read_text(encoding="utf-8", errors="replace"), str(file)), max_length,
                   source=str(file))

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``texts`` -> ``(input_ids, attention_mask)``, both int64 ``[len(texts), max_length]``."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask


# --------------------------------------------------------------------------------------------
# umT5 encoder


class T5LayerNorm(nn.Module):
    """RMS norm without mean or bias; the statistics are computed in fp32, the result is
    rounded to the input dtype before the scale (as transformers does for half precision)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        normed = (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)
        return cast_like(self.weight, x) * normed


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """T5's bidirectional bucket of ``key - query`` for every ``[query, key]`` pair: half the
    buckets per direction, exact up to ``num_buckets // 4``, then logarithmic up to ``max_distance``."""
    position = torch.arange(length, device=device)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    direction = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    log_ratio = torch.log(distance.clamp_min(exact).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp_max(half - 1)
    return direction + torch.where(distance < exact, distance, far)


class UMT5Attention(nn.Module):
    """Self-attention with this layer's own relative position bias and no score scaling."""

    def __init__(self, config: UMT5Config, operations: Any):
        super().__init__()
        self.config = config
        self.q = operations.Linear(config.d_model, config.inner_dim, bias=False)
        self.k = operations.Linear(config.d_model, config.inner_dim, bias=False)
        self.v = operations.Linear(config.d_model, config.inner_dim, bias=False)
        self.o = operations.Linear(config.inner_dim, config.d_model, bias=False)
        self.relative_attention_bias = operations.Embedding(config.relative_attention_num_buckets, config.num_heads)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.config.num_heads, self.config.d_kv).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d_model]``; ``mask_bias [B, 1, 1, L]`` (0 for real tokens, a huge negative for padding)."""
        batch, length, _ = x.shape
        buckets = relative_position_buckets(length, self.config.relative_attention_num_buckets,
                                            self.config.relative_attention_max_distance, x.device)
        position_bias = self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # [1, heads, L, L]
        scores = self._heads(self.q(x)) @ self._heads(self.k(x)).transpose(-1, -2)
        scores = scores + (position_bias.to(scores.dtype) + mask_bias)
        weights = F.softmax(scores.float(), dim=-1).to(scores.dtype)
        context = (weights @ self._heads(self.v(x))).transpose(1, 2).reshape(batch, length, -1)
        return self.o(context)


class UMT5SelfAttentionLayer(nn.Module):
    def __init__(self, config: UMT5Config, operations: Any):
        super().__init__()
        self.SelfAttention = UMT5Attention(config, operations)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), mask_bias)


class UMT5GatedFeedForward(nn.Module):
    """``wo(gelu_tanh(wi_0 x) * wi_1 x)``."""

    def __init__(self, config: UMT5Config, operations: Any):
        super().__init__()
        self.wi_0 = operations.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = operations.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = operations.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class UMT5FeedForwardLayer(nn.Module):
    def __init__(self, config: UMT5Config, operations: Any):
        super().__init__()
        self.DenseReluDense = UMT5GatedFeedForward(config, operations)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class UMT5Block(nn.Module):
    def __init__(self, config: UMT5Config, operations: Any):
        super().__init__()
        self.layer = nn.ModuleList([UMT5SelfAttentionLayer(config, operations), UMT5FeedForwardLayer(config, operations)])

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.layer[1](self.layer[0](x, mask_bias))


class UMT5Stack(nn.Module):
    def __init__(self, config: UMT5Config, operations: Any):
        super().__init__()
        self.block = nn.ModuleList([UMT5Block(config, operations) for _ in range(config.num_layers)])
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x, mask_bias)
        return self.final_layer_norm(x)


class UMT5Encoder(nn.Module):
    """``UMT5EncoderModel``: token ids ``[B, L]`` + attention mask ``[B, L]`` -> ``last_hidden_state [B, L, d_model]``.

    Keys: ``shared.weight``, ``encoder.block.{i}.layer.{0,1}.*``, ``encoder.final_layer_norm.weight``.
    Computes in the dtype of the embedding table (the storage dtype, or the compute dtype for fp8).
    """

    def __init__(self, config: UMT5Config, operations: Any = nn):
        super().__init__()
        self.config = config
        self.shared = operations.Embedding(config.vocab_size, config.d_model)
        self.encoder = UMT5Stack(config, operations)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                             "must both be [batch, tokens].")
        x = self.shared(input_ids)
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        return self.encoder(x, mask_bias)


def embedding_under_shared_name(weights: LazyStateDict) -> Mapping[str, torch.Tensor]:
    """Files may name the (tied) token table ``shared.weight``, ``encoder.embed_tokens.weight`` or both."""
    if ALTERNATIVE_EMBEDDING_KEY not in weights:
        return weights
    sources = {k: (k,) for k in weights if k != ALTERNATIVE_EMBEDDING_KEY}
    sources.setdefault(EMBEDDING_KEY, (ALTERNATIVE_EMBEDDING_KEY,))
    return KeyView(weights, sources)


def load_umt5_encoder(
    path: ComponentPath,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations: Any = None,
    config: UMT5Config | None = None,
) -> UMT5Encoder:
    """Load ``text_encoder/`` (``config.json`` + ``model.safetensors`` or shards with an index)."""
    return load_network(UMT5Encoder, UMT5Config, path, config=config, dtype=dtype, device=device,
                        operations=operations, convert=embedding_under_shared_name)


# --------------------------------------------------------------------------------------------
# Prompt embedding


class TextEncoder:
    """Prompts -> ``[B, max_length, d_model]`` embeddings, rows past each prompt's length zeroed."""

    def __init__(self, tokenizer: UMT5Tokenizer, model: UMT5Encoder):
        self.tokenizer = tokenizer
        self.model = model
        self.compute_device: torch.device | None = None
        """Where prompts are encoded; None = where the token table is (a host that loads weights onto its
        device in parts, such as ComfyUI in low-VRAM mode, sets it)."""

    @property
    def device(self) -> torch.device:
        return self.compute_device or self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """The official ``_get_t5_prompt_embeds``: ``[len(prompts), max_length, d_model]`` in :attr:`dtype`."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a string or a non-empty list of strings.")
        input_ids, attention_mask = self.tokenizer([clean_prompt(p) for p in prompts])
        attention_mask = attention_mask.to(self.device)
        hidden = self.model(input_ids.to(self.device), attention_mask)
        return hidden.masked_fill(attention_mask[..., None] == 0, 0.0)


def load_text_encoder(
    path: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations: Any = None,
    max_length: int = MAX_SEQUENCE_LENGTH,
) -> TextEncoder:
    """umT5 from ``path`` (``text_encoder/``) and the tokenizer from ``tokenizer_path``
    (default: the ``tokenizer/`` folder next to ``path``, as in the official checkpoint layout)."""
    path = Path(path)
    if tokenizer_path is None:
        tokenizer_path = (path if path.is_dir() else path.parent).parent / "tokenizer"
    tokenizer = UMT5Tokenizer.from_file(tokenizer_path, max_length)
    return TextEncoder(tokenizer, load_umt5_encoder(path, dtype=dtype, device=device, operations=operations))
