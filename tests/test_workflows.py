"""The shipped UI workflows (workflows/*.json) against the node schemas, without ComfyUI.

Our nodes' schemas are derived from the node code itself (tests/comfy_stub: ComfyUI's schema API
stood in, the pack loaded as ComfyUI loads it), so any change in nodes/ that breaks a shipped
workflow (an input renamed, added or removed, a socket or output type changed, a range, default or
combo option changed) fails here; the tests at the end break nodes on purpose to show it. Native
nodes (LoadImage, KSampler, ...) come from tests/workflow_schemas/native_object_info.json.
tests/integration/test_workflows_live.py checks both against a live server (COMFYUI_PATH).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
import sys
import types
from pathlib import Path
from typing import Any, Callable

import pytest

from comfy_stub import PACKAGE, LoadedPack, derive_object_info
from mova_core.pipeline import OFFICIAL_NEGATIVE_PROMPT
from workflow_check import DYNAMIC_FOLDERS, check_workflow, to_api_prompt, widgets, workflow_schemas

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
PACK_NODES = {"MOVAModelLoader", "MOVALoraLoader", "MOVATextEncode", "MOVAPromptRewriter", "MOVASampler", "MOVALongVideo",
              "MOVADecode", "MOVAEncode", "MOVAAVMux", "MOVANativeModel", "MOVAAVLatent", "MOVASplitAVLatent",
              "MOVASchedule", "MOVAEulerSampler", "MOVANoise", "MOVABridgeGuidance", "MOVAVideoVAE"}
NATIVE_SAMPLING = {"mova_native_custom_sampler", "mova_native_ksampler"}
"""Workflows sampling MOVA's MODEL with ComfyUI's own sampler nodes."""
SHIPPED = {"mova_i2va_basic", "mova_t2va", "mova_i2va_prompt_rewriter", "mova_lora_stack", "mova_i2va_low_vram",
           "mova_i2va_first_last", "mova_i2va_voice", "mova_long_24s"} | NATIVE_SAMPLING
WITH_SAMPLER = SHIPPED - {"mova_long_24s"} - NATIVE_SAMPLING
OFFICIAL_SAMPLER = {"width": 640, "height": 352, "frames": 193, "fps": 24.0, "steps": 50, "text_cfg": 5.0,
                    "bridge_cfg": 1.0, "denoise": 1.0}
CHECKPOINT_SAMPLER = {"video_shift": 0.0, "audio_shift": 0.0, "boundary": -1.0}
"""Widget values that mean "the checkpoint's" (so the graph computes what MovaPipeline.generate computes)."""
HF_ORG = "https://huggingface.co/OpenMOSS-Team/"


@functools.cache
def schemas() -> dict[str, dict]:
    """Node class -> normalised schema: ours derived from nodes/, natives from the snapshot."""
    return workflow_schemas(derive_object_info())


def _load(name: str) -> dict:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text(encoding="utf-8"))


def _nodes(workflow: dict, node_type: str) -> list[dict]:
    return [node for node in workflow["nodes"] if node["type"] == node_type]


def _values(node: dict) -> dict:
    return {w.name: v for w, v in zip(widgets(schemas()[node["type"]]), node["widgets_values"])}


def _source_slot(workflow: dict, node: dict, input_name: str) -> tuple[dict, str] | None:
    """The node feeding ``input_name`` of ``node`` and the name of its output (None when unconnected)."""
    entry = next(i for i in node["inputs"] if i["name"] == input_name)
    if entry["link"] is None:
        return None
    link = next(link for link in workflow["links"] if link[0] == entry["link"])
    source = next(n for n in workflow["nodes"] if n["id"] == link[1])
    return source, source["outputs"][link[2]]["name"]


def _source_of(workflow: dict, node: dict, input_name: str) -> dict | None:
    """The node feeding ``input_name`` of ``node`` (None when unconnected)."""
    found = _source_slot(workflow, node, input_name)
    return None if found is None else found[0]


def test_every_kind_of_workflow_is_shipped():
    assert {path.stem for path in WORKFLOWS} == SHIPPED


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_matches_the_node_schemas(path: Path):
    problems = check_workflow(json.loads(path.read_text(encoding="utf-8")), schemas())
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_template_browser_thumbnail_exists(path: Path):
    """ComfyUI's template browser lists workflows/*.json of the pack and asks for ``<name>.jpg``."""
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"{thumbnail.name} is missing (the template browser would log a 404)"
    assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumbnail.name} is not a JPEG"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_model_loaders_carry_download_information(path: Path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    loaders = _nodes(workflow, "MOVAModelLoader")
    assert len(loaders) == 1
    name = _values(loaders[0])["model_name"]
    assert loaders[0]["properties"]["models"] == [{"name": name, "url": HF_ORG + name, "directory": "mova"}]


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if p.stem not in NATIVE_SAMPLING],
                         ids=[p.stem for p in WORKFLOWS if p.stem not in NATIVE_SAMPLING])
