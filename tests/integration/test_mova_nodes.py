"""The MOVA nodes inside a real ComfyUI: a tiny random MOVA under models/mova, workflows over HTTP, saved mp4s.

Sizes are tiny (48x32, 5 frames, 2 steps) so each workflow runs in seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mova_core.bridge import DualTowerBridge
from mova_core.dit import DiTTower
from mova_core.lora import linear_shapes
from mova_core.media import write_mp4
from mova_core.pipeline import MovaPipeline
from mova_core.tiny import AUDIO_DIT, BRIDGE, SCHEDULER, VIDEO_DIT, cached_tiny_checkpoint, write_tiny_checkpoint

from .comfy_server import ComfyServer, WorkflowFailed, WorkflowRejected
from .conftest import DEFAULT_START_TIMEOUT, PACK_DIR

MODEL = "tiny-mova"
SHIFTED_MODEL = "tiny-mova-shifted"
"""A tiny MOVA whose boundary (0.75) and shift (3) differ from the released 0.9 / 5."""
LORA = "tiny_mova_lora.safetensors"
CLIP = dict(width=48, height=32, frames=5, fps=24.0)
NODE_IDS = ("MOVAModelLoader", "MOVALoraLoader", "MOVATextEncode", "MOVAPromptRewriter", "MOVASampler", "MOVALongVideo",
            "MOVADecode", "MOVAEncode", "MOVAAVMux")


def shifted_checkpoint(folder: Path) -> Path:
    return write_tiny_checkpoint(folder / SHIFTED_MODEL, seed=3, boundary_ratio=0.75,
                                 scheduler=dataclasses.replace(SCHEDULER, shift=3.0, extra_one_step=False))


def write_tiny_lora(path: Path) -> Path:
    """A PEFT-spelled LoRA on a few Linears of every tiny MOVA component (component-prefixed keys)."""
    with torch.device("meta"):
        models = {"video_dit": DiTTower(VIDEO_DIT), "audio_dit": DiTTower(AUDIO_DIT), "dual_tower_bridge": DualTowerBridge(BRIDGE)}
    generator = torch.Generator().manual_seed(5)
    tensors = {}
    for component, model in models.items():
        for layer, (out_features, in_features) in list(linear_shapes(model).items())[:6]:
            for prefix in ([component, "video_dit_2"] if component == "video_dit" else [component]):
                tensors[f"{prefix}.{layer}.lora_A.weight"] = torch.randn(4, in_features, generator=generator)
                tensors[f"{prefix}.{layer}.lora_B.weight"] = torch.randn(out_features, 4, generator=generator) * 0.5
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def mova_server(comfy_server: ComfyServer) -> ComfyServer:
    comfy_server.link_model("mova", cached_tiny_checkpoint(), MODEL)
    (comfy_server.models_dir("mova") / "not-a-model" / "video_dit").mkdir(parents=True, exist_ok=True)
    (comfy_server.models_dir("mova") / "readme.txt").write_text("not a model", encoding="utf-8")
    write_tiny_lora(comfy_server.models_dir("loras") / LORA)
    return comfy_server


def workflow(prefix: str, *, seed: int = 7, text_cfg: float = 3.0, bridge_cfg: float = 1.5, lora: bool = False,
             start_image: bool = False, end_color: int | None = None, zero_negative: bool = False, **changes) -> dict:
    """loader -> (LoRA) -> rewriter (passthrough) -> text encode -> sampler -> decode -> mux, in API format.

    The sampler gets no ``denoise`` (a prompt written before that input existed still runs)."""
    model = ["6", 0] if lora else ["1", 0]
    graph = {
        "1": {"class_type": "MOVAModelLoader", "inputs": {"model_name": MODEL, "weight_dtype": "fp32", "attention": "comfy"}},
        "9": {"class_type": "MOVAPromptRewriter", "inputs": {
            "prompt": "a dog barks on the beach", "mode": "passthrough", "base_url": "https://api.openai.com/v1",
            "vision_model": "m", "llm_model": "m", "api_key_env": "OPENAI_API_KEY", "timeout_s": 5, "retries": 0,
            "use_cache": True}},
        "2": {"class_type": "MOVATextEncode", "inputs": {"mova_model": model, "text": ["9", 0]}},
        "3": {"class_type": "MOVASampler", "inputs": {
            "mova_model": model, "positive": ["2", 0], **CLIP, "steps": 2, "seed": seed, "text_cfg": text_cfg,
            "bridge_cfg": bridge_cfg, "video_shift": 0.0, "audio_shift": 0.0, "boundary": -1.0}},  # the checkpoint's
        "4": {"class_type": "MOVADecode", "inputs": {
            "mova_model": model, "video_latent": ["3", 0], "audio_latent": ["3", 1], "normalize_loudness": False,
            "target_lufs": -16.0, "tiled_decode": False, "tile_size": 256, "tile_overlap": 64}},
        "5": {"class_type": "MOVAAVMux", "inputs": {
            "images": ["4", 0], "audio": ["4", 1], "fps": ["4", 2], "filename_prefix": prefix, "crf": 0}},
    }
    if lora:
        graph["6"] = {"class_type": "MOVALoraLoader", "inputs": {
            "mova_model": ["1", 0], "lora_name": LORA, "strength_high_noise": 1.0, "strength_low_noise": 1.0,
            "strength_audio": 1.0, "strength_bridge": 1.0}}
    if start_image:
        graph["7"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 40, "batch_size": 1, "color": 0x3366CC}}
        graph["3"]["inputs"]["start_image"] = ["7", 0]
    if end_color is not None:
        graph["10"] = {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 64, "batch_size": 1, "color": end_color}}
        graph["3"]["inputs"]["end_image"] = ["10", 0]
    if zero_negative:  # a native conditioning node between MOVA Text Encode and the sampler
        graph["8"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}}
        graph["3"]["inputs"]["negative"] = ["8", 0]
    for key, value in changes.items():
        node, name = key.split("__")
        graph[node]["inputs"][name] = value
    return graph


def saved_mp4(server: ComfyServer, entry: dict) -> Path:
    preview = entry["outputs"]["5"]
    assert preview["animated"] == [True]
    saved = preview["images"][0]
    assert saved["type"] == "output"
    return server.output_dir / saved["subfolder"] / saved["filename"]


def decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def cached_nodes(entry: dict) -> set[str]:
    return {node for event, data in entry["status"]["messages"] if event == "execution_cached" for node in data["nodes"]}


def test_nodes_follow_the_contract(mova_server: ComfyServer):
    info = {node: mova_server.object_info(node) for node in NODE_IDS}
    assert all(node["category"] == "MOVA" for node in info.values())
    assert info["MOVAModelLoader"]["input"]["required"]["model_name"][1]["options"] == [MODEL]  # only real models
    assert info["MOVAModelLoader"]["output"] == ["MOVA_MODEL"] and info["MOVALoraLoader"]["output"] == ["MOVA_MODEL"]
    assert LORA in info["MOVALoraLoader"]["input"]["required"]["lora_name"][1]["options"]
    sampler = info["MOVASampler"]["input"]
    for name, expected in (("text_cfg", (5.0, 0.0, 20.0, 0.1)), ("bridge_cfg", (1.0, 0.0, 10.0, 0.1))):
        kind, options = sampler["required"][name]
        assert kind == "FLOAT" and (options["default"], options["min"], options["max"], options["step"]) == expected
        assert options["display"] == "slider"
    assert list(sampler["optional"]) == ["negative", "start_image", "end_image", "video_latent", "audio_latent",
                                         "audio", "denoise", "cache_threshold", "audio_mode", "audio_strength",
                                         "frames_from_audio"]  # optional: prompts without them run with defaults
    assert [sampler["optional"][name][0] for name in ("end_image", "video_latent", "audio_latent")] == \
        ["IMAGE", "LATENT", "LATENT"]
    kind, options = sampler["optional"]["denoise"]
    assert kind == "FLOAT" and (options["default"], options["min"], options["max"], options["step"]) == (1.0, 0.0, 1.0, 0.01)
    assert info["MOVASampler"]["output"] == ["LATENT", "LATENT"]
    assert info["MOVADecode"]["output"] == ["IMAGE", "AUDIO", "FLOAT"]
    assert info["MOVAAVMux"]["output_node"] is True and info["MOVAAVMux"]["output"] == ["VIDEO"]


def test_text_to_video_audio_saves_an_mp4_with_video_and_audio(mova_server: ComfyServer):
    entry = mova_server.run_workflow(workflow("mova_it/t2va"), timeout=300)
    path = saved_mp4(mova_server, entry)
    assert path.suffix == ".mp4" and path.parent.name == "mova_it"
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", CLIP["width"], CLIP["height"])
        assert audio.codec_context.name == "aac" and audio.rate == 48000
        assert json.loads(container.metadata["prompt"])["3"]["class_type"] == "MOVASampler"  # reloadable workflow
    assert len(decoded_frames(path)) == CLIP["frames"]


def test_end_image_makes_the_clip_end_on_it(mova_server: ComfyServer):
    """First + last frame: the last frame depends on the end image (the tiny random model moves it by a few
    levels only); the same inputs give the same clip, so any difference comes from the end image."""
    def last_frames(prefix: str, end_color: int | None) -> np.ndarray:
        entry = mova_server.run_workflow(workflow(prefix, start_image=True, end_color=end_color), timeout=300)
        return decoded_frames(saved_mp4(mova_server, entry)).astype(int)

    i2va, to_red, to_green = last_frames("mova_it/i2va", None), last_frames("mova_it/red", 0xFF0000), \
        last_frames("mova_it/green", 0x00FF00)
    assert np.array_equal(to_red, last_frames("mova_it/red_again", 0xFF0000))
    assert not np.array_equal(to_red[-1], to_green[-1]) and not np.array_equal(to_red[-1], i2va[-1])


def test_end_image_without_start_image_is_refused(mova_server: ComfyServer):
    with pytest.raises(WorkflowFailed, match="end_image needs start_image"):
        mova_server.run_workflow(workflow("mova_it/flf_bad", end_color=0xFF0000), timeout=300)


def regenerate(prefix: str, denoise: float, *, connect: bool = True, **changes) -> dict:
    """A second sampler (seed 8) re-generating the first sampler's (seed 7) latents with ``denoise``."""
    graph = workflow(prefix)
    second = {**graph["3"]["inputs"], "seed": 8, "denoise": denoise, **changes}
    if connect:
        second.update(video_latent=["3", 0], audio_latent=["3", 1])
    graph["11"] = {"class_type": "MOVASampler", "inputs": second}
    graph["4"]["inputs"].update(video_latent=["11", 0], audio_latent=["11", 1])
    return graph


