"""MOVA's native path in a real ComfyUI: MOVA Native Model driven by core's sampler nodes and MODEL patches.

The server of this module logs at DEBUG, so every model pass of the native MODEL leaves a line ("MOVA model pass:
batch 2 at timestep 954.72, bridge on.") and the tests count passes per prompt. LATENTs come back through
SaveLatent (the exact float32 tensors), SIGMAS through PreviewAny (printed with 4 decimals).

Checkpoints: the parity references tiny-e (boundary 0.8, shift 7, extra_one_step) and tiny-d (boundary 0.85, shift
3, no extra_one_step), and the tiny MOVA of the other tests (0.9 / 5) with its LoRA.

Step counts are on the training grid: MOVA Sampler steps between the training-grid sigmas nearest to the schedule's
(README, "Native sampling"), ComfyUI's samplers between the schedule's own, so the two agree to float rounding only
where the schedule lies on the grid: with extra_one_step when steps divide 1000 (tiny-e: 4, 5), without it when
steps - 1 divides 999 (tiny-d: 4). :func:`test_off_grid_step_counts_differ_from_mova_sampler` shows the difference.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from mova_core.checkpoint import open_checkpoint
from mova_core.scheduler import FlowMatchPairScheduler
from mova_core.tiny import cached_tiny_checkpoint

from . import native_graphs as ng
from .comfy_server import ComfyServer
from .conftest import PACK_DIR
from .test_mova_nodes import LORA, MODEL as TINY, cached_nodes, write_tiny_lora

PARITY = PACK_DIR / "tests" / "data" / "parity"
CHECKPOINTS = {"tiny-e": PARITY / "tiny-e" / "checkpoint", "tiny-d": PARITY / "tiny-d" / "checkpoint"}
VOICE = "native_voice.wav"
PARITY_TOLERANCE = 1e-4
PASS_LINE = re.compile(r"MOVA model pass: batch (\d+) at timestep ([\d.]+), bridge (on|off)\.")


@pytest.fixture(scope="module")
def server(comfyui_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A server of this module's own, logging at DEBUG (the pass lines), with the checkpoints, a LoRA and a sound."""
    comfy = ComfyServer(comfyui_path, os.environ.get("COMFYUI_PYTHON", sys.executable),
                        tmp_path_factory.mktemp("comfyui-native"), PACK_DIR)
    write_tiny_lora(comfy.models_dir("loras") / LORA)
    with ng.debug_server(comfy, {**CHECKPOINTS, TINY: cached_tiny_checkpoint()}, VOICE) as started:
        yield started


def run(server: ComfyServer, graph: dict[str, Any], timeout: float = 300) -> tuple[dict[str, Any], list[tuple]]:
    """Run ``graph``; its history entry and the native MODEL's passes ``(batch, timestep, bridge on)``."""
    start = len(server.log_text())
    entry = server.run_workflow(graph, timeout=timeout)
    passes = [(int(batch), float(t), bridge == "on") for batch, t, bridge in PASS_LINE.findall(server.log_text()[start:])]
    return entry, passes


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def native_only(model: str, prefix: str, **settings: Any) -> tuple[dict[str, Any], str]:
    graph = ng.base_graph(model)
    ng.add_native(graph, prefix, **settings)
    return graph, prefix


def mova_schedule(model: str, steps: int, shift: float | None = None) -> torch.Tensor:
    """The official sigmas of ``model``'s scheduler (``shift`` None: the checkpoint's), then 0."""
    scheduler = FlowMatchPairScheduler(open_checkpoint(CHECKPOINTS[model]).scheduler_config())
    return torch.cat([scheduler.sigmas(steps, shift=shift), torch.zeros(1)])


def simple_schedule(shift: float, steps: int) -> torch.Tensor:
    """ComfyUI's "simple" scheduler on flow model sampling: the shifted sigmas of t = 1, 1 - 1/N, ... (N | 1000), 0."""
    t = torch.tensor([1 - k / steps for k in range(steps)], dtype=torch.float64)
    return torch.cat([shift * t / (1 + (shift - 1) * t), torch.zeros(1, dtype=torch.float64)]).float()


