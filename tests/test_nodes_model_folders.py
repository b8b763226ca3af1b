"""Listing and resolving MOVA model folders under the models/mova search paths (no ComfyUI needed)."""

from __future__ import annotations

import os

import pytest

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