def test_denoise_regenerates_the_connected_latents(mova_server: ComfyServer):
    def frames(graph: dict) -> np.ndarray:
        return decoded_frames(saved_mp4(mova_server, mova_server.run_workflow(graph, timeout=300))).astype(int)

    first, fresh = frames(workflow("mova_it/seed7")), frames(workflow("mova_it/seed8", seed=8))
    assert np.array_equal(frames(regenerate("mova_it/denoise0", 0.0)), first), "denoise 0 returns the latents unchanged"
    assert np.array_equal(frames(regenerate("mova_it/denoise1", 1.0)), fresh), "denoise 1 samples from noise"
    partial = frames(regenerate("mova_it/denoise03", 0.3))
    assert np.abs(partial - first).mean() < np.abs(fresh - first).mean()
    assert not np.array_equal(partial, first)


def test_denoise_needs_matching_latents(mova_server: ComfyServer):
    with pytest.raises(WorkflowFailed, match="video_latent and audio_latent are missing"):
        mova_server.run_workflow(regenerate("mova_it/denoise_bad", 0.5, connect=False), timeout=300)
    with pytest.raises(WorkflowFailed, match=r"video_latent has shape .* but .*frames=9.* The video_latent was made "
                                             r"for .*frames=5"):
        mova_server.run_workflow(regenerate("mova_it/denoise_bad", 0.5, frames=9), timeout=300)


