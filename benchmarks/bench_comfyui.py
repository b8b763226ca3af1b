"""The released-shape benchmark inside ComfyUI ``--cpu``: start a private ComfyUI with this pack, link a MOVA
checkpoint (e.g. the random released-shape one written by ``bench_real_shapes.py``) as ``models/mova/<name>``,
queue one loader -> text encode -> sampling -> decode -> mux workflow at a tiny clip (one model pass by default)
and sample the server process's ``/proc/<pid>/status`` while it runs: time to the end of the run, each node's
time (from the server's websocket), peak RSS (``VmHWM``) and peak anonymous RSS (the highest ``RssAnon``
sampled; memory-mapped weight pages are file-backed and do not count in it). ``--mode sampler`` samples with
MOVA Sampler, ``--mode native`` with MOVA's native MODEL under SamplerCustomAdvanced (same clip, same passes).

    python benchmarks/bench_comfyui.py --comfyui /path/to/ComfyUI --python /path/to/comfy-venv/bin/python \\
        --model /work/bench-ckpt/mova-real-fp8 [--mode native]

Only the standard library is needed in the calling interpreter; ComfyUI runs under ``--python``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memory import AnonPeak, gib, status_kib  # noqa: E402  (benchmarks/, beside this script)
from tests.integration.comfy_server import ComfyServer  # noqa: E402  (standard library only)

MODEL_NAME = "bench-mova"
FPS = 24.0
NEGATIVE = "blurry, static, distorted sound"
SAMPLING_NODE = "3"
"""Node id of the sampling node in both workflows (MOVASampler or SamplerCustomAdvanced)."""


class NodeTimer:
    """Records when each node of a prompt starts: reads the ``executing`` messages ComfyUI sends over its websocket
    (``/ws?clientId=...``) in a thread. :meth:`seconds` gives each executed node's time (to the next node's start,
    the last one to the end message, ``node`` None, which ComfyUI sends just after the prompt's history)."""

    def __init__(self, port: int, client_id: str):
        self.events: list[tuple[float, str | None]] = []
        self.finished = threading.Event()
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self._socket.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                              f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._receive(4096)
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"ComfyUI refused the websocket: {head[:200]!r}")
        self._socket.settimeout(None)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _receive(self, size: int) -> bytes:
        chunk = self._socket.recv(size)
        if not chunk:
            raise ConnectionError("websocket closed")
        return chunk

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._receive(max(65536, size - len(self._buffer)))
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _run(self) -> None:
        try:
            while True:
                first, second = self._exactly(2)
                size = second & 0x7F
                if size >= 126:
                    size = int.from_bytes(self._exactly(2 if size == 126 else 8), "big")
                payload = self._exactly(size)
                if first & 0x0F == 1:  # text frame (binary frames are previews)
                    message = json.loads(payload)
                    if message.get("type") == "executing":
                        self.events.append((time.perf_counter(), message["data"].get("node")))
                        if self.events[-1][1] is None:
                            self.finished.set()
        except (OSError, ConnectionError, ValueError):
            return

    def seconds(self) -> dict[str, float]:
        """Node id -> seconds it ran (nodes served from ComfyUI's cache are absent)."""
        return {node: round(end - start, 2) for (start, node), (end, _) in zip(self.events, self.events[1:])
                if node is not None}

    @property
    def current(self) -> str | None:
        """The node running now (None before the first and after the last)."""
        return self.events[-1][1] if self.events else None

    def close(self, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout`` seconds) for the end message, then disconnect."""
        self.finished.wait(timeout)
        self._socket.close()
        self._thread.join(timeout=5)


class NodeAnonPeaks(AnonPeak):
    """:class:`AnonPeak` that also keeps the highest ``RssAnon`` sampled while each node ran (``by_node``, KiB),
    the running node told by ``timer``."""

    def __init__(self, interval: float, pid: int, timer: NodeTimer):
        super().__init__(interval, pid)
        self.timer = timer
        self.by_node: dict[str, int] = {}

    def _sample(self) -> None:
        kib, node = status_kib("RssAnon", self.pid), self.timer.current
        self.kib = max(self.kib, kib)
        if node is not None:
            self.by_node[node] = max(self.by_node.get(node, 0), kib)


def _prompts(args: argparse.Namespace) -> dict:
    """Loader and text encode; a negative prompt only where text CFG evaluates one."""
    nodes = {
        "1": {"class_type": "MOVAModelLoader", "inputs": {
            "model_name": MODEL_NAME, "weight_dtype": args.weight_dtype, "attention": "comfy"}},
        "2": {"class_type": "MOVATextEncode", "inputs": {"mova_model": ["1", 0], "text": "a dog barks in the rain"}},
    }
    if args.text_cfg != 1.0:
        nodes["2n"] = {"class_type": "MOVATextEncode", "inputs": {"mova_model": ["1", 0], "text": NEGATIVE}}
    return nodes


def _decode(video: list, audio: list) -> dict:
    return {
        "4": {"class_type": "MOVADecode", "inputs": {
            "mova_model": ["1", 0], "video_latent": video, "audio_latent": audio, "normalize_loudness": False,
            "target_lufs": -16.0, "tiled_decode": False, "tile_size": 256, "tile_overlap": 64}},
        "5": {"class_type": "MOVAAVMux", "inputs": {
            "images": ["4", 0], "audio": ["4", 1], "fps": ["4", 2], "filename_prefix": "bench", "crf": 0}},
    }


def sampler_workflow(args: argparse.Namespace) -> dict:
    """API prompt: MOVAModelLoader -> MOVATextEncode -> MOVASampler -> MOVADecode -> MOVAAVMux."""
    nodes = _prompts(args)
    nodes["3"] = {"class_type": "MOVASampler", "inputs": {
        "mova_model": ["1", 0], "positive": ["2", 0], "width": args.width, "height": args.height,
        "frames": args.frames, "fps": FPS, "steps": args.steps, "seed": 0, "text_cfg": args.text_cfg,
        "bridge_cfg": args.bridge_cfg, "video_shift": 0.0, "audio_shift": 0.0, "boundary": -1.0}}
    if "2n" in nodes:
        nodes["3"]["inputs"]["negative"] = ["2n", 0]
    return {**nodes, **_decode(["3", 0], ["3", 1])}


def native_workflow(args: argparse.Namespace) -> dict:
    """API prompt of the native path, the same clip and passes: MOVA Native Model (+ MOVA Bridge Guidance when
    bridge CFG is not 1), MOVA AV Latent, SamplerCustomAdvanced (MOVA Noise, KSamplerSelect euler, MOVA Schedule,
    CFGGuider at the text CFG), MOVA Split AV Latent -> MOVADecode -> MOVAAVMux. At text CFG 1 the guider never
    evaluates its negative, so the positive prompt stands in for it."""
    nodes = _prompts(args)
    model = ["n1", 0]
    nodes["n1"] = {"class_type": "MOVANativeModel", "inputs": {"mova_model": ["1", 0], "boundary": -1.0}}
    if args.bridge_cfg != 1.0:
        nodes["n1b"] = {"class_type": "MOVABridgeGuidance", "inputs": {"model": model, "bridge_cfg": args.bridge_cfg}}
        model = ["n1b", 0]
    nodes.update({
        "n2": {"class_type": "MOVAAVLatent", "inputs": {
            "mova_model": ["1", 0], "positive": ["2", 0], "negative": ["2n" if "2n" in nodes else "2", 0],
            "width": args.width, "height": args.height, "frames": args.frames, "fps": FPS}},
        "n3": {"class_type": "MOVANoise", "inputs": {"noise_seed": 0}},
        "n4": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "n5": {"class_type": "MOVASchedule", "inputs": {"model": model, "steps": args.steps, "denoise": 1.0}},
        "n6": {"class_type": "CFGGuider", "inputs": {
            "model": model, "positive": ["n2", 0], "negative": ["n2", 1], "cfg": args.text_cfg}},
        "3": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["n3", 0], "guider": ["n6", 0], "sampler": ["n4", 0], "sigmas": ["n5", 0],
            "latent_image": ["n2", 2]}},
        "n7": {"class_type": "MOVASplitAVLatent", "inputs": {"mova_model": ["1", 0], "av_latent": ["3", 0]}},
    })
    return {**nodes, **_decode(["n7", 0], ["n7", 1])}


WORKFLOWS = {"sampler": sampler_workflow, "native": native_workflow}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (main.py)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with ComfyUI's requirements")
    parser.add_argument("--model", type=Path, required=True, help="MOVA folder or packed file to link")
    parser.add_argument("--mode", default="sampler", choices=tuple(WORKFLOWS),
                        help="sampler: MOVA Sampler; native: MOVA's MODEL under SamplerCustomAdvanced")
    parser.add_argument("--weight-dtype", default="fp8_e4m3fn", choices=("bf16", "fp16", "fp8_e4m3fn", "fp32"))
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--text-cfg", type=float, default=1.0, help="1 = no negative pass")
    parser.add_argument("--bridge-cfg", type=float, default=1.0, help="1 = no bridge-off pass")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between /proc samples")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--run-timeout", type=float, default=3600.0)
    parser.add_argument("--base-dir", type=Path, default=None, help="ComfyUI base directory (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    graph = WORKFLOWS[args.mode](args)
    with tempfile.TemporaryDirectory(prefix="mova-bench-comfy-") as tmp:
        base = args.base_dir or Path(tmp)
        server = ComfyServer(args.comfyui, args.python, base, REPO)
        server.link_model("mova", args.model, MODEL_NAME)
        started = time.perf_counter()
        server.start(args.start_timeout)
        pid = server.process.pid
        idle = {"rss": status_kib("VmRSS", pid), "anon": status_kib("RssAnon", pid)}
        print(f"ComfyUI --cpu up in {time.perf_counter() - started:.1f} s (pid {pid}): RSS {gib(idle['rss']):.2f} GiB, "
              f"anonymous {gib(idle['anon']):.2f} GiB", flush=True)
        try:
            timer = NodeTimer(server.port, server.client_id)
            with NodeAnonPeaks(args.interval, pid, timer) as anon_peak:
                started = time.perf_counter()
                entry = server.run_workflow(graph, args.run_timeout)
                seconds = time.perf_counter() - started
            timer.close()
            peak_rss = status_kib("VmHWM", pid)  # the kernel's own peak: exact, no sampling needed
            anon_end = status_kib("Anonymous", pid, "smaps_rollup")
            log = server.log_text()
        finally:
            server.stop()
    result = {
        "mode": args.mode,
        "clip": f"{args.width}x{args.height}, {args.frames} frames, {args.steps} steps, text_cfg {args.text_cfg}, "
                f"bridge_cfg {args.bridge_cfg}, {args.weight_dtype}",
        "run_seconds": round(seconds, 1),
        "sampling_node_seconds": timer.seconds().get(SAMPLING_NODE),
        "node_seconds": {f"{node} {graph[node]['class_type']}": value for node, value in timer.seconds().items()},
        "node_peak_anon_gib": {f"{node} {graph[node]['class_type']}": round(gib(kib), 2)
                               for node, kib in anon_peak.by_node.items()},
        "idle_rss_gib": round(gib(idle["rss"]), 2), "idle_anon_gib": round(gib(idle["anon"]), 2),
        "peak_rss_gib": round(gib(peak_rss), 2), "peak_anon_gib": round(gib(anon_peak.kib), 2),
        "anon_at_end_gib": round(gib(anon_end), 2),
        "status": entry["status"].get("status_str"),
    }
    mova_lines = [line for line in log.splitlines() if "MOVA" in line or "Prompt executed" in line]
    print("\n".join(mova_lines[-10:]))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
