"""The ComfyUI node path (MOVA Sampler -> MOVA Decode, under the ComfyUI stand-in) computes exactly what
``MovaPipeline.generate`` computes, on checkpoints whose boundary and shift differ from MOVA's 0.9 / 5."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from comfy_stub import loaded_pack
from conftest import parity_dirs
from mova_core.pipeline import DEFAULT_NEGATIVE_PROMPT, MovaPipeline
from mova_core.sampler import HIGH_NOISE_EXPERT
from mova_core.tiny import SCHEDULER, write_tiny_checkpoint

PROMPT = "a drummer on a rooftop at dusk"


class StandaloneModel:
    """What the node code reads of a MOVA_MODEL, over a standalone pipeline (its own residency)."""

    def __init__(self, pipeline: MovaPipeline):
        self.pipeline = pipeline
        self.patchers = {HIGH_NOISE_EXPERT: None}
        self.residency = pipeline.residency
        self.text_dim = pipeline.experts[HIGH_NOISE_EXPERT].config.text_dim
        self.negatives: list[str] = []

    def default_negative(self, prompt: str) -> torch.Tensor:
        self.negatives.append(prompt)
        return self.pipeline.encode_prompt(prompt)


@pytest.fixture(scope="module")
def generation():
    """``nodes.generation`` under the stand-in, with the few ComfyUI runtime calls it makes answered on the CPU."""
    with loaded_pack() as pack:
        module = pack.module("nodes.generation")
        model_management = importlib.import_module("comfy.model_management")
        model_management.intermediate_device = lambda: torch.device("cpu")
        model_management.throw_exception_if_processing_interrupted = lambda: None
        importlib.import_module("latent_preview").prepare_callback = lambda patcher, steps: (lambda *args: None)
        yield module, pack.module("nodes.widgets")


@pytest.fixture(scope="module")
def shifted_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint with boundary 0.75 and shift 3 (the widgets' old fixed defaults were 0.9 / 5)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("shifted") / "model", seed=3, boundary_ratio=0.75,
                                 scheduler=dataclasses.replace(SCHEDULER, shift=3.0, extra_one_step=False))


@pytest.fixture(scope="module", params=["shifted", *parity_dirs()],
                ids=lambda param: param if isinstance(param, str) else param.name)
def checkpoint(request, shifted_checkpoint) -> Path:
    """The shifted tiny checkpoint and every parity folder's (recorded with other boundaries and shifts)."""
    return shifted_checkpoint if request.param == "shifted" else request.param / "checkpoint"


def _conditioning(embeddings: torch.Tensor) -> list:
    return [[embeddings, {}]]


def _checkpoint_values(folder: Path) -> tuple[float, float]:
    boundary = json.loads((folder / "model_index.json").read_text())["boundary_ratio"]
    shift = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["shift"]
    return boundary, shift


def _node_run(generation, widgets_module, model: StandaloneModel, clip: dict[str, Any], seed: int,
              **inputs: Any) -> tuple[dict, dict, torch.Tensor, dict]:
    node, widgets = generation
    values = {name: spec.default for name, spec in widgets.SAMPLER.items()}  # untouched widgets ...
    values.update(clip, seed=seed)  # ... except the clip's size, which the test keeps small
    positive = _conditioning(model.pipeline.encode_prompt(PROMPT))
    video, audio = node.sample_latents(model, positive, None, values, **inputs)
    return video, audio, node.decode_video(model, video, None), node.decode_audio(model, audio, None)


def test_untouched_widgets_compute_what_generate_computes(generation, checkpoint):
    boundary, shift = _checkpoint_values(checkpoint)
    assert (boundary, shift) != (0.9, 5.0) or checkpoint.parent.name == "tiny-a"
    pipe = MovaPipeline.from_pretrained(checkpoint, dtype=torch.float32)
    model = StandaloneModel(pipe)
    multiple = max(pipe.geometry.size_multiples)
    clip = dict(width=3 * multiple, height=2 * multiple, frames=2 * pipe.geometry.temporal_factor + 1, fps=25.0,
                steps=4)
    red = torch.zeros(1, 40, 72, 3)
    red[..., 0] = 1.0
    video, audio, frames, sound = _node_run(generation, None, model, clip, seed=11, start_image=red)
    reference = pipe.generate(PROMPT, image=red, height=clip["height"], width=clip["width"],
                              num_frames=clip["frames"], fps=clip["fps"], steps=clip["steps"], seed=11)
    assert model.negatives == [DEFAULT_NEGATIVE_PROMPT]
    assert torch.equal(video["samples"], reference.video_latents)
    assert torch.equal(audio["samples"], reference.audio_latents)
    assert torch.equal(frames, reference.video)
    assert torch.equal(sound["waveform"][0], reference.audio) and sound["sample_rate"] == reference.sample_rate


