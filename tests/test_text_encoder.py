"""umT5 text encoder, tokenizer and prompt embedding: parity with the official pipeline and unit checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing

from conftest import assert_close_to_reference
from mova_core.config import ConfigError, UMT5Config
from mova_core.ops import CastingOps
from mova_core.text_encoder import (
    TextEncoder, UMT5Encoder, UMT5Tokenizer, clean_prompt, load_text_encoder, load_umt5_encoder,
    relative_position_buckets,
)

MODULE_TOLERANCE = 1e-5  # single module, fp32 (README section 4)


# ------------------------------------------------------------------------------ parity (tiny-a and others)


@pytest.fixture(scope="module")
def ref(reference):
    return reference("text_encoder")


@pytest.fixture(scope="module")
def text_encoder(ref) -> TextEncoder:
    return load_text_encoder(ref.checkpoint / "text_encoder", max_length=ref.meta["max_sequence_length"])


def prompt_keys(ref) -> list[str]:
    return sorted(ref.meta["prompts"])


@pytest.mark.parity
def test_prompt_cleaning_matches_reference(ref):
    for key, prompt in ref.meta["prompts"].items():
        assert clean_prompt(prompt["raw"]) == prompt["cleaned"], key


@pytest.mark.parity
def test_token_ids_and_mask_match_exactly(text_encoder, ref):
    vocabulary = text_encoder.tokenizer.tokenizer
    for key in prompt_keys(ref):
        prompt = ref.meta["prompts"][key]
        input_ids, attention_mask = text_encoder.tokenizer([prompt["cleaned"]])
        assert torch.equal(input_ids, ref[f"{key}/input_ids"]), key
        assert torch.equal(attention_mask, ref[f"{key}/attention_mask"]), key
        assert int(attention_mask.sum()) == prompt["seq_len"], key
        tokens = [vocabulary.id_to_token(i) for i in input_ids[0, : prompt["seq_len"]].tolist()]
        assert tokens == prompt["tokens"], key


@pytest.mark.parity
def test_last_hidden_state_matches_reference(text_encoder, ref):
    for key in prompt_keys(ref):
        with torch.no_grad():
            hidden = text_encoder.model(ref[f"{key}/input_ids"], ref[f"{key}/attention_mask"])
        assert_close_to_reference(hidden, ref[f"{key}/last_hidden_state"], MODULE_TOLERANCE, key)


@pytest.mark.parity
def test_prompt_embeds_match_reference(text_encoder, ref):
    for key in prompt_keys(ref):
        prompt = ref.meta["prompts"][key]
        embeds = text_encoder.encode([prompt["raw"]])
        assert_close_to_reference(embeds, ref[f"{key}/prompt_embeds"], MODULE_TOLERANCE, key)
        assert not embeds[0, prompt["seq_len"]:].any(), f"{key}: rows past the prompt must be zero"
        assert embeds[0, : prompt["seq_len"]].abs().sum(-1).gt(0).all(), f"{key}: prompt rows must not be zero"


@pytest.mark.parity
def test_batch_prompt_embeds_match_reference(text_encoder, ref):
    prompts = [ref.meta["prompts"][key]["raw"] for key in ref.meta["batch_order"]]
    assert_close_to_reference(text_encoder.encode(prompts), ref["batch/prompt_embeds"], MODULE_TOLERANCE, "batch")


def split_into_shards(source, folder, *, embedding_key: str) -> None:
    """Re-save ``source``'s weights as two shards plus an index, the token table under ``embedding_key``."""
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text(encoding="utf-8"), encoding="utf-8")
    weights = load_file(str(source / "model.safetensors"))
    weights[embedding_key] = weights.pop("shared.weight")
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, shard_keys in shards.items():
        save_file({k: weights[k] for k in shard_keys}, str(folder / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")


@pytest.mark.parity
@pytest.mark.parametrize("embedding_key", ["shared.weight", "encoder.embed_tokens.weight"])
def test_sharded_checkpoint_with_either_embedding_name_loads(text_encoder, ref, tmp_path, embedding_key):
    split_into_shards(ref.checkpoint / "text_encoder", tmp_path / "text_encoder", embedding_key=embedding_key)
    model = load_umt5_encoder(tmp_path / "text_encoder")
    for name, tensor in text_encoder.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


# ------------------------------------------------------------------------------ unit tests


@pytest.mark.parametrize("raw, cleaned", [
    ("  a  b\n\tc  ", "a b c"),
    ("fish &amp;amp; chips", "fish & chips"),  # unescaped twice
    ("&lt;b&gt;", "<b>"),
    ("色调艳丽，过曝", "色调艳丽,过曝"),  # ftfy: full-width punctuation -> ASCII
    ("schÃ¶n", "schön"),  # ftfy repairs mojibake
    ("", ""),
])
def test_clean_prompt_examples(raw, cleaned):
    assert clean_prompt(raw) == cleaned


WORDS = ["<pad>", "</s>", "<unk>", "a", "cat", "dog"]


def write_word_tokenizer(folder, *, with_eos_template: bool = True):
    """A tiny word-level tokenizer.json with the T5 special tokens."""
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    if with_eos_template:
        tokenizer.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder.mkdir(exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.mark.parametrize("with_eos_template", [True, False])
def test_tokenizer_pads_appends_eos_and_masks(tmp_path, with_eos_template):
    tokenizer = UMT5Tokenizer.from_file(write_word_tokenizer(tmp_path, with_eos_template=with_eos_template), max_length=6)
    ids, mask = tokenizer(["a cat", "", "dog bird"])
    assert ids.tolist() == [[3, 4, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [5, 2, 1, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


def test_tokenizer_truncates_and_keeps_eos(tmp_path):
    tokenizer = UMT5Tokenizer.from_file(write_word_tokenizer(tmp_path) / "tokenizer.json", max_length=4)
    ids, mask = tokenizer(["a cat dog a cat"])
    assert ids.tolist() == [[3, 4, 5, 1]]
    assert mask.tolist() == [[1, 1, 1, 1]]


def test_missing_tokenizer_json_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.json"):
        UMT5Tokenizer.from_file(tmp_path)


def test_tokenizer_without_pad_token_raises(tmp_path):
    tokenizer = Tokenizer(WordLevel({"</s>": 0, "<unk>": 1}, unk_token="<unk>"))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ConfigError, match="<pad>"):
        UMT5Tokenizer.from_file(tmp_path)


def test_relative_position_buckets_known_values():
    """T5 bidirectional buckets (32 buckets, max distance 128): 8 exact distances per direction,
    positive offsets in the upper half, logarithmic bins saturating at the last bucket."""
    buckets = relative_position_buckets(300, 32, 128, torch.device("cpu"))
    query = 150
    expected = {0: 0, -1: 1, 1: 17, -7: 7, 7: 23, -8: 8, 8: 24, -16: 10, 16: 26, -127: 15, 127: 31, -149: 15, 149: 31}
    for offset, bucket in expected.items():
        assert buckets[query, query + offset] == bucket, offset


def test_config_ignores_generic_keys_but_checks_the_activation():
    values = {"d_model": 8, "num_heads": 2, "d_kv": 4, "d_ff": 16, "num_layers": 1, "vocab_size": 10,
              "use_cache": True, "scalable_attention": True, "feed_forward_proj": "gated-gelu"}
    assert UMT5Config.from_dict(values).inner_dim == 8
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        UMT5Config.from_dict({**values, "feed_forward_proj": "relu"})


TINY = UMT5Config(vocab_size=len(WORDS), d_model=8, d_kv=4, d_ff=16, num_layers=2, num_heads=2)


def random_umt5_weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) * 0.5 for k, v in UMT5Encoder(TINY).state_dict().items()}


def test_encode_zeroes_padding_rows_only(tmp_path):
    model = UMT5Encoder(TINY).eval()
    model.load_state_dict(random_umt5_weights())
    encoder = TextEncoder(UMT5Tokenizer.from_file(write_word_tokenizer(tmp_path), max_length=5), model)
    embeds = encoder.encode(["a  cat", "dog"])
    input_ids, attention_mask = encoder.tokenizer(["a cat", "dog"])
    with torch.no_grad():
        hidden = model(input_ids, attention_mask)
    assert embeds.shape == (2, 5, TINY.d_model)
    assert torch.equal(embeds[0, :3], hidden[0, :3]) and torch.equal(embeds[1, :2], hidden[1, :2])
    assert not embeds[0, 3:].any() and not embeds[1, 2:].any()
    assert hidden[0, 3:].any(), "the encoder itself does not zero padded rows"


def test_padding_does_not_change_real_rows():
    """The attention mask hides padded keys: real rows are the same at any padded length."""
    model = UMT5Encoder(TINY).eval()
    model.load_state_dict(random_umt5_weights())
    ids = torch.tensor([[3, 4, 1]])
    with torch.no_grad():
        short = model(ids, torch.ones_like(ids))
        padded = model(torch.tensor([[3, 4, 1, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]]))
    assert_close_to_reference(padded[:, :3], short, 1e-6, "real rows")


def test_load_text_encoder_finds_sibling_tokenizer_and_reports_missing_one(tmp_path):
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY.to_dict()), encoding="utf-8")
    save_file(random_umt5_weights(), str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match="tokenizer.json"):
        load_text_encoder(folder)
    write_word_tokenizer(tmp_path / "tokenizer")
    assert load_text_encoder(folder).encode("a cat").shape == (1, 512, TINY.d_model)


# Storage rounding only (bf16: 8 mantissa bits, fp8 e4m3: 3); measured about 0.008 and 0.15.
@pytest.mark.parametrize("dtype, rel", [(torch.bfloat16, 0.02), (torch.float8_e4m3fn, 0.25)])
def test_low_precision_storage_computes_in_bf16(tmp_path, dtype, rel):
    """dtype plumbing: bf16 storage (or fp8 Linear weights) runs end to end and returns bf16."""
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY.to_dict()), encoding="utf-8")
    save_file(random_umt5_weights(), str(folder / "model.safetensors"))
    write_word_tokenizer(tmp_path / "tokenizer")
    full = load_text_encoder(folder, max_length=8).encode("a cat dog")
    low = load_text_encoder(folder, max_length=8, dtype=dtype, operations=CastingOps).encode("a cat dog")
    assert low.dtype == torch.bfloat16
    assert_close_to_reference(low.float(), full, rel, str(dtype))


@pytest.mark.parametrize("prompts", [[], [None]])
def test_encode_rejects_bad_prompts(tmp_path, prompts):
    encoder = TextEncoder(UMT5Tokenizer.from_file(write_word_tokenizer(tmp_path)), UMT5Encoder(TINY).eval())
    with pytest.raises(ValueError, match="prompts"):
        encoder.encode(prompts)