def reencode(prefix: str, denoise: float, *, connect_audio: bool = True) -> dict:
    """sampler (seed 7) -> decode -> MOVA Encode -> sampler (seed 8, ``denoise``) -> decode -> mux."""
    graph = workflow(prefix)
    graph["12"] = {"class_type": "MOVAEncode", "inputs": {
        "mova_model": ["1", 0], "images": ["4", 0], "fps": ["4", 2], **({"audio": ["4", 1]} if connect_audio else {})}}
    graph["11"] = {"class_type": "MOVASampler", "inputs": {
        **graph["3"]["inputs"], "seed": 8, "denoise": denoise, "video_latent": ["12", 0], "audio_latent": ["12", 1]}}
    graph["13"] = {"class_type": "MOVADecode", "inputs": {**graph["4"]["inputs"], "video_latent": ["11", 0],
                                                          "audio_latent": ["11", 1]}}
    graph["5"]["inputs"].update(images=["13", 0], audio=["13", 1], fps=["13", 2])
    return graph


def test_encode_of_a_decoded_clip_is_regenerated_by_the_sampler(mova_server: ComfyServer):
    def frames(graph: dict) -> np.ndarray:
        return decoded_frames(saved_mp4(mova_server, mova_server.run_workflow(graph, timeout=300))).astype(int)

    # The tiny checkpoint's VAEs are random (encoding a decoded clip does not give it back), so the clip to
    # land near is the encoded one: denoise 0 returns MOVA Encode's latents unchanged.
    encoded, fresh = frames(reencode("mova_it/encode0", 0.0)), frames(reencode("mova_it/encode1", 1.0))
    partial = frames(reencode("mova_it/encode03", 0.3))
    assert np.abs(partial - encoded).mean() < np.abs(fresh - encoded).mean()
    assert not np.array_equal(partial, encoded)
    with pytest.raises(WorkflowFailed, match=r"audio_latent: MOVA Encode got only images, .* connect audio to MOVA "
                                             r"Encode"):
        mova_server.run_workflow(reencode("mova_it/encode_no_audio", 0.3, connect_audio=False), timeout=300)