def test_a_widget_set_away_from_the_checkpoint_overrides_it(generation, shifted_checkpoint):
    pipe = MovaPipeline.from_pretrained(shifted_checkpoint, dtype=torch.float32)
    model = StandaloneModel(pipe)
    clip = dict(width=48, height=32, frames=5, fps=24.0, steps=3, text_cfg=1.0)
    node, widgets = generation
    positive = _conditioning(pipe.encode_prompt(PROMPT))
    base = {**{name: spec.default for name, spec in widgets.SAMPLER.items()}, **clip, "seed": 5}
    outputs = {}
    for name, value in {"default": None, "video_shift": 7.0, "audio_shift": 7.0, "boundary": 0.95}.items():
        values = base if value is None else {**base, name: value}
        outputs[name] = node.sample_latents(model, positive, None, values)
    expected = pipe.generate(PROMPT, negative_prompt="", height=32, width=48, num_frames=5, fps=24.0, steps=3,
                             text_cfg=1.0, seed=5, video_shift=7.0)
    assert torch.equal(outputs["video_shift"][0]["samples"], expected.video_latents)
    for name in ("video_shift", "audio_shift", "boundary"):
        assert not torch.equal(outputs[name][0]["samples"], outputs["default"][0]["samples"]), name


@pytest.fixture(scope="module")
def tiny_model(shifted_checkpoint) -> StandaloneModel:
    return StandaloneModel(MovaPipeline.from_pretrained(shifted_checkpoint, dtype=torch.float32))


SMALL_CLIP = dict(width=48, height=32, frames=5, fps=24.0, steps=2, text_cfg=1.0)


def _sample(generation, model: StandaloneModel, **inputs: Any) -> tuple[dict, dict]:
    node, widgets = generation
    widget_values = {name: spec.default for name, spec in widgets.SAMPLER.items()}
    widget_values.update(SMALL_CLIP, seed=1)
    widget_values.update(inputs.pop("widgets", {}))
    positive = _conditioning(model.pipeline.encode_prompt(PROMPT))
    return node.sample_latents(model, positive, None, widget_values, **inputs)


def test_denoise_below_1_needs_both_latents_named_as_the_inputs(generation, tiny_model):
    video, audio = _sample(generation, tiny_model)
    with pytest.raises(ValueError, match=r"^denoise=0.5 re-generates given latents, but video_latent and audio_latent "
                                         r"are missing: give both video_latent and audio_latent, or set denoise to 1"):
        _sample(generation, tiny_model, widgets={"denoise": 0.5})
    with pytest.raises(ValueError, match=r"but audio_latent is missing"):
        _sample(generation, tiny_model, widgets={"denoise": 0.5}, video_init=video)


def test_denoise_0_returns_the_connected_latents_and_1_ignores_them(generation, tiny_model):
    video, audio = _sample(generation, tiny_model)
    kept = _sample(generation, tiny_model, widgets={"denoise": 0.0}, video_init=video, audio_init=audio)
    assert torch.equal(kept[0]["samples"], video["samples"]) and torch.equal(kept[1]["samples"], audio["samples"])
    junk = {"samples": torch.zeros(3, 1)}
    fresh = _sample(generation, tiny_model, video_init=junk, audio_init=junk)
    assert torch.equal(fresh[0]["samples"], video["samples"])


def test_latents_of_another_clip_name_the_input_and_what_they_were_made_for(generation, tiny_model):
    video, audio = _sample(generation, tiny_model)
    longer, _ = _sample(generation, tiny_model, widgets={"frames": 9})
    with pytest.raises(ValueError, match=r"^video_latent has shape \(1, 16, 3, 4, 6\), but height=32, width=48, "
                                         r"frames=5, fps=24 needs \(1, 16, 2, 4, 6\).* The video_latent was made for "
                                         r"width=48, height=32, frames=9, fps=24\."):
        _sample(generation, tiny_model, widgets={"denoise": 0.5}, video_init=longer, audio_init=audio)
    with pytest.raises(ValueError, match=r"^audio_latent: expected a LATENT with samples \[1, C, L\]"):
        _sample(generation, tiny_model, widgets={"denoise": 0.5}, video_init=video,
                audio_init={"samples": torch.zeros(1, 64, 11)})


