"""The joint denoiser evaluation against the official ``MOVA.inference_single_step`` (refs/joint_step):
every case (bridge variant x fps) and expert, the aligned bridge RoPE tables, and the recorded
hidden-state trace layer by layer."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from conftest import assert_close_to_reference

from mova_core.bridge import DualTowerBridge, load_bridge
from mova_core.dit import DiTTower, load_dit
from mova_core.joint import joint_forward

pytestmark = pytest.mark.parity

JOINT_REL = 1e-4  # float32, both towers + bridge
MODULE_REL = 1e-5  # one module fed the recorded inputs
COS_SIN_REL = 1e-6  # float32 cos/sin tables (bit-identical here; allow an ulp of another libm)
AUDIO_DIT = "audio_dit"


@lru_cache(maxsize=None)
def _dit(folder: Path) -> DiTTower:
    return load_dit(folder)


@lru_cache(maxsize=None)
def _bridge(folder: Path) -> DualTowerBridge:
    return load_bridge(folder)


def _bridge_folder(parity_dir: Path, variant: str) -> Path:
    """``official`` is the checkpoint's own bridge; other variants live in ``refs/bridge_<variant>``."""
    if variant == "official":
        return parity_dir / "checkpoint" / "dual_tower_bridge"
    return parity_dir / "refs" / f"bridge_{variant}"


def _cases(ref) -> list[dict]:
    cases = ref.meta["cases"]
    assert cases, "joint_step.json lists no cases"
    return cases


def _run_case(parity_dir: Path, ref, case: dict, expert: str, bridge: DualTowerBridge):
    name = case["case"]
    return joint_forward(
        _dit(parity_dir / "checkpoint" / expert), _dit(parity_dir / "checkpoint" / AUDIO_DIT), bridge,
        ref[f"{name}/visual_latents"], ref[f"{name}/audio_latents"], ref["context"],
        ref[f"{name}/timestep"], ref[f"{name}/audio_timestep"], case["video_fps"],
    )


def test_bridge_variants_load_with_recorded_flags(parity_dir, reference):
    ref = reference("joint_step")
    expected_layers = [video_layer for video_layer, _ in ref.meta["interaction_layers"]]
    for case in _cases(ref):
        bridge = _bridge(_bridge_folder(parity_dir, case["bridge"]))
        for flag, value in case["bridge_flags"].items():
            assert getattr(bridge.config, flag) == value, f"{case['case']}: {flag}"
        if case["bridge"] == "official":
            assert list(bridge.layers) == expected_layers


def test_joint_step_matches_official(parity_dir, reference):
    ref = reference("joint_step")
    for case in _cases(ref):
        bridge = _bridge(_bridge_folder(parity_dir, case["bridge"]))
        for expert in case["experts"]:
            video_out, audio_out = _run_case(parity_dir, ref, case, expert, bridge)
            assert video_out.dtype == audio_out.dtype == torch.float32
            prefix = f"{case['case']}/{expert}"
            assert_close_to_reference(video_out, ref[f"{prefix}/video_out"], JOINT_REL, f"{prefix}/video_out")
            assert_close_to_reference(audio_out, ref[f"{prefix}/audio_out"], JOINT_REL, f"{prefix}/audio_out")


def test_aligned_rope_tables_match_official(parity_dir, reference):
    ref = reference("joint_step")
    checked = 0
    for case in _cases(ref):
        name = case["case"]
        bridge = _bridge(_bridge_folder(parity_dir, case["bridge"]))
        _, grid = _dit(parity_dir / "checkpoint" / case["experts"][0]).patchify(ref[f"{name}/visual_latents"])
        (audio_len,) = _dit(parity_dir / "checkpoint" / AUDIO_DIT).patchify(ref[f"{name}/audio_latents"])[1]
        video, audio = bridge.aligned_rope(case["video_fps"], grid, audio_len, dtype=torch.float32)
        if f"{name}/rope_video_cos" not in ref.tensors:
            assert video is None and audio is None, f"{name}: cross RoPE is off in the reference"
            continue
        for stream, (cos, sin) in (("video", video), ("audio", audio)):
            assert_close_to_reference(cos, ref[f"{name}/rope_{stream}_cos"], COS_SIN_REL, f"{name}/rope_{stream}_cos")
            assert_close_to_reference(sin, ref[f"{name}/rope_{stream}_sin"], COS_SIN_REL, f"{name}/rope_{stream}_sin")
        checked += 1
    assert checked, "no case with cross RoPE tables"