def test_lora_changes_the_clip_and_removing_it_restores_it_without_reloading(mova_server: ComfyServer):
    base = mova_server.run_workflow(workflow("mova_it/base", start_image=True, zero_negative=True), timeout=300)
    with_lora = mova_server.run_workflow(workflow("mova_it/lora", start_image=True, zero_negative=True, lora=True),
                                         timeout=300)
    again = mova_server.run_workflow(workflow("mova_it/again", start_image=True, zero_negative=True), timeout=300)
    assert "1" in cached_nodes(with_lora) and "1" in cached_nodes(again)  # the loader never ran again
    assert "3" not in cached_nodes(again)  # the sampler really ran again on the base model
    base_frames, lora_frames, again_frames = (decoded_frames(saved_mp4(mova_server, e)) for e in (base, with_lora, again))
    assert np.abs(base_frames.astype(int) - lora_frames.astype(int)).max() > 10
    assert np.array_equal(base_frames, again_frames)


@pytest.mark.parametrize("weight_dtype", ["bf16", "fp16", "fp8_e4m3fn"])
def test_low_precision_weights_with_a_lora_run_through_comfy_ops(mova_server: ComfyServer, weight_dtype: str):
    entry = mova_server.run_workflow(workflow(f"mova_it/{weight_dtype}", lora=True, **{"1__weight_dtype": weight_dtype}),
                                     timeout=300)
    frames = decoded_frames(saved_mp4(mova_server, entry))
    assert frames.shape == (CLIP["frames"], CLIP["height"], CLIP["width"], 3) and frames.std() > 0