@pytest.mark.parametrize("widgets, message", [
    ({"boundary": 1.5}, r"boundary=1.5 is outside 0 .. 1"),
    ({"video_shift": float("nan")}, r"video_shift=nan must be a finite number"),
    ({"frames": 6}, r"frames=6 must be 4k\+1 .*nearest valid value: 5"),
    ({"frames": 2}, r"frames=2 must be 4k\+1 .*nearest valid value: 1"),
])
def test_bad_widgets_are_refused_before_any_model_pass_in_the_inputs_names(generation, tiny_model, widgets, message):
    with pytest.raises(ValueError, match=message):
        _sample(generation, tiny_model, widgets=widgets)


def test_connected_audio_drives_the_picture_and_decodes_as_given(generation, tiny_model):
    node, _ = generation
    pipe = tiny_model.pipeline
    rate = pipe.audio_vae.sample_rate
    voice = {"waveform": 0.2 * torch.sin(torch.arange(int(0.5 * rate)) * 0.02).repeat(1, 2, 1), "sample_rate": rate}
    video, audio = _sample(generation, tiny_model, audio=voice, widgets={"frames": None})
    frames = video["mova"]["frames"]
    assert frames == 13 and (frames - 1) % 4 == 0, "the fewest frames covering 0.5 s at 24 fps"
    sound = node.decode_audio(tiny_model, audio, None)
    given = voice["waveform"][0][:, : pipe.audio_num_samples(frames, 24.0)]
    assert torch.equal(sound["waveform"][0], torch.nn.functional.pad(given, (0, sound["waveform"].shape[-1] - given.shape[-1])))
    plain, _ = _sample(generation, tiny_model, widgets={"frames": frames})
    assert not torch.equal(video["samples"], plain["samples"])
    regenerated = _sample(generation, tiny_model, audio=voice, audio_mode="strength",
                          widgets={"frames": 9, "audio_strength": 1.0})
    assert "given_waveform" not in regenerated[1]["mova"] and regenerated[1]["mova"]["frames"] == 9
    with pytest.raises(ValueError, match=r"audio_mode='loop' is not available"):
        _sample(generation, tiny_model, audio=voice, audio_mode="loop")


def test_long_video_node_makes_the_whole_video_window_by_window(generation, tiny_model):
    node, widgets = generation
    pipe = tiny_model.pipeline
    values = {name: widgets.SAMPLER[name].default for name in ("video_shift", "audio_shift", "boundary")}
    values.update(width=48, height=32, fps=24.0, steps=2, seed=4, text_cfg=1.0, bridge_cfg=1.0)
    positive = _conditioning(pipe.encode_prompt(PROMPT))
    images, audio = node.long_video(tiny_model, positive, None, values, frames=21, window_frames=9, overlap_frames=5)
    expected = pipe.generate_long(PROMPT, 21, window_frames=9, overlap_frames=5, fps=24.0, seed=4, height=32,
                                  width=48, steps=2, text_cfg=1.0)
    assert torch.equal(images, expected.video) and torch.equal(audio["waveform"][0], expected.audio)
    rate = pipe.audio_vae.sample_rate
    voice = {"waveform": 0.2 * torch.sin(torch.arange(int(1.1 * rate)) * 0.02)[None, None], "sample_rate": rate}
    images, audio = node.long_video(tiny_model, positive, None, values, frames=None, window_frames=9,
                                    overlap_frames=5, audio=voice)
    assert images.shape[0] == 29, "the fewest 4k+1 frames covering 1.1 s at 24 fps"
    given = voice["waveform"][0]
    assert audio["waveform"].shape[-1] == pipe.audio_num_samples(29, 24.0) > given.shape[-1]
    # the sound as given (crossfading it with itself over the overlaps rounds by ~1e-8), padded to the video
    torch.testing.assert_close(audio["waveform"][0][:, : given.shape[-1]], given, rtol=0, atol=1e-6)
    assert not audio["waveform"][0][:, given.shape[-1]:].any()