def _trace_prefixes(ref) -> list[str]:
    return sorted({key.partition("/trace/")[0] for key in ref.tensors if "/trace/" in key})


def test_joint_trace_layer_by_layer(parity_dir, reference):
    """Feed each module the recorded input of the official call and compare with the recorded output."""
    ref = reference("joint_step")
    prefixes = _trace_prefixes(ref)
    assert prefixes, "joint_step has no trace tensors"
    cases = {case["case"]: case for case in _cases(ref)}
    for prefix in prefixes:
        case_name, _, expert = prefix.rpartition("/")
        case = cases[case_name]
        towers = {"video": _dit(parity_dir / "checkpoint" / expert), "audio": _dit(parity_dir / "checkpoint" / AUDIO_DIT)}
        inputs = {"video": ref[f"{case_name}/visual_latents"], "audio": ref[f"{case_name}/audio_latents"]}
        timesteps = {"video": ref[f"{case_name}/timestep"], "audio": ref[f"{case_name}/audio_timestep"]}
        bridge = _bridge(_bridge_folder(parity_dir, case["bridge"]))

        def trace(name: str) -> torch.Tensor:
            return ref[f"{prefix}/trace/{name}"]

        state, grids, t_embs = {}, {}, {}
        for stream, tower in towers.items():
            t_emb, t_mod = tower.embed_time(timesteps[stream])
            assert_close_to_reference(t_emb, trace(f"{stream}_time_embedding"), MODULE_REL, f"{stream} t_emb")
            assert_close_to_reference(t_mod.flatten(1), trace(f"{stream}_time_projection"), MODULE_REL, f"{stream} t_mod")
            context = tower.embed_text(ref["context"])
            assert_close_to_reference(context, trace(f"{stream}_text_embedding"), MODULE_REL, f"{stream} text")
            tokens, grids[stream] = tower.patchify(inputs[stream])
            conv_out = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grids[stream])
            assert_close_to_reference(conv_out, trace(f"{stream}_patch_embedding"), MODULE_REL, f"{stream} patchify")
            rope = tower.rope_table(grids[stream])
            assert_close_to_reference(torch.view_as_real(rope)[:, None], trace(f"{stream}_rope_freqs"), 1e-12, f"{stream} rope")
            state[stream] = (tokens, context, t_mod, rope)
            t_embs[stream] = t_emb

        video_rope, audio_rope = bridge.aligned_rope(
            case["video_fps"], grids["video"], state["audio"][0].shape[1], dtype=torch.float32
        )
        hidden = {stream: state[stream][0] for stream in towers}
        bridged = []
        for layer in range(len(towers["video"].blocks)):
            if f"{prefix}/trace/bridge{layer}/visual" in ref.tensors:
                bridged.append(layer)
                video, audio = bridge(layer, hidden["video"], hidden["audio"], grid=grids["video"],
                                      video_rope=video_rope, audio_rope=audio_rope)
                assert_close_to_reference(video, trace(f"bridge{layer}/visual"), MODULE_REL, f"bridge{layer} video")
                assert_close_to_reference(audio, trace(f"bridge{layer}/audio"), MODULE_REL, f"bridge{layer} audio")
                hidden = {"video": trace(f"bridge{layer}/visual"), "audio": trace(f"bridge{layer}/audio")}
            for stream, tower in towers.items():
                if layer >= len(tower.blocks):
                    continue
                _, context, t_mod, rope = state[stream]
                out = tower.blocks[layer](hidden[stream], context, t_mod, rope)
                assert_close_to_reference(out, trace(f"{stream}_block{layer}"), MODULE_REL, f"{stream} block{layer}")
                hidden[stream] = trace(f"{stream}_block{layer}")
        shared_layers = len(towers["audio"].blocks)
        assert bridged == [layer for layer in bridge.layers if layer < shared_layers], f"{prefix}: bridged layers"
        for stream, tower in towers.items():
            head = tower.head(hidden[stream], t_embs[stream])
            assert_close_to_reference(head, trace(f"{stream}_head"), MODULE_REL, f"{stream} head")