def test_bad_widget_values_are_rejected_before_anything_runs(mova_server: ComfyServer):
    cases = [
        ({"3__frames": 6}, "3", "frames=6 must be 4k+1 (1, 5, 9, ...); nearest valid value: 5."),
        ({"3__width": 50}, "3", "width=50 must be a positive multiple of 16; nearest valid value: 48."),
        ({"1__model_name": "nope"}, "1", "model_name='nope': no MOVA model folder"),
        ({"1__weight_dtype": "int4"}, "1", "weight_dtype='int4' is not available"),
        ({"4__tiled_decode": True, "4__tile_overlap": 256}, "4", "tile_overlap=256 must be smaller than tile_size=256"),
    ]
    for changes, node, message in cases:
        with pytest.raises(WorkflowRejected) as caught:
            mova_server.submit_workflow(workflow("mova_it/bad", **changes))
        errors = caught.value.response["node_errors"][node]["errors"]
        assert errors and all(e["type"] == "custom_validation_failed" for e in errors), errors
        assert message in errors[0]["details"], errors[0]["details"]
    with pytest.raises(WorkflowRejected) as caught:
        mova_server.submit_workflow(workflow("mova_it/bad", lora=True, **{"6__lora_name": "missing.safetensors"}))
    assert "Put the LoRA file into models/loras" in caught.value.response["node_errors"]["6"]["errors"][0]["details"]
    with pytest.raises(WorkflowRejected) as caught:
        mova_server.submit_workflow(workflow("mova_it/bad", text_cfg=25.0))
    assert [e["type"] for e in caught.value.response["node_errors"]["3"]["errors"]] == ["value_bigger_than_max"]


