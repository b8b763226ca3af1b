"""Listing and resolving MOVA model folders and packed files under the models/mova search paths (no ComfyUI needed)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from comfyui_mova_av.mova_core.packed import (COMPONENTS_KEY, CONFIG_KEY_PREFIX, FORMAT_KEY, MODEL_INDEX_KEY, NETWORKS,
                                              SCHEDULER_KEY, VERSION_KEY)
from comfyui_mova_av.mova_core.safetensors_io import TensorEntry, write_streamed
from comfyui_mova_av.nodes.model_folders import (REQUIRED_COMPONENTS, component_problem, find_models,
                                                 missing_components, resolve_model)


def make_model(folder, components=REQUIRED_COMPONENTS):
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}", encoding="utf-8")
    for name in components:
        (folder / name).mkdir()
    return folder


@pytest.fixture
def roots(tmp_path):
    first, second = tmp_path / "models" / "mova", tmp_path / "extra" / "mova"
    make_model(first / "MOVA-360p")
    make_model(first / "OpenMOSS" / "MOVA-720p")  # nested one level (org/name)
    (first / "not-a-model" / "video_dit").mkdir(parents=True)  # no model_index.json
    (first / "readme.txt").write_text("hi", encoding="utf-8")
    (first / "weights.safetensors").write_bytes(b"")
    make_model(first / ".cache" / "hidden-model")
    make_model(second / "MOVA-360p")  # same name in a later root: listed once, first root wins
    make_model(second / "Other")
    return [first, second]


def test_lists_only_folders_with_model_index_once_sorted(roots):
    assert find_models(roots) == ["MOVA-360p", "OpenMOSS/MOVA-720p", "Other"]


def test_model_folders_are_not_searched_further(tmp_path):
    root = tmp_path / "mova"
    model = make_model(root / "A")
    make_model(model / "video_dit" / "inner")  # looks like a model but sits inside one
    assert find_models([root]) == ["A"]


def test_depth_limit_and_missing_roots(tmp_path):
    root = tmp_path / "mova"
    make_model(root / "a" / "b" / "c")
    make_model(root / "a" / "b" / "c2" / "too-deep")
    assert find_models([root, tmp_path / "does-not-exist"]) == ["a/b/c"]


def test_linked_models_are_listed(tmp_path):
    target = make_model(tmp_path / "elsewhere" / "big-model")
    root = tmp_path / "mova"
    root.mkdir()
    os.symlink(target, root / "linked", target_is_directory=True)
    assert find_models([root]) == ["linked"]
    assert resolve_model([root], "linked") == root / "linked"


def test_resolve_takes_the_first_root_that_has_the_model(roots):
    assert resolve_model(roots, "MOVA-360p") == roots[0] / "MOVA-360p"
    assert resolve_model(roots, "Other") == roots[1] / "Other"
    assert resolve_model(roots, "OpenMOSS/MOVA-720p") == roots[0] / "OpenMOSS" / "MOVA-720p"


def test_missing_model_names_the_input_the_folders_and_the_choices(roots):
    with pytest.raises(FileNotFoundError) as caught:
        resolve_model(roots, "MOVA-1080p")
    message = str(caught.value)
    assert message.startswith("model_name='MOVA-1080p'")
    assert str(roots[0]) in message and str(roots[1]) in message
    assert "available: ['MOVA-360p', 'OpenMOSS/MOVA-720p', 'Other']" in message


@pytest.mark.parametrize("name", ["../secret", "/etc", "a/../../b"])
def test_paths_outside_the_model_folders_are_refused(roots, name):
    with pytest.raises(FileNotFoundError, match="relative to models/mova"):
        resolve_model(roots, name)


def test_incomplete_folder_names_the_missing_components(tmp_path):
    folder = make_model(tmp_path / "half", components=("video_dit", "audio_dit", "scheduler"))
    assert missing_components(folder) == ["video_dit_2", "dual_tower_bridge", "video_vae", "audio_vae"]
    message = component_problem(folder, "half")
    assert "model_name='half'" in message and "video_dit_2/, dual_tower_bridge/, video_vae/, audio_vae/" in message
    complete = make_model(tmp_path / "full")
    assert component_problem(complete, "full") is None
    assert missing_components(complete, with_text_encoder=True) == ["text_encoder", "tokenizer"]


def write_packed(path, components=NETWORKS, **metadata):
    """A minimal packed MOVA file (one small tensor and an empty config per component)."""
    documents = {FORMAT_KEY: "mova-packed", VERSION_KEY: "1", COMPONENTS_KEY: json.dumps(list(components)),
                 MODEL_INDEX_KEY: "{}", SCHEDULER_KEY: "{}", **{CONFIG_KEY_PREFIX + name: "{}" for name in components}}
    entries = [TensorEntry(f"{name}.weight", torch.float32, (2,), torch.zeros(2).clone) for name in components]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_streamed(path, entries, {**documents, **metadata})
    return path


@pytest.fixture
def mixed_root(tmp_path):
    root = tmp_path / "mova"
    make_model(root / "MOVA-360p")
    write_packed(root / "MOVA-360p-fp8.safetensors")
    write_packed(root / "OpenMOSS" / "MOVA-720p.safetensors")
    write_packed(root / "broken.safetensors", components=NETWORKS[:-1])  # marked, but lacks audio_vae
    write_packed(root / "MOVA-360p" / "inside.safetensors")  # inside a model folder: not a model of its own
    write_packed(root / ".hidden.safetensors")
    save_file({"weight": torch.zeros(2)}, str(root / "plain.safetensors"), metadata={"format": "pt"})
    (root / "empty.safetensors").write_bytes(b"")
    (root / "notes.txt").write_text("not a model", encoding="utf-8")
    return root


def test_packed_files_are_listed_by_their_header_marker(mixed_root):
    assert find_models([mixed_root]) == ["MOVA-360p", "MOVA-360p-fp8.safetensors", "OpenMOSS/MOVA-720p.safetensors",
                                         "broken.safetensors"]


def test_packed_files_resolve_and_report_what_they_lack(mixed_root):
    packed = resolve_model([mixed_root], "OpenMOSS/MOVA-720p.safetensors")
    assert packed == mixed_root / "OpenMOSS" / "MOVA-720p.safetensors"
    assert component_problem(packed, "OpenMOSS/MOVA-720p.safetensors") is None
    broken = resolve_model([mixed_root], "broken.safetensors")
    message = component_problem(broken, "broken.safetensors")
    assert message.startswith("model_name='broken.safetensors': ") and "lacks the component(s) audio_vae" in message
    with pytest.raises(FileNotFoundError, match="plain.safetensors is not a packed MOVA checkpoint.*mova_core pack"):
        resolve_model([mixed_root], "plain.safetensors")


def test_a_file_becomes_listed_once_it_is_packed(tmp_path):
    root = tmp_path / "mova"
    root.mkdir()
    target = root / "later.safetensors"
    save_file({"weight": torch.zeros(2)}, str(target))
    assert find_models([root]) == []
    write_packed(root / "staging.bin").replace(target)  # a finished pack published under the listed name
    assert find_models([root]) == ["later.safetensors"]
