"""benchmarks/bench_comfyui.py without ComfyUI: its defaults ask for one model pass in both modes, both graphs fit our
nodes' schemas, its node timer reads ComfyUI's websocket messages, and its memory sampler reads /proc."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_comfyui  # noqa: E402
from comfy_stub import derive_object_info  # noqa: E402
from workflow_check import DYNAMIC_FOLDERS, inputs, value_problem, widgets, workflow_schemas  # noqa: E402

CORE_NODES = {
    # ComfyUI 0.3.64's inputs and outputs of the core nodes the native graph uses (comfy_extras/nodes_custom_sampler.py)
    "KSamplerSelect": ({"sampler_name": "COMBO"}, ["SAMPLER"]),
    "CFGGuider": ({"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "cfg": "FLOAT"},
                  ["GUIDER"]),
    "SamplerCustomAdvanced": ({"noise": "NOISE", "guider": "GUIDER", "sampler": "SAMPLER", "sigmas": "SIGMAS",
                               "latent_image": "LATENT"}, ["LATENT", "LATENT"]),
}


def _args(*extra: str):
    return bench_comfyui.parse_args(["--comfyui", "/c", "--model", "/m", *extra])


def _graph(*extra: str) -> dict:
    args = _args(*extra)
    return bench_comfyui.WORKFLOWS[args.mode](args)


def test_defaults_are_one_pass_of_the_stored_fp8():
    args = _args()
    assert args.mode == "sampler"
    sampler = bench_comfyui.sampler_workflow(args)["3"]["inputs"]
    assert (sampler["steps"], sampler["text_cfg"], sampler["bridge_cfg"]) == (1, 1.0, 1.0)
    assert sampler["width"] % 16 == 0 and sampler["height"] % 16 == 0 and (sampler["frames"] - 1) % 4 == 0
    graph = bench_comfyui.sampler_workflow(args)
    assert graph["1"]["inputs"]["weight_dtype"] == "fp8_e4m3fn"
    assert [graph[key]["class_type"] for key in sorted(graph)] == [
        "MOVAModelLoader", "MOVATextEncode", "MOVASampler", "MOVADecode", "MOVAAVMux"]


def test_native_mode_samples_the_same_clip_in_one_pass():
    sampler, native = _graph(), _graph("--mode", "native")
    assert native[bench_comfyui.SAMPLING_NODE]["class_type"] == "SamplerCustomAdvanced"
    latent = next(node["inputs"] for node in native.values() if node["class_type"] == "MOVAAVLatent")
    mova = sampler["3"]["inputs"]
    assert {key: latent[key] for key in ("width", "height", "frames", "fps")} == {
        key: mova[key] for key in ("width", "height", "frames", "fps")}
    by_class = {node["class_type"]: node["inputs"] for node in native.values()}
    assert by_class["MOVASchedule"]["steps"] == mova["steps"] == 1
    assert by_class["CFGGuider"]["cfg"] == 1.0 and by_class["KSamplerSelect"]["sampler_name"] == "euler"
    assert "MOVABridgeGuidance" not in by_class and "MOVASampler" not in by_class
    assert by_class["CFGGuider"]["model"] == by_class["MOVASchedule"]["model"] == [
        next(key for key, node in native.items() if node["class_type"] == "MOVANativeModel"), 0]
    assert {key: native[key] for key in ("1", "2")} == {key: sampler[key] for key in ("1", "2")}
    split = next(key for key, node in native.items() if node["class_type"] == "MOVASplitAVLatent")
    assert (native["4"]["inputs"]["video_latent"], native["4"]["inputs"]["audio_latent"]) == ([split, 0], [split, 1])


def test_guidance_passes_are_the_same_in_both_modes():
    extra = ("--text-cfg", "5", "--bridge-cfg", "2.5", "--steps", "3")
    sampler, native = _graph(*extra), _graph("--mode", "native", *extra)
    assert sampler["2n"] == native["2n"] and sampler["3"]["inputs"]["negative"] == ["2n", 0]
    by_class = {node["class_type"]: node["inputs"] for node in native.values()}
    assert by_class["MOVABridgeGuidance"]["bridge_cfg"] == 2.5 and by_class["CFGGuider"]["cfg"] == 5.0
    assert by_class["MOVAAVLatent"]["negative"] == ["2n", 0] and by_class["MOVASchedule"]["steps"] == 3
    bridged = [next(key for key, node in native.items() if node["class_type"] == "MOVABridgeGuidance"), 0]
    assert by_class["CFGGuider"]["model"] == by_class["MOVASchedule"]["model"] == bridged


@pytest.mark.parametrize("mode", sorted(bench_comfyui.WORKFLOWS))
def test_graphs_fit_the_node_schemas(mode: str):
    """Every input of every node is one it has (all required ones given, widget values accepted), and every link
    leaves an existing output of the type the input takes."""
    schemas = {**workflow_schemas(derive_object_info()), **{name: {"output": outputs} for name, (_, outputs) in CORE_NODES.items()}}
    graph = _graph("--mode", mode, "--text-cfg", "4", "--bridge-cfg", "2")
    for key, node in graph.items():
        given = node["inputs"]
        if node["class_type"] in CORE_NODES:
            declared = CORE_NODES[node["class_type"]][0]
            assert set(given) == set(declared), key
        else:
            spec = schemas[node["class_type"]]
            items = inputs(spec)
            declared = {item.name: item.type for item in items}
            assert set(given) <= set(declared), (key, set(given) - set(declared))
            assert {item.name for item in items if not item.optional} <= set(given), key
            for widget in widgets(spec):
                value = given.get(widget.name)
                dynamic = (node["class_type"], widget.name) in DYNAMIC_FOLDERS  # any file name passes
                if widget.kind not in ("CONTROL", "UPLOAD") and value is not None and not isinstance(value, list) | dynamic:
                    assert value_problem(widget, value) is None, (key, widget.name)
        for name, value in given.items():
            if isinstance(value, list):
                source, slot = value
                produced = schemas[graph[source]["class_type"]]["output"][slot]
                assert declared[name] in (produced, "*"), (key, name, produced, declared[name])


def _frame(payload: bytes, opcode: int) -> bytes:
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        return head + bytes([size]) + payload
    if size < 2**16:
        return head + bytes([126]) + size.to_bytes(2, "big") + payload
    return head + bytes([127]) + size.to_bytes(8, "big") + payload


def test_node_timer_times_nodes_and_their_anonymous_memory():
    """Node times from ComfyUI's ``executing`` messages (text frames of every length encoding; binary previews
    skipped), and the anonymous memory this process touches while node 3 runs counted in node 3's peak."""
    listener = socket.create_server(("127.0.0.1", 0))
    request: list[bytes] = []
    allocated = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(4096)
            request.append(data)
            connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
            messages = [("status", {"sid": "x"}), ("executing", {"node": "1"}), ("progress", {"value": 1}),
                        ("executing", {"node": "3", "padding": "x" * 300}), ("executing", {"node": None})]
            for kind, data_ in messages:
                connection.sendall(_frame(json.dumps({"type": kind, "data": data_}).encode(), 1))
                if kind == "executing":
                    connection.sendall(_frame(b"\x00" * 70000, 2))  # a preview image: skipped
                    time.sleep(0.3)
                    if data_["node"] == "3":
                        allocated.wait(10)
            time.sleep(0.2)

    server = threading.Thread(target=serve)
    server.start()
    timer = bench_comfyui.NodeTimer(listener.getsockname()[1], "client-7")
    with bench_comfyui.NodeAnonPeaks(0.01, os.getpid(), timer) as peaks:
        deadline = time.monotonic() + 10
        while timer.current != "3" and time.monotonic() < deadline:
            time.sleep(0.01)
        held = b"\x01" * (256 * 2**20)  # written, so resident and anonymous
        time.sleep(0.1)
        allocated.set()
        server.join()
        timer.close()
    del held
    listener.close()
    assert request[0].startswith(b"GET /ws?clientId=client-7 HTTP/1.1")
    assert [node for _, node in timer.events] == ["1", "3", None] and timer.current is None
    seconds = timer.seconds()
    assert set(seconds) == {"1", "3"} and all(0.25 < value < 5 for value in seconds.values())
    assert set(peaks.by_node) == {"1", "3"} and peaks.by_node["3"] - peaks.by_node["1"] > 200 * 2**10


def test_node_timer_reports_a_refused_upgrade():
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    server = threading.Thread(target=refuse)
    server.start()
    with pytest.raises(RuntimeError, match="refused the websocket"):
        bench_comfyui.NodeTimer(listener.getsockname()[1], "c")
    server.join()
    listener.close()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_the_memory_sampler_reads_another_process():
    from memory import AnonPeak, status_kib

    with AnonPeak(interval=0.01, pid=os.getpid()) as peak:
        pass
    assert peak.kib > 0 and status_kib("VmHWM", os.getpid()) > 0
    assert status_kib("NoSuchField", os.getpid()) == 0 and status_kib("VmHWM", 2**31) == 0