def _http(server: ComfyServer, method: str, route: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{route}", data=b"{}" if method == "POST" else None,
                                     method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = response.read()
    return json.loads(payload) if payload else {}


def test_interrupt_stops_the_sampler_between_model_passes(mova_server: ComfyServer):
    long_run = {"3__steps": 200, "3__seed": 99, "3__width": 256, "3__height": 128, "3__frames": 33}  # minutes on a CPU
    prompt_id = mova_server.submit_workflow(workflow("mova_it/long", text_cfg=1.0, bridge_cfg=1.0, **long_run))
    deadline = time.monotonic() + 60
    while not _http(mova_server, "GET", "/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the workflow never started"
        time.sleep(0.2)
    time.sleep(3.0)  # loading and a few of the 200 steps
    _http(mova_server, "POST", "/interrupt")
    started = time.monotonic()
    entry = mova_server.wait_for_history(prompt_id, timeout=120)
    interrupted = [data for event, data in entry["status"]["messages"] if event == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_id"] == "3", entry["status"]  # stopped inside the sampler
    assert "5" not in entry["outputs"] and time.monotonic() - started < 20


class _OneAnswer(BaseHTTPRequestHandler):
    """A chat endpoint that answers every request with the same completion and counts the requests."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802
        _OneAnswer.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        body = json.dumps({"choices": [{"message": {"content": "The dog barks. The audio shows barking."}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_prompt_rewriter_calls_a_local_endpoint_in_two_steps(mova_server: ComfyServer):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OneAnswer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        graph = {
            "7": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 40, "batch_size": 1, "color": 0x3366CC}},
            "9": {"class_type": "MOVAPromptRewriter", "inputs": {
                "prompt": "a dog barks", "mode": "rewrite", "base_url": f"http://127.0.0.1:{httpd.server_address[1]}/v1",
                "vision_model": "vl", "llm_model": "llm", "api_key_env": "", "timeout_s": 30, "retries": 0,
                "use_cache": False, "image": ["7", 0]}},
            "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
        }
        entry = mova_server.run_workflow(graph, timeout=60)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert entry["outputs"]["10"]["text"] == ["The dog barks. The audio shows barking."]
    assert [request["model"] for request in _OneAnswer.requests] == ["vl", "llm"]


def test_models_from_extra_model_paths_yaml_are_listed(comfyui_path: Path, tmp_path: Path):
    shelf = tmp_path / "shelf" / "mova_weights"
    shelf.mkdir(parents=True)
    os.symlink(cached_tiny_checkpoint(), shelf / "tiny-from-yaml", target_is_directory=True)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"mova_models:\n    base_path: {tmp_path / 'shelf'}\n    mova: |\n        mova_weights\n",
                      encoding="utf-8")
    server = ComfyServer(comfyui_path, os.environ.get("COMFYUI_PYTHON", sys.executable), tmp_path / "base", PACK_DIR)
    server.start(timeout=float(os.environ.get("COMFYUI_START_TIMEOUT", DEFAULT_START_TIMEOUT)),
                 extra_args=["--extra-model-paths-config", str(config)])
    try:
        server.link_model("mova", cached_tiny_checkpoint(), "tiny-in-models")
        options = server.object_info("MOVAModelLoader")["input"]["required"]["model_name"][1]["options"]
    finally:
        server.stop()
    assert options == ["tiny-from-yaml", "tiny-in-models"]


def test_untouched_widgets_compute_what_movapipeline_generate_computes(mova_server: ComfyServer, tmp_path: Path):
    """On a checkpoint whose boundary and shift are not 0.9 / 5 the shipped widget defaults (the checkpoint's
    values) give the clip MovaPipeline.generate gives for the same seed; the widgets' old fixed 0.9 / 5 did not.
    Both sides are written by the same lossless mp4 writer; ComfyUI's torch may differ from this one, so frames
    are compared within 2 levels (the old defaults differed by up to 211)."""
    def comfy_frames(prefix: str, **changes) -> np.ndarray:
        graph = workflow(prefix, text_cfg=2.0, bridge_cfg=1.0, **{"1__model_name": SHIFTED_MODEL, "3__steps": 4,
                                                                  "3__fps": 25.0, **changes})
        return decoded_frames(saved_mp4(mova_server, mova_server.run_workflow(graph, timeout=300))).astype(int)

    link = mova_server.link_model("mova", shifted_checkpoint(tmp_path), SHIFTED_MODEL)
    try:
        pipe = MovaPipeline.from_pretrained(link, dtype=torch.float32)
        clip = pipe.generate("a dog barks on the beach", height=CLIP["height"], width=CLIP["width"],
                             num_frames=CLIP["frames"], fps=25.0, steps=4, text_cfg=2.0, seed=7)
        expected = decoded_frames(write_mp4(tmp_path / "pipeline.mp4", clip.video, clip.audio, fps=25.0,
                                            sample_rate=clip.sample_rate, crf=0)).astype(int)
        assert np.abs(comfy_frames("mova_it/checkpoint_values") - expected).max() <= 2
        old_defaults = comfy_frames("mova_it/old_defaults", **{"3__video_shift": 5.0, "3__audio_shift": 5.0,
                                                               "3__boundary": 0.9})
        assert np.abs(old_defaults - expected).max() > 20
    finally:  # the other tests expect the model list without it
        link.unlink()
        os.utime(link.parent)


def test_a_requeued_rewriter_workflow_is_a_cache_hit_and_writes_nothing(mova_server: ComfyServer):
    """ComfyUI calls fingerprint_inputs with every input of the rewriter; it must not fail, so queueing the same
    workflow again runs no node and saves no new mp4 (issue: every queue regenerated everything)."""
    graph = workflow("mova_it/requeue", seed=21)
    first = mova_server.run_workflow(graph, timeout=300)
    files = sorted(path.name for path in (mova_server.output_dir / "mova_it").glob("requeue*"))
    again = mova_server.run_workflow(graph, timeout=300)
    assert cached_nodes(again) == set(graph) and not cached_nodes(first) & {"3", "5"}  # the rewriter may be cached from earlier tests
    assert sorted(path.name for path in (mova_server.output_dir / "mova_it").glob("requeue*")) == files
    assert len(files) == 1


@pytest.mark.parametrize("weight_dtype", ["fp32", "fp8_e4m3fn"])
def test_compiled_blocks_with_a_lora_and_the_step_cache_run_in_comfyui(mova_server: ComfyServer, weight_dtype: str):
    """The loader's compile option (comfy.ops layers, graph breaks allowed) with a LoRA patch and the sampler's step
    cache: the video comes out, close to the eager one without cache (compile only reorders float arithmetic)."""
    def frames(prefix: str, **changes) -> np.ndarray:
        graph = workflow(prefix, lora=True, **{"1__weight_dtype": weight_dtype, "3__steps": 3, **changes})
        return decoded_frames(saved_mp4(mova_server, mova_server.run_workflow(graph, timeout=600))).astype(int)

    eager = frames(f"mova_it/eager_{weight_dtype}")
    compiled = frames(f"mova_it/compiled_{weight_dtype}", **{"1__compile": True})
    assert np.abs(compiled - eager).max() <= (2 if weight_dtype == "fp32" else 12)
    cached = frames(f"mova_it/cached_{weight_dtype}", **{"3__cache_threshold": 1.0})
    assert cached.shape == eager.shape