def test_sampler_starts_from_the_official_settings(path: Path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    sampler, = _nodes(workflow, "MOVASampler") or _nodes(workflow, "MOVALongVideo")
    values = _values(sampler)
    per_window = {"frames": "window_frames"} if sampler["type"] == "MOVALongVideo" else {}
    official = {per_window.get(key, key): value for key, value in OFFICIAL_SAMPLER.items()
                if per_window.get(key, key) in values}
    assert {key: values[key] for key in official} == official and len(official) >= 7
    assert {key: values[key] for key in CHECKPOINT_SAMPLER} == CHECKPOINT_SAMPLER
    assert values["control_after_generate"] == "fixed", "examples reproduce the same clip"


def test_each_workflow_has_its_feature():
    for name in WITH_SAMPLER - {"mova_t2va"}:
        workflow = _load(name)
        sampler, = _nodes(workflow, "MOVASampler")
        assert _source_of(workflow, sampler, "start_image")["type"] == "LoadImage", name
    t2va = _load("mova_t2va")
    assert _source_of(t2va, _nodes(t2va, "MOVASampler")[0], "start_image") is None
    for name in WITH_SAMPLER:
        workflow = _load(name)
        sampler, = _nodes(workflow, "MOVASampler")
        assert (_source_of(workflow, sampler, "audio") is not None) == (name == "mova_i2va_voice"), name
        end = _source_of(workflow, sampler, "end_image")
        assert (end is not None) == (name == "mova_i2va_first_last"), name
        assert end is None or (end["type"] == "LoadImage" and end is not _source_of(workflow, sampler, "start_image"))
        assert _source_of(workflow, sampler, "video_latent") is None and _values(sampler)["denoise"] == 1.0, name

    rewriter = _load("mova_i2va_prompt_rewriter")
    encode, = _nodes(rewriter, "MOVATextEncode")
    assert _source_of(rewriter, encode, "text")["type"] == "MOVAPromptRewriter"
    assert _source_of(rewriter, _nodes(rewriter, "MOVAPromptRewriter")[0], "image")["type"] == "LoadImage"

    lora = _load("mova_lora_stack")
    first = _source_of(lora, _nodes(lora, "MOVASampler")[0], "mova_model")
    second = _source_of(lora, first, "mova_model")
    assert (first["type"], second["type"]) == ("MOVALoraLoader", "MOVALoraLoader")
    assert _source_of(lora, second, "mova_model")["type"] == "MOVAModelLoader"
    assert _source_of(lora, _nodes(lora, "MOVATextEncode")[0], "mova_model")["type"] == "MOVAModelLoader", \
        "text encoding must not re-run when a LoRA changes"

    low = _load("mova_i2va_low_vram")
    assert _values(_nodes(low, "MOVAModelLoader")[0])["weight_dtype"] == "fp8_e4m3fn"
    assert _values(_nodes(low, "MOVADecode")[0])["tiled_decode"] is True


def _js_constants(pattern: str) -> list[tuple[str, ...]]:
    return [found for path in sorted((REPO / "web").rglob("*.js"))
            for found in re.findall(pattern, path.read_text(encoding="utf-8"))]


def test_web_extensions_bind_to_existing_nodes_and_widgets():
    classes = _js_constants(r'const \w*CLASS = "(\w+)"')
    assert {"MOVASampler", "MOVABridgeGuidance", "MOVAAVMux", "MOVAModelLoader"} <= set(classes)
    for node_class in classes:
        assert node_class in schemas(), f"web/ targets {node_class}, which the pack does not define"
    sampler = {w.name: w for w in widgets(schemas()["MOVASampler"])}
    axes = _js_constants(r'name: "(\w+)", label: "[^"]*", min: ([\d.]+), max: ([\d.]+), step: ([\d.]+), '
                         r'official: ([\d.]+)')
    assert {axis[0] for axis in axes} == {"text_cfg", "bridge_cfg"}
    for name, low, high, step, official in axes:
        options = sampler[name].options
        assert (options["min"], options["max"], options["step"], options["default"]) == \
            pytest.approx((float(low), float(high), float(step), float(official))), name
    bridge_node = {w.name: w for w in widgets(schemas()["MOVABridgeGuidance"])}
    assert bridge_node["bridge_cfg"].options == sampler["bridge_cfg"].options, "one pad axis for both nodes"
    (text_cfg,) = _js_constants(r'const TEXT_CFG_WIDGET = "(\w+)"')
    for guider in ("KSampler", "CFGGuider"):
        cfg = {w.name: w for w in widgets(schemas()[guider])}[text_cfg]
        assert cfg.kind == "FLOAT" and cfg.options["min"] <= 0 and cfg.options["max"] >= 20, \
            f"the pad's text CFG (0..20) fits {guider}'s {text_cfg}"
    mux_inputs = schemas()["MOVAAVMux"]["input"]
    assert mux_inputs["optional"]["audio"][0] == "AUDIO", "the clip player reads the audio link"


# --- the checker itself finds what would break a workflow -------------------------------------------

def _broken(change) -> list[str]:
    workflow = copy.deepcopy(_load("mova_i2va_basic"))
    change(workflow)
    return check_workflow(workflow, schemas())


def _sampler(workflow: dict) -> dict:
    return _nodes(workflow, "MOVASampler")[0]


def _set(workflow: dict, node_type: str, name: str, value) -> None:
    node = _nodes(workflow, node_type)[0]
    index = [w.name for w in widgets(schemas()[node_type])].index(name)
    node["widgets_values"][index] = value


@pytest.mark.parametrize("change, message", [
    (lambda wf: _sampler(wf)["widgets_values"].pop(), r"16 widget values, the node has 17"),
    (lambda wf: _set(wf, "MOVASampler", "text_cfg", 25.0), r"text_cfg=25.0 is outside 0.0 .. 20.0"),
    (lambda wf: _set(wf, "MOVASampler", "bridge_cfg", 1.25), r"bridge_cfg=1.25 has more decimals than step 0.1"),
    (lambda wf: _set(wf, "MOVASampler", "width", 650), r"width=650 is off the step grid"),
    (lambda wf: _set(wf, "MOVASampler", "frames", 12.5), r"frames=12.5 is not an integer"),
    (lambda wf: _set(wf, "MOVASampler", "control_after_generate", "sometimes"), r"'sometimes' is not one of"),
    (lambda wf: _set(wf, "MOVAModelLoader", "weight_dtype", "int4"), r"weight_dtype='int4' is not one of"),
    (lambda wf: _set(wf, "MOVADecode", "tiled_decode", "yes"), r"tiled_decode='yes' is not a boolean"),
    (lambda wf: _set(wf, "MOVAModelLoader", "model_name", ""), r"must name an entry of the mova folder"),
    (lambda wf: wf["links"][0].__setitem__(5, "IMAGE"), r"carries 'IMAGE' but output"),
    (lambda wf: next(i for i in _sampler(wf)["inputs"] if i["name"] == "positive").__setitem__("link", None),
     r"required input 'positive' is not connected"),
    (lambda wf: next(i for i in _sampler(wf)["inputs"] if i["name"] == "text_cfg").__setitem__("name", "cfg"),
     r"input 'cfg' does not exist"),
    (lambda wf: _sampler(wf)["outputs"].pop(), r"outputs .* != node's"),
    (lambda wf: _sampler(wf).__setitem__("type", "MOVASamplerV2"), r"unknown node type"),
    (lambda wf: _nodes(wf, "MOVAAVMux")[0].__setitem__("mode", 4), r"mode 4"),
    (lambda wf: wf.__setitem__("nodes", [n for n in wf["nodes"] if n["type"] != "MOVAAVMux"]),
     r"has no output node"),
    (lambda wf: wf.__setitem__("last_link_id", 1), r"last_link_id=1 is below"),
])
def test_checker_reports_what_would_break(change, message):
    problems = _broken(change)
    assert any(re.search(message, problem) for problem in problems), problems


def test_widget_rules_follow_the_front_end():
    assert [(w.name, w.kind) for w in widgets(schemas()["LoadImage"])] == [("image", "COMBO"), ("upload", "UPLOAD")]
    names = [w.name for w in widgets(schemas()["MOVASampler"])]
    assert names[names.index("seed") + 1] == "control_after_generate"
    assert names.index("text_cfg") + 1 == names.index("bridge_cfg")


def test_api_prompt_is_what_the_front_end_queues():
    workflow = _load("mova_i2va_basic")
    prompt = to_api_prompt(workflow, schemas())
    assert sorted(node["class_type"] for node in prompt.values()) == sorted(
        n["type"] for n in workflow["nodes"] if n["type"] != "MarkdownNote")
    sampler_id = str(_sampler(workflow)["id"])
    encode_id = str(_nodes(workflow, "MOVATextEncode")[0]["id"])
    inputs = prompt[sampler_id]["inputs"]
    assert inputs["positive"] == [encode_id, 0]
    assert (inputs["text_cfg"], inputs["bridge_cfg"], inputs["seed"]) == (5.0, 1.0, 42)
    assert "control_after_generate" not in inputs and "negative" not in inputs
    image_id = str(_nodes(workflow, "LoadImage")[0]["id"])
    assert prompt[image_id]["inputs"] == {"image": "example.png"}
    mux_inputs = prompt[str(_nodes(workflow, "MOVAAVMux")[0]["id"])]["inputs"]
    assert mux_inputs["fps"] == [str(_nodes(workflow, "MOVADecode")[0]["id"]), 2], "a linked widget sends the link"


def test_api_prompt_of_nodes_without_widgets():
    """The front end saves no ``widgets_values`` for a node without widgets (SamplerCustomAdvanced)."""
    workflow = _load("mova_native_custom_sampler")
    run = _one(workflow, "SamplerCustomAdvanced")
    assert "widgets_values" not in run
    inputs = to_api_prompt(workflow, schemas())[str(run["id"])]["inputs"]
    assert inputs == {name: [str(_source_of(workflow, run, name)["id"]), 0]
                      for name in ("noise", "guider", "sampler", "sigmas")} | \
        {"latent_image": [str(_one(workflow, "MOVAAVLatent")["id"]), 2]}


# --- the schemas come from the node code: breaking a node breaks CI ---------------------------------

def test_schemas_are_derived_from_the_pack():
    derived = derive_object_info()
    assert set(derived) == PACK_NODES
    assert {name for name in schemas() if name not in PACK_NODES} == {
        "LoadImage", "LoadAudio", "KSampler", "KSamplerSelect", "CFGGuider", "SamplerCustomAdvanced"}, \
        "natives come from the snapshot"
    assert derived["MOVAAVMux"]["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}


def test_folder_listing_combos_are_the_ones_compared_by_type():
    """The stand-in's model folders are empty: exactly the combos in DYNAMIC_FOLDERS come out without options."""
    empty = {(node, name) for node, info in derive_object_info().items() for section in ("required", "optional")
             for name, (kind, options) in info["input"].get(section, {}).items()
             if kind == "COMBO" and options["options"] == []}
    assert empty == {key for key in DYNAMIC_FOLDERS if key[0] in PACK_NODES}, \
        "a combo filled from a model folder must be listed in workflow_check.DYNAMIC_FOLDERS"


def test_stand_in_restores_sys_modules(monkeypatch):
    already_imported = types.ModuleType("folder_paths")
    monkeypatch.setitem(sys.modules, "folder_paths", already_imported)
    derive_object_info()
    assert sys.modules["folder_paths"] is already_imported
    leftovers = [name for name in sys.modules
                 if name.partition(".")[0] in {"comfy", "comfy_api", "latent_preview", PACKAGE}]
    assert leftovers == []


def _problems_of_shipped_workflows(edit: Callable[[LoadedPack], None]) -> list[str]:
    broken = workflow_schemas(derive_object_info(edit))
    return [f"{path.stem}: {problem}" for path in WORKFLOWS
            for problem in check_workflow(json.loads(path.read_text(encoding="utf-8")), broken)]


def _edit_schema(node_id: str, change: Callable[[Any, Any], None]) -> Callable[[LoadedPack], None]:
    """An edit making ``node_id``'s ``define_schema`` apply ``change(schema, io)`` to what the code returns."""
    def edit(pack: LoadedPack) -> None:
        node = pack.nodes[node_id]
        define = node.define_schema

        def broken_schema(cls):
            schema = define()
            change(schema, pack.io)
            return schema
        node.define_schema = classmethod(broken_schema)
    return edit


def _input(schema: Any, name: str) -> Any:
    return next(item for item in schema.inputs if item.id == name)


def _rename_sampler_widget_spec(pack: LoadedPack) -> None:
    """Rename ``text_cfg`` where the code defines it (nodes/widgets.py), not in the schema object."""
    specs = pack.module("nodes.widgets").SAMPLER
    specs["text_cfg"] = dataclasses.replace(specs["text_cfg"], name="guidance")


def _narrow_sampler_range(pack: LoadedPack) -> None:
    specs = pack.module("nodes.widgets").SAMPLER
    specs["text_cfg"] = dataclasses.replace(specs["text_cfg"], high=4.0)


@pytest.mark.parametrize("edit, message", [
    (_rename_sampler_widget_spec, r"input 'text_cfg' does not exist"),
    (_edit_schema("MOVASampler", lambda s, io: setattr(_input(s, "text_cfg"), "id", "cfg")),
     r"inputs \['cfg'\] of the node are missing"),
    (_edit_schema("MOVASampler", lambda s, io: s.inputs.remove(_input(s, "negative"))),
     r"input 'negative' does not exist"),
    (_edit_schema("MOVASampler", lambda s, io: s.inputs.append(io.Mask.Input("inpaint_mask", optional=True))),
     r"inputs \['inpaint_mask'\] of the node are missing"),
    (_edit_schema("MOVADecode", lambda s, io: s.inputs.append(io.Int.Input("tile_batch", default=1))),
     r"5 widget values, the node has 6"),
    (_edit_schema("MOVASampler", lambda s, io: s.inputs.__setitem__(
        s.inputs.index(_input(s, "positive")), io.Custom("MOVA_CONDITIONING").Input("positive"))),
     r"input 'positive' has type 'CONDITIONING', the node says 'MOVA_CONDITIONING'"),
    (_edit_schema("MOVADecode", lambda s, io: s.outputs.__setitem__(2, io.Int.Output(display_name="fps"))),
     r"outputs .*\('fps', 'FLOAT'\).* != node's .*\('fps', 'INT'\)"),
    (_edit_schema("MOVATextEncode", lambda s, io: setattr(s.outputs[0], "display_name", "positive")),
     r"outputs \[\('conditioning', 'CONDITIONING'\)\] != node's \[\('positive', 'CONDITIONING'\)\]"),
    (_edit_schema("MOVAModelLoader", lambda s, io: _input(s, "weight_dtype").options.update(
        options=["bf16", "fp16", "fp32"])), r"weight_dtype='fp8_e4m3fn' is not one of"),
    (_narrow_sampler_range, r"text_cfg=5 is outside 0.0 .. 4.0"),
    (_edit_schema("MOVAAVMux", lambda s, io: setattr(s, "is_output_node", False)), r"has no output node"),
], ids=["rename-in-widget-specs", "rename-input", "remove-optional-socket", "add-optional-socket", "add-widget",
        "change-socket-type", "change-output-type", "rename-output", "drop-combo-option", "narrow-range",
        "not-an-output-node"])
def test_a_node_change_that_breaks_a_shipped_workflow_fails(edit, message):
    problems = _problems_of_shipped_workflows(edit)
    assert any(re.search(message, problem) for problem in problems), problems


def test_the_talking_and_the_long_workflows():
    voice = _load("mova_i2va_voice")
    sampler, = _nodes(voice, "MOVASampler")
    assert _source_of(voice, sampler, "audio")["type"] == "LoadAudio"
    assert _values(sampler)["frames_from_audio"] is True and _values(sampler)["audio_mode"] == "freeze"
    long = _load("mova_long_24s")
    node, = _nodes(long, "MOVALongVideo")
    values = _values(node)
    assert (values["frames"] - 1) / values["fps"] == 24.0 and (values["window_frames"], values["overlap_frames"]) == (193, 25)
    assert _source_of(long, node, "start_image")["type"] == "LoadImage"
    mux, = _nodes(long, "MOVAAVMux")
    assert {_source_of(long, mux, name)["type"] for name in ("images", "audio", "fps")} == {"MOVALongVideo"}


# --- native sampling: MOVA's MODEL through ComfyUI's own sampler nodes ---------------------------------

def _one(workflow: dict, node_type: str) -> dict:
    found, = _nodes(workflow, node_type)
    return found


def _model_chain(workflow: dict, sampler: dict) -> list[str]:
    """Node types from ``sampler``'s MODEL back to the loader."""
    chain, node = [], sampler
    while True:
        name = "mova_model" if node["type"] == "MOVANativeModel" else "model"
        node = _source_of(workflow, node, name)
        chain.append(node["type"])
        if node["type"] == "MOVAModelLoader":
            return chain


@pytest.mark.parametrize("name", sorted(NATIVE_SAMPLING))
def test_native_workflows_start_from_the_official_settings(name: str):
    workflow = _load(name)
    latent = _values(_one(workflow, "MOVAAVLatent"))
    assert {key: latent[key] for key in ("width", "height", "frames", "fps")} == \
        {key: OFFICIAL_SAMPLER[key] for key in ("width", "height", "frames", "fps")}
    assert _values(_one(workflow, "MOVABridgeGuidance"))["bridge_cfg"] == OFFICIAL_SAMPLER["bridge_cfg"]
    assert _values(_one(workflow, "MOVANativeModel"))["boundary"] == CHECKPOINT_SAMPLER["boundary"]
    sampler = _values(_one(workflow, "CFGGuider" if name == "mova_native_custom_sampler" else "KSampler"))
    schedule = _values(_one(workflow, "MOVASchedule" if name == "mova_native_custom_sampler" else "KSampler"))
    seeded = _values(_one(workflow, "MOVANoise" if name == "mova_native_custom_sampler" else "KSampler"))
    assert (sampler["cfg"], schedule["steps"], schedule["denoise"]) == \
        (OFFICIAL_SAMPLER["text_cfg"], OFFICIAL_SAMPLER["steps"], OFFICIAL_SAMPLER["denoise"])
    assert seeded["control_after_generate"] == "fixed", "examples reproduce the same clip"
    positive = _source_of(workflow, _one(workflow, "MOVAAVLatent"), "positive")
    negative = _source_of(workflow, _one(workflow, "MOVAAVLatent"), "negative")
    assert (positive["type"], negative["type"]) == ("MOVATextEncode", "MOVATextEncode") and positive is not negative
    assert _values(negative)["text"] == OFFICIAL_NEGATIVE_PROMPT, "MOVA Sampler's default negative prompt"


@pytest.mark.parametrize("name, sampler_type", [("mova_native_custom_sampler", "CFGGuider"),
                                                ("mova_native_ksampler", "KSampler")])
def test_native_workflows_sample_the_mova_model_with_bridge_guidance(name: str, sampler_type: str):
    workflow = _load(name)
    sampler = _one(workflow, sampler_type)
    assert _model_chain(workflow, sampler) == ["MOVABridgeGuidance", "MOVANativeModel", "MOVAModelLoader"]
    latent = _one(workflow, "MOVAAVLatent")
    assert [_source_slot(workflow, sampler, name)[1] for name in ("positive", "negative")] == ["positive", "negative"]
    assert {_source_of(workflow, sampler, name)["id"] for name in ("positive", "negative")} == {latent["id"]}, \
        "the conditioning carries the start-image condition and fps only after MOVA AV Latent"
    split = _one(workflow, "MOVASplitAVLatent")
    decode = _one(workflow, "MOVADecode")
    assert [_source_slot(workflow, decode, name) for name in ("video_latent", "audio_latent")] == \
        [(split, "video_latent"), (split, "audio_latent")]
    mux = _one(workflow, "MOVAAVMux")
    assert {_source_of(workflow, mux, name)["id"] for name in ("images", "audio", "fps")} == {decode["id"]}
    loader = _one(workflow, "MOVAModelLoader")
    for node in (latent, split, decode, *_nodes(workflow, "MOVATextEncode")):
        assert _source_of(workflow, node, "mova_model") is loader, node["type"]


def test_the_custom_sampler_workflow_is_mova_samplers_run():
    """MOVA Noise + euler + MOVA Schedule + CFGGuider compute what MOVA Sampler does: with mova_i2va_basic's
    prompt, image, seed and steps it makes the same clip (README, "Native sampling")."""
    native, basic = _load("mova_native_custom_sampler"), _load("mova_i2va_basic")
    run = _one(native, "SamplerCustomAdvanced")
    sources = {name: _source_slot(native, run, name) for name in ("noise", "guider", "sampler", "sigmas", "latent_image")}
    assert {name: (node["type"], output) for name, (node, output) in sources.items()} == {
        "noise": ("MOVANoise", "noise"), "guider": ("CFGGuider", "GUIDER"), "sampler": ("KSamplerSelect", "SAMPLER"),
        "sigmas": ("MOVASchedule", "sigmas"), "latent_image": ("MOVAAVLatent", "av_latent")}
    assert _values(sources["sampler"][0])["sampler_name"] == "euler"
    assert _source_of(native, sources["sigmas"][0], "model") is _source_of(native, sources["guider"][0], "model"), \
        "the schedule reads the shift of the MODEL that is sampled"
    assert _source_slot(native, _one(native, "MOVASplitAVLatent"), "av_latent") == (run, "output")
    reference = _values(_one(basic, "MOVASampler"))
    assert _values(sources["noise"][0])["noise_seed"] == reference["seed"]
    assert _values(sources["sigmas"][0])["steps"] == reference["steps"]
    assert _values(sources["guider"][0])["cfg"] == reference["text_cfg"]
    assert _values(_one(native, "MOVABridgeGuidance"))["bridge_cfg"] == reference["bridge_cfg"]
    positive = _source_of(native, _one(native, "MOVAAVLatent"), "positive")
    assert _values(positive)["text"] == _values(_one(basic, "MOVATextEncode"))["text"]
    start = _source_of(native, _one(native, "MOVAAVLatent"), "start_image")
    assert _values(start)["image"] == _values(_one(basic, "LoadImage"))["image"]


def test_the_ksampler_workflow_uses_the_stock_sampler():
    workflow = _load("mova_native_ksampler")
    values = _values(_one(workflow, "KSampler"))
    assert (values["sampler_name"], values["scheduler"]) == ("euler", "simple")
    assert _source_slot(workflow, _one(workflow, "MOVASplitAVLatent"), "av_latent")[0]["type"] == "KSampler"
    assert _source_of(workflow, _one(workflow, "MOVAAVLatent"), "start_image") is None, "text to video + audio"
    assert not _nodes(workflow, "MOVANoise") and not _nodes(workflow, "MOVASchedule")
