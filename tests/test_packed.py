"""Packed single-file MOVA checkpoints: layout, exact reproduction of the folder, dtypes, errors, atomic writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import REPO_ROOT
from mova_core import cli, safetensors_io
from mova_core.checkpoint import open_checkpoint
from mova_core.loading import CheckpointError, LazyStateDict, PackedComponent
from mova_core.pack import FP8_NETWORKS, pack_checkpoint
from mova_core.packed import (COMPONENTS_KEY, CONFIG_KEY_PREFIX, FORMAT_KEY, MODEL_INDEX_KEY, NETWORKS, SCHEDULER_KEY,
                              TEXT_ENCODER, TOKENIZER_KEY, VERSION_KEY, inspect_packed, read_packed)
from mova_core.pipeline import MovaPipeline
from mova_core.safetensors_io import TensorEntry, read_header, stored_tensors, write_streamed
from mova_core.tiny import write_tiny_checkpoint

SMALL = dict(height=32, width=48, num_frames=5, fps=24.0, steps=2, text_cfg=3.0)
COMPONENTS = (*NETWORKS, TEXT_ENCODER)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def packed(folder, tmp_path_factory):
    return pack_checkpoint(folder, tmp_path_factory.mktemp("packed") / "tiny.safetensors")


def folder_weights(folder, name) -> dict[str, torch.Tensor]:
    (file,) = (folder / name).glob("*.safetensors")
    return load_file(str(file))


def networks(pipe: MovaPipeline) -> dict[str, nn.Module]:
    found = {**pipe.experts, "audio_dit": pipe.audio_dit, "dual_tower_bridge": pipe.bridge,
             "video_vae": pipe.video_vae, "audio_vae": pipe.audio_vae}
    if pipe.text_encoder is not None:
        found[TEXT_ENCODER] = pipe.text_encoder.model
    return found


def assert_same_weights(first: MovaPipeline, second: MovaPipeline) -> None:
    for (name, a), b in zip(networks(first).items(), networks(second).values(), strict=True):
        state_a, state_b = a.state_dict(), b.state_dict()
        assert state_a.keys() == state_b.keys(), name
        for key in state_a:
            assert state_a[key].dtype == state_b[key].dtype and torch.equal(state_a[key], state_b[key]), f"{name}.{key}"


def into_fresh_memory(pipe: MovaPipeline) -> MovaPipeline:
    """Copy every weight out of its memory-mapped file. CPU kernels round differently (last bits) depending on the
    data's address alignment, and mmap'd weights keep their file offsets, which differ between the folder's files
    and the packed file; fresh allocations share one alignment."""
    for network in networks(pipe).values():
        network._apply(torch.clone)
    return pipe


def test_layout_prefixes_every_official_key_and_stores_the_documents(folder, packed):
    header = read_header(packed)
    metadata = header.pop("__metadata__")
    expected = {f"{name}.{key}": tensor for name in COMPONENTS for key, tensor in folder_weights(folder, name).items()}
    assert set(header) == set(expected)
    with safe_open(str(packed), framework="pt") as file:
        for key, tensor in expected.items():
            assert torch.equal(file.get_tensor(key), tensor), key  # no dtype given: bit-exact copies
    assert (metadata[FORMAT_KEY], metadata[VERSION_KEY]) == ("mova-packed", "1")
    assert json.loads(metadata[COMPONENTS_KEY]) == list(COMPONENTS)
    assert all(isinstance(value, str) for value in metadata.values())
    read = lambda *parts: json.loads(folder.joinpath(*parts).read_text(encoding="utf-8"))  # noqa: E731
    assert json.loads(metadata[MODEL_INDEX_KEY]) == read("model_index.json")
    assert json.loads(metadata[SCHEDULER_KEY]) == read("scheduler", "scheduler_config.json")
    for name in COMPONENTS:
        assert json.loads(metadata[CONFIG_KEY_PREFIX + name]) == read(name, "config.json")
    assert metadata[TOKENIZER_KEY] == (folder / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")


def test_packed_file_reproduces_the_folder_exactly(folder, packed):
    from_folder = MovaPipeline.from_pretrained(folder, dtype=torch.float32)
    from_file = MovaPipeline.from_pretrained(packed, dtype=torch.float32)
    assert_same_weights(from_folder, from_file)
    assert from_file.model_index == from_folder.model_index
    assert from_file.scheduler.config == from_folder.scheduler.config
    red = torch.zeros(40, 60, 3, dtype=torch.uint8)
    red[..., 0] = 255
    for pipe in (from_folder, from_file):
        into_fresh_memory(pipe)
    for image in (None, red):  # T2VA and I2VA, text CFG on: tokenizer, umT5, both experts, bridge, both VAEs
        expected = from_folder.generate("a dog on the beach", image=image, seed=3, **SMALL)
        result = from_file.generate("a dog on the beach", image=image, seed=3, **SMALL)
        assert torch.equal(result.video, expected.video) and torch.equal(result.audio, expected.audio)


def stored_dtypes(path) -> dict[str, str]:
    return {key: entry["dtype"] for key, entry in read_header(path).items() if key != "__metadata__"}


def linear_weight_keys(pipe: MovaPipeline) -> set[str]:
    return {f"{name}.{module_name}.weight" for name, network in networks(pipe).items() if name in FP8_NETWORKS
            for module_name, module in network.named_modules() if isinstance(module, nn.Linear)}


def test_bf16_packing_stores_every_float_tensor_in_bf16(folder, tmp_path):
    path = pack_checkpoint(folder, tmp_path / "bf16.safetensors", dtype=torch.bfloat16)
    assert set(stored_dtypes(path).values()) == {"BF16"}
    assert read_packed(path).metadata["mova.weight_dtype"] == "bfloat16"
    assert_same_weights(MovaPipeline.from_pretrained(folder, dtype=torch.bfloat16),
                        MovaPipeline.from_pretrained(path, dtype=torch.bfloat16))


def test_fp8_packing_stores_linear_weights_in_fp8_and_the_rest_in_bf16(folder, tmp_path):
    path = pack_checkpoint(folder, tmp_path / "fp8.safetensors", dtype=torch.float8_e4m3fn)
    from_folder = MovaPipeline.from_pretrained(folder, dtype=torch.float8_e4m3fn)
    fp8_keys = linear_weight_keys(from_folder)
    assert fp8_keys and any(key.startswith(f"{TEXT_ENCODER}.") for key in fp8_keys)
    dtypes = stored_dtypes(path)
    assert {key for key, dtype in dtypes.items() if dtype == "F8_E4M3"} == fp8_keys
    assert {dtype for key, dtype in dtypes.items() if key not in fp8_keys} == {"BF16"}  # VAEs, norms, biases, tables
    assert_same_weights(from_folder, MovaPipeline.from_pretrained(path, dtype=torch.float8_e4m3fn))


def test_without_text_encoder_prompts_must_come_as_embeddings(folder, tmp_path):
    path = pack_checkpoint(folder, tmp_path / "no_te.safetensors", include_text_encoder=False)
    header = read_header(path)
    metadata = header.pop("__metadata__")
    assert json.loads(metadata[COMPONENTS_KEY]) == list(NETWORKS) and TOKENIZER_KEY not in metadata
    assert not any(key.startswith(f"{TEXT_ENCODER}.") for key in header)
    assert not {TEXT_ENCODER, "tokenizer"} & set(json.loads(metadata[MODEL_INDEX_KEY]))
    pipe = MovaPipeline.from_pretrained(path, dtype=torch.float32)
    assert pipe.text_encoder is None
    with pytest.raises(ValueError, match="no text encoder.*--no-text-encoder"):
        pipe.generate("a dog", **SMALL)
    with pytest.raises(FileNotFoundError, match=f"{path}.*packed without the text encoder"):
        open_checkpoint(path).load_text_encoder(dtype=torch.float32, device="cpu")


def repacked(source, target, *, drop_prefix: str = "", drop_key: str = "", components=None):
    """A copy of packed file ``source`` without some tensors and, optionally, with another component list."""
    with safe_open(str(source), framework="pt") as file:
        metadata = dict(file.metadata())
        tensors = {key: file.get_tensor(key) for key in file.keys()
                   if not (drop_prefix and key.startswith(drop_prefix)) and key != drop_key}
    if components is not None:
        metadata[COMPONENTS_KEY] = json.dumps(components)
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_a_file_without_the_marker_is_refused_naming_the_file(folder, tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file(folder_weights(folder, "video_dit"), str(plain), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{plain} is not a packed MOVA checkpoint.*mova_core pack"):
        MovaPipeline.from_pretrained(plain)
    assert inspect_packed(plain).marked is False
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        MovaPipeline.from_pretrained(junk)


def test_missing_components_are_named_with_the_file(packed, tmp_path):
    unlisted = repacked(packed, tmp_path / "unlisted.safetensors", drop_prefix="audio_vae.",
                        components=[name for name in COMPONENTS if name != "audio_vae"])
    with pytest.raises(CheckpointError, match=f"{unlisted} lacks the component\\(s\\) audio_vae"):
        MovaPipeline.from_pretrained(unlisted)
    emptied = repacked(packed, tmp_path / "emptied.safetensors", drop_prefix="dual_tower_bridge.")
    with pytest.raises(CheckpointError, match="lists the component\\(s\\) dual_tower_bridge but holds no tensors"):
        MovaPipeline.from_pretrained(emptied)
    assert "dual_tower_bridge" in inspect_packed(emptied).problem


def test_key_errors_name_the_file_and_the_component(packed, tmp_path):
    broken = repacked(packed, tmp_path / "broken.safetensors", drop_key="video_dit_2.head.head.weight")
    with pytest.raises(CheckpointError) as caught:
        MovaPipeline.from_pretrained(broken, dtype=torch.float32)
    assert f"{broken} (component video_dit_2) does not match DiTTower: missing keys (1): ['head.head.weight']" \
        in str(caught.value)


def read_header_length(path) -> int:
    with open(path, "rb") as file:
        return int.from_bytes(file.read(8), "little")


def leftovers(folder) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def test_a_failed_pack_leaves_no_file(folder, tmp_path):
    out_dir = tmp_path / "out"

    def fail_halfway(done: int, total: int) -> None:
        if done > total // 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        pack_checkpoint(folder, out_dir / "model.safetensors", progress=fail_halfway)
    assert leftovers(out_dir) == []


def test_a_header_over_the_safetensors_limit_is_refused_before_writing(folder, tmp_path, monkeypatch):
    largest_source = max(read_header_length(file) for file in folder.rglob("*.safetensors"))
    monkeypatch.setattr(safetensors_io, "MAX_HEADER_BYTES", largest_source)  # every source reads, the pack cannot
    with pytest.raises(CheckpointError, match=f"safetensors reads at most {largest_source:,}"):
        pack_checkpoint(folder, tmp_path / "model.safetensors")
    assert leftovers(tmp_path) == []


def test_existing_files_and_bad_arguments_are_refused(folder, tmp_path):
    existing = tmp_path / "model.safetensors"
    existing.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="never overwritten"):
        pack_checkpoint(folder, existing)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(ValueError, match="must end with .safetensors"):
        pack_checkpoint(folder, tmp_path / "model.bin")
    with pytest.raises(ValueError, match="dtype=torch.int8 is not supported"):
        pack_checkpoint(folder, tmp_path / "int8.safetensors", dtype=torch.int8)
    with pytest.raises(FileNotFoundError, match="model_index.json is missing"):
        pack_checkpoint(tmp_path, tmp_path / "nothing.safetensors")
    assert leftovers(tmp_path) == ["model.safetensors"]


def test_cli_pack_converts_and_leaves_out_the_text_encoder(folder, tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    assert cli.main(["pack", "--model", str(folder), "--out", str(out), "--dtype", "bfloat16", "--no-text-encoder"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert read_packed(out).components == NETWORKS
    assert set(stored_dtypes(out).values()) == {"BF16"}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def test_streamed_writer_round_trips_every_dtype_through_safetensors(tmp_path):
    tensors = {"matrix": torch.randn(3, 5), "half": torch.randn(7).half(), "brain": torch.randn(2, 2).bfloat16(),
               "fp8": torch.randn(4, 4).to(torch.float8_e4m3fn), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
               "flags": torch.tensor([True, False]), "ids": torch.arange(6, dtype=torch.int64).view(2, 3)}
    entries = [TensorEntry(key, tensor.dtype, tuple(tensor.shape), lambda tensor=tensor: tensor)
               for key, tensor in tensors.items()]
    path = tmp_path / "all.safetensors"
    write_streamed(path, entries, {"note": "ünïcode"})
    loaded = load_file(str(path))
    assert all(same_bits(loaded[key], tensor) for key, tensor in tensors.items())
    stored = stored_tensors(path)
    assert [t.key for t in stored] == list(tensors) and all(same_bits(t.read(), tensors[t.key]) for t in stored)
    with safe_open(str(path), framework="pt") as file:
        assert file.metadata() == {"note": "ünïcode"}
    assert (8 + read_header_length(path)) % 8 == 0  # byte buffer aligned like safetensors'
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size - 1)
    with pytest.raises(CheckpointError, match="ids is cut short"):
        stored_tensors(path)[-1].read()


def test_prefixed_lazy_state_dict_sees_one_component(packed):
    with LazyStateDict([packed], prefix="audio_dit.") as weights:
        with safe_open(str(packed), framework="pt") as file:
            expected = [key.removeprefix("audio_dit.") for key in file.keys() if key.startswith("audio_dit.")]
            assert sorted(weights) == sorted(expected)
            key = expected[0]
            assert torch.equal(weights[key], file.get_tensor(f"audio_dit.{key}"))
            assert weights.shape(key) == tuple(file.get_slice(f"audio_dit.{key}").get_shape())
    component = open_checkpoint(packed).component("audio_dit")
    assert component == PackedComponent(packed, "audio_dit", {}) and str(component) == f"{packed} (component audio_dit)"


def test_inspection_follows_file_changes(packed, tmp_path):
    path = tmp_path / "changing.safetensors"
    path.write_bytes(packed.read_bytes())
    assert inspect_packed(path).marked and inspect_packed(path).problem is None
    repacked(packed, path.with_name("tmp.safetensors"), drop_prefix="video_vae.",
             components=[name for name in COMPONENTS if name != "video_vae"]).replace(path)
    assert inspect_packed(path).marked and "video_vae" in inspect_packed(path).problem


@pytest.mark.slow
def test_packing_holds_one_tensor_at_a_time(folder, tmp_path):
    """Peak RSS grows by about the largest tensor, not by the weights (24 x 16 MiB here); memory-mapped reads
    would keep every page read resident until the end (measured: +127 MiB for half these weights)."""
    big = tmp_path / "big"
    shutil.copytree(folder, big)
    (weights,) = (big / "video_dit").glob("*.safetensors")
    save_file({f"big.{i}.weight": torch.randn(1024, 4096) for i in range(24)}, str(weights))
    script = ("import resource, sys, torch; from mova_core.pack import pack_checkpoint; "
              "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024; before = peak(); "
              "pack_checkpoint(sys.argv[1], sys.argv[2], dtype=torch.bfloat16); print(peak() - before)")
    done = subprocess.run([sys.executable, "-c", script, str(big), str(tmp_path / "big.safetensors")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 96 * 2**20, f"peak RSS grew by {int(done.stdout) / 2**20:.0f} MiB for 384 MiB of weights"