PARITY_CASES = {
    "tiny-e-t2va": dict(model="tiny-e", steps=4, bridge_cfg=1.0),
    "tiny-d-t2va-bridge": dict(model="tiny-d", steps=4, bridge_cfg=2.5),
    "tiny-e-i2va-bridge": dict(model="tiny-e", steps=5, bridge_cfg=1.5, image=True),
    "tiny-d-audio-kept-bridge": dict(model="tiny-d", steps=4, bridge_cfg=2.0, audio=True),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_custom_sampler_chain_reproduces_mova_sampler(server: ComfyServer, case: str):
    """SamplerCustomAdvanced(MOVA Noise, CFGGuider, KSamplerSelect(euler), MOVA Schedule) on MOVA Native Model (+ MOVA
    Bridge Guidance) gives MOVA Sampler's latents within 1e-4; one batched text-CFG pass per step, plus one bridge-off
    pass per step only where bridge CFG is on."""
    settings = PARITY_CASES[case]
    graph = ng.base_graph(settings["model"])
    extra = {}
    if settings.get("image"):
        extra["start_image"] = ng.add_image(graph)
    if settings.get("audio"):
        extra["audio"] = ng.add_audio(graph, VOICE)
    common = dict(steps=settings["steps"], seed=7)
    ng.add_mova_sampler(graph, f"parity/{case}_ref", text_cfg=4.0, bridge_cfg=settings["bridge_cfg"],
                        **common, **({"audio_mode": "freeze"} if "audio" in extra else {}), **extra)
    ng.add_native(graph, f"parity/{case}_native", cfg=4.0, bridge_cfg=settings["bridge_cfg"], **common, **extra)
    entry, passes = run(server, graph)
    latents = ng.saved_latents(server, entry)
    for part in ("video", "audio"):
        reference, native = latents[f"parity/{case}_ref_{part}"], latents[f"parity/{case}_native_{part}"]
        assert max_diff(native, reference) <= PARITY_TOLERANCE, part
        assert reference.abs().max() > 0.5  # the comparison is not between near-zero tensors
    bridged = [batch for batch, _, on in passes if on]
    assert bridged == [2] * settings["steps"]  # positive and negative in one batch
    assert len(passes) - len(bridged) == (settings["steps"] if settings["bridge_cfg"] != 1.0 else 0)


def test_off_grid_step_counts_differ_from_mova_sampler(server: ComfyServer):
    """7 steps on tiny-e: the schedule's sigmas are off the training grid, MOVA Sampler steps between the snapped
    ones, so the latents differ by more than the parity tolerance (why the parity cases use on-grid counts)."""
    graph = ng.base_graph("tiny-e")
    ng.add_mova_sampler(graph, "offgrid/ref", steps=7, seed=7, text_cfg=4.0)
    ng.add_native(graph, "offgrid/native", steps=7, seed=7, cfg=4.0)
    latents = ng.saved_latents(server, run(server, graph)[0])
    assert max_diff(latents["offgrid/native_video"], latents["offgrid/ref_video"]) > 1e-3


@pytest.mark.parametrize("model", ["tiny-e", "tiny-d"])
def test_ksampler_simple_differs_from_mova_schedule_by_its_sigmas_only(server: ComfyServer, model: str):
    """Stock KSampler(euler, simple) samples MOVA to finite latents. It is SamplerCustomAdvanced(RandomNoise, CFGGuider,
    euler, BasicScheduler(simple)); RandomNoise draws MOVA Noise's noise for the same seed (one CPU generator, video
    values then audio values, both multiples of 16); so all of its difference from the MOVA Schedule result comes
    from the sigmas: "simple" takes the shifted sigmas of t = 1 - k/N, the official schedule those of
    linspace(1, sigma_min, N + 1)[:-1] (extra_one_step) or linspace(1, sigma_min, N)."""
    steps, settings = 4, dict(steps=4, seed=7, cfg=4.0)
    shift = open_checkpoint(CHECKPOINTS[model]).scheduler_config().shift
    graph = ng.base_graph(model)
    ng.add_native(graph, f"ks/{model}_mova", **settings)
    ng.add_ksampler(graph, f"ks/{model}_ksampler", **settings)
    entry, _ = run(server, graph)
    latents = ng.saved_latents(server, entry)
    ksampler, official = latents[f"ks/{model}_ksampler_av"], latents[f"ks/{model}_mova_av"]
    assert torch.isfinite(ksampler).all()
    mova_sigmas = ng.previewed_sigmas(entry)
    assert max_diff(mova_sigmas, mova_schedule(model, steps)) <= 6e-5

    def custom(noise: str, scheduler: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        chain, prefix = native_only(model, f"ks/{model}_{noise}_{scheduler}", noise=noise, scheduler=scheduler,
                                    **settings)
        done, _ = run(server, chain)
        return ng.saved_latents(server, done)[f"{prefix}_av"], ng.previewed_sigmas(done)

    decomposed, simple_sigmas = custom("random", "simple")
    assert max_diff(ksampler, decomposed) == 0.0
    assert max_diff(custom("random", None)[0], official) == 0.0  # same noise
    assert max_diff(custom("mova", "simple")[0], ksampler) == 0.0  # so only the sigmas differ
    assert max_diff(simple_sigmas, simple_schedule(shift, steps)) <= 6e-5
    sigma_gap = max_diff(simple_schedule(shift, steps), mova_schedule(model, steps))
    latent_gap = max_diff(ksampler, official)
    print(f"\n{model}: KSampler(euler, simple) vs MOVA Schedule, {steps} steps: max |sigma diff| {sigma_gap:.4f}, "
          f"max |latent diff| {latent_gap:.3f} (mean {(ksampler - official).abs().mean():.3f}, latent max "
          f"{official.abs().max():.2f})")
    assert sigma_gap > 1e-3 and latent_gap > 1e-2


@pytest.mark.parametrize("sampler", ["uni_pc", "dpmpp_2m", "res_multistep"])
def test_native_samplers_run_to_finite_latents(server: ComfyServer, sampler: str):
    graph, prefix = native_only("tiny-e", f"samplers/{sampler}", steps=4, seed=7, cfg=4.0, bridge_cfg=2.0,
                                sampler=sampler)
    entry, passes = run(server, graph)
    latents = ng.saved_latents(server, entry)
    for part in ("video", "audio"):
        assert torch.isfinite(latents[f"{prefix}_{part}"]).all() and latents[f"{prefix}_{part}"].abs().max() > 0
    assert len(passes) >= 8  # every step evaluated the model (and the bridge-off pass)


def easycache(threshold: float) -> dict[str, Any]:
    return {"class_type": "EasyCache", "inputs": {"reuse_threshold": threshold, "start_percent": 0.0,
                                                  "end_percent": 1.0, "verbose": False}}


def skipped_steps(server: ComfyServer, since: int) -> tuple[int, int]:
    found = re.findall(r"EasyCache - skipped (\d+)/(\d+) steps", server.log_text()[since:])
    assert len(found) == 1, found
    return int(found[0][0]), int(found[0][1])


def test_easycache_skips_model_passes_and_at_threshold_0_changes_nothing(server: ComfyServer):
    settings = dict(steps=8, seed=7, cfg=4.0)
    graph, prefix = native_only("tiny-e", "easycache/plain", **settings)
    entry, plain_passes = run(server, graph)
    plain = ng.saved_latents(server, entry)[f"{prefix}_av"]
    assert len(plain_passes) == 8

    results = {}
    for threshold in (0.0, 1.5):
        graph, prefix = native_only("tiny-e", f"easycache/{threshold}", patches=(easycache(threshold),), **settings)
        since = len(server.log_text())
        entry, passes = run(server, graph)
        results[threshold] = (ng.saved_latents(server, entry)[f"{prefix}_av"], passes, skipped_steps(server, since))
    output, passes, (skipped, total) = results[0.0]
    assert (skipped, total) == (0, 8) and len(passes) == 8 and max_diff(output, plain) == 0.0
    output, passes, (skipped, total) = results[1.5]
    print(f"\nEasyCache reuse_threshold 1.5 on tiny-e, 8 steps: skipped {skipped}/{total} steps, {len(passes)} model "
          f"passes (8 uncached), max |latent diff| {max_diff(output, plain):.3f}")
    assert skipped >= 1 and len(passes) == total - skipped  # a skipped step runs no model pass
    assert torch.isfinite(output).all() and max_diff(output, plain) > 0


def test_easycache_keeps_given_audio_and_runs_bridge_guidance(server: ComfyServer):
    """EasyCache sees the packed latent as one tensor (its change rates pool both modalities, as they pool a video
    model's channels) and caches the joint output; the kept audio part is restored by the sampler's noise-mask
    blending after every step, so skipped steps cannot change it. The bridge-off pass has cond uuids of its own and
    follows EasyCache's per-step decision (made by the first cond of the batched pass): skipped with the step."""
    graph = ng.base_graph("tiny-d")
    audio = ng.add_audio(graph, VOICE)
    ng.add_mova_sampler(graph, "easycache/audio_ref", steps=8, seed=7, text_cfg=4.0, bridge_cfg=2.0, audio=audio,
                        audio_mode="freeze")
    ng.add_native(graph, "easycache/audio", steps=8, seed=7, cfg=4.0, bridge_cfg=2.0, audio=audio,
                  patches=(easycache(1.5),))
    since = len(server.log_text())
    entry, passes = run(server, graph)
    skipped, total = skipped_steps(server, since)
    latents = ng.saved_latents(server, entry)
    assert skipped >= 1
    assert sum(on for _, _, on in passes) == sum(not on for _, _, on in passes) == total - skipped
    assert max_diff(latents["easycache/audio_audio"], latents["easycache/audio_ref_audio"]) <= 1e-6
    assert torch.isfinite(latents["easycache/audio_video"]).all()


def test_bridge_off_pass_has_cond_uuids_of_its_own(comfyui_path: Path):
    """In-process (the uuids never leave the server): EasyCache keeps one cached output per cond uuid, so the
    bridge-off negative pass must not reuse the negative's uuid (it overwrote the negative's cache entry)."""
    result = subprocess.run(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), str(Path(__file__).with_name("bridge_uuids.py")),
         str(comfyui_path), str(PACK_DIR), str(CHECKPOINTS["tiny-e"])],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    passes = json.loads(result.stdout.split("PASSES ", 1)[1])
    bridged = [tuple(p["uuids"]) for p in passes if p["bridge"]]
    unbridged = [tuple(p["uuids"]) for p in passes if not p["bridge"]]
    assert len(bridged) == len(unbridged) == 3 and len(set(bridged)) == len(set(unbridged)) == 1
    assert len(bridged[0]) == 2 and len(unbridged[0]) == 1  # positive + negative batched; the negative alone
    assert not set(unbridged[0]) & set(bridged[0])


def test_torch_compile_model_matches_eager(server: ComfyServer):
    """TorchCompileModel(inductor) on CPU: compiled kernels (their float32 rounding differs from eager's, so the
    latents are not bit-identical) within 1e-4 of eager; measured 5e-6 on latents up to 7."""
    settings = dict(steps=4, seed=7, cfg=4.0)
    eager_graph, eager = native_only("tiny-e", "compile/eager", **settings)
    compiled_graph, compiled = native_only("tiny-e", "compile/inductor", **settings, patches=(
        {"class_type": "TorchCompileModel", "inputs": {"backend": "inductor"}},))
    reference = ng.saved_latents(server, run(server, eager_graph)[0])[f"{eager}_av"]
    output = ng.saved_latents(server, run(server, compiled_graph, timeout=600)[0])[f"{compiled}_av"]
    print(f"\nTorchCompileModel(inductor) vs eager: max |latent diff| {max_diff(output, reference):.2e}")
    assert 0 < max_diff(output, reference) <= 1e-4


def test_model_sampling_sd3_changes_the_shift(server: ComfyServer):
    """As for Wan: ModelSamplingSD3(shift) replaces the MODEL's sampling, so MOVA Schedule and the "simple" scheduler
    follow the new shift and the output changes; at the checkpoint's own shift (tiny-e: 7) nothing changes."""
    def sampled(name: str, shift: float | None, scheduler: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        patches = () if shift is None else ({"class_type": "ModelSamplingSD3", "inputs": {"shift": shift}},)
        graph, prefix = native_only("tiny-e", f"sd3/{name}", steps=4, seed=7, cfg=4.0, patches=patches,
                                    scheduler=scheduler)
        entry, _ = run(server, graph)
        return ng.saved_latents(server, entry)[f"{prefix}_av"], ng.previewed_sigmas(entry)

    unpatched, default_sigmas = sampled("none", None)
    same, same_sigmas = sampled("shift7", 7.0)
    assert max_diff(same, unpatched) == 0.0 and max_diff(same_sigmas, default_sigmas) == 0.0
    shifted, sigmas = sampled("shift2", 2.0)
    assert max_diff(sigmas, mova_schedule("tiny-e", 4, shift=2.0)) <= 6e-5
    assert max_diff(sigmas, default_sigmas) > 0.1 and max_diff(shifted, unpatched) > 1e-2
    assert max_diff(sampled("shift2_simple", 2.0, "simple")[1], simple_schedule(2.0, 4)) <= 6e-5


def lora_graph(prefix: str, *, lora: bool, sampler: bool, native: bool, seed: int) -> dict[str, Any]:
    """The tiny MOVA (-> MOVA LoRA Loader at strength 0.3) -> MOVA Sampler and/or the native chain, 4 steps."""
    graph = ng.base_graph(TINY)
    if sampler:
        ng.add_mova_sampler(graph, f"{prefix}_sampler", steps=4, seed=seed, text_cfg=4.0)
    if native:
        ng.add_native(graph, f"{prefix}_native", steps=4, seed=seed, cfg=4.0)
    if lora:
        graph["6"] = {"class_type": "MOVALoraLoader", "inputs": {
            "mova_model": ["1", 0], "lora_name": LORA, "strength_high_noise": 0.3, "strength_low_noise": 0.3,
            "strength_audio": 0.3, "strength_bridge": 0.3}}
        for node_id, node in graph.items():
            if node_id not in ("2", "3", "6") and node["inputs"].get("mova_model") == ["1", 0]:
                node["inputs"]["mova_model"] = ["6", 0]
    return graph


def test_lora_applies_on_the_native_path_once_and_unapplies_without_reloading(server: ComfyServer):
    """MOVA LoRA Loader -> MOVA Native Model changes the output; the next prompt without it gives the base output
    again from the same loaded model (the loader is cached, never re-read). MOVA Sampler and the native MODEL share
    the weights: whichever ran before, and both in one prompt, the native result equals MOVA Sampler's (within the
    parity tolerance), which it would not if the LoRA were applied twice."""
    def latents(prefix: str, **kwargs: Any) -> tuple[dict[str, torch.Tensor], dict]:
        entry, _ = run(server, lora_graph(prefix, **kwargs))
        return ng.saved_latents(server, entry), entry

    base, first = latents("lora/base", lora=False, sampler=True, native=True, seed=7)
    assert max_diff(base["lora/base_native_video"], base["lora/base_sampler_video"]) <= PARITY_TOLERANCE
    both, entry = latents("lora/both", lora=True, sampler=True, native=True, seed=7)
    assert "1" in cached_nodes(entry)
    for part in ("video", "audio"):
        assert max_diff(both[f"lora/both_native_{part}"], both[f"lora/both_sampler_{part}"]) <= PARITY_TOLERANCE
    assert max_diff(both["lora/both_native_video"], base["lora/base_native_video"]) > 0.1
    for first_path, second_path, seed in (("sampler", "native", 8), ("native", "sampler", 9)):
        earlier, _ = latents(f"lora/{first_path}_{seed}", lora=True, seed=seed,
                             **{first_path: True, second_path: False})
        later, _ = latents(f"lora/{second_path}_{seed}", lora=True, seed=seed,
                           **{first_path: False, second_path: True})
        assert max_diff(earlier[f"lora/{first_path}_{seed}_{first_path}_video"],
                        later[f"lora/{second_path}_{seed}_{second_path}_video"]) <= PARITY_TOLERANCE
    again, entry = latents("lora/again", lora=False, sampler=True, native=True, seed=7)
    assert "1" in cached_nodes(entry) and not {"10", "27"} & cached_nodes(entry)  # both sampled again
    assert max_diff(again["lora/again_native_video"], base["lora/base_native_video"]) == 0.0
    assert max_diff(again["lora/again_sampler_video"], base["lora/base_sampler_video"]) == 0.0


def test_expert_switch_happens_at_mova_samplers_step(server: ComfyServer):
    """tiny-e, 4 steps (timesteps 1000, 954.7, 875.7, 702.5): the checkpoint's boundary 0.8 switches to video_dit_2
    at the last step, boundary 0.9 one step earlier. The two experts differ, so the switch step shows in the
    latents: at each boundary the native chain (boundary on MOVA Native Model) equals MOVA Sampler (boundary
    widget), and the two boundaries' results differ."""
    results = {}
    for boundary in (-1.0, 0.9):
        graph = ng.base_graph("tiny-e")
        ng.add_mova_sampler(graph, f"switch/{boundary}_ref", steps=4, seed=7, text_cfg=4.0, boundary=boundary)
        ng.add_native(graph, f"switch/{boundary}_native", steps=4, seed=7, cfg=4.0, boundary=boundary)
        entry, passes = run(server, graph)
        latents = ng.saved_latents(server, entry)
        results[boundary] = latents[f"switch/{boundary}_native_video"]
        assert max_diff(results[boundary], latents[f"switch/{boundary}_ref_video"]) <= PARITY_TOLERANCE
        assert [t for _, t, _ in passes] == pytest.approx((mova_schedule("tiny-e", 4)[:-1] * 1000).tolist(), abs=0.01)
    assert max_diff(results[-1.0], results[0.9]) > 1e-2


def _post(server: ComfyServer, route: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{route}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def test_interrupt_stops_before_the_next_model_pass(server: ComfyServer):
    """One step with bridge CFG is two model passes (batched text CFG, then bridge off); ComfyUI itself checks for
    an interrupt only between steps. Interrupted during the first pass, the second never starts."""
    graph, _ = native_only("tiny-e", "interrupt/run", steps=1, seed=11, cfg=4.0, bridge_cfg=2.0, width=256,
                           height=128, frames=33)  # about 2 s per pass on a CPU
    start = len(server.log_text())
    prompt_id = server.submit_workflow(graph)
    deadline = time.monotonic() + 120
    while not PASS_LINE.search(server.log_text()[start:]):
        assert time.monotonic() < deadline, "the first model pass never started"
        time.sleep(0.02)
    _post(server, "/interrupt")
    entry = server.wait_for_history(prompt_id, timeout=120)
    interrupted = [data for event, data in entry["status"]["messages"] if event == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_id"] == "27", entry["status"]
    assert len(PASS_LINE.findall(server.log_text()[start:])) == 1
    assert not {"29", "30", "32"} & set(entry["outputs"])  # no latent saved
