"""Regional compilation (CPU inductor): no graph break in a block forward, compiled output equal to eager
within float rounding (float32, fp8 storage, a LoRA hook), one graph per block type shared by every block
and both experts, and the pipeline's ``compile=True``."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from torch._dynamo.utils import counters

from mova_core.bridge import DualTowerBridge
from mova_core.compile import compile_blocks, compiled_regions
from mova_core.dit import DiTTower
from mova_core.joint import JointConstants, joint_forward
from test_denoiser_units import audio_config, bridge_config, checkpoint, inputs, load_all, models, seeded, video_config  # noqa: F401

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                 reason="CPU inductor needs a C compiler")]

# Inductor fuses elementwise chains (one rounding instead of several) and may reorder reductions:
# float32 results agree to a few ulps of the output scale; bf16 compute (fp8 storage) to bf16 rounding.
FLOAT32_REL = 1e-5
BF16_REL = 3e-2


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_block_forwards_have_no_graph_break(models):
    video, audio, _ = models
    bridge = seeded(lambda: DualTowerBridge(bridge_config(pooled_adaln=True)), 3)
    x = inputs()
    tokens, grid = video.patchify(x["video_input"])
    _, t_mod = video.embed_time(x["timestep"])
    kv = video.blocks[0].text_kv(video.embed_text(x["context"]))
    explained = torch._dynamo.explain(video.blocks[0])(tokens, kv, t_mod, video.rope_table(grid))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    audio_tokens, _ = audio.patchify(x["audio_input"])
    rope = bridge.aligned_rope(x["video_fps"], grid, audio_tokens.shape[1], dtype=tokens.dtype)
    for directions, (primary, condition, primary_rope, condition_rope) in (
            (bridge.audio_to_video_conditioners, (tokens, audio_tokens, rope[0], rope[1])),
            (bridge.video_to_audio_conditioners, (audio_tokens, tokens, rope[1], rope[0]))):
        explained = torch._dynamo.explain(directions["0"])(primary, condition, primary_rope, condition_rope, grid)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_compiled_blocks_equal_eager_and_share_one_graph_per_block_type():
    experts = [seeded(lambda: DiTTower(video_config(3)), seed) for seed in (1, 4)]
    audio = seeded(lambda: DiTTower(audio_config(3)), 2)
    bridge = seeded(lambda: DualTowerBridge(bridge_config(3, 3)), 3)
    x, constants = inputs(), JointConstants()
    with torch.inference_mode():
        eager = [joint_forward(expert, audio, bridge, **x, constants=constants) for expert in experts]
        assert compile_blocks([*experts, audio, bridge]) == 3 + 3 + 3 + 2 * 3
        started = time.perf_counter()
        compiled = [joint_forward(expert, audio, bridge, **x, constants=constants) for expert in experts]
        print(f"compile + first calls: {time.perf_counter() - started:.1f} s")
    for outputs, references in zip(compiled, eager):
        for out, ref in zip(outputs, references):
            assert _relative(out, ref) < FLOAT32_REL
    # video block, audio block, audio->video and video->audio conditioner: one graph each for 12 blocks
    assert counters["stats"]["unique_graphs"] == 4


def test_compiled_fp8_storage_and_lora_hook_equal_eager(models, checkpoint):  # noqa: F811
    video, audio, bridge = load_all(checkpoint, torch.float8_e4m3fn)
    x = inputs()
    q = video.blocks[0].self_attn.q
    down, up = torch.randn(2, q.in_features) * 0.1, torch.randn(q.out_features, 2) * 0.1
    q.register_forward_hook(lambda module, args, out: out + (args[0] @ down.T.to(out.dtype)) @ up.T.to(out.dtype))
    with torch.inference_mode():
        eager = joint_forward(video, audio, bridge, **x)
        compile_blocks([video, audio, bridge])
        compiled = joint_forward(video, audio, bridge, **x)
    for out, ref in zip(compiled, eager):
        assert _relative(out, ref) < BF16_REL


def test_pipeline_compile_option(tmp_path):
    from mova_core.pipeline import MovaPipeline
    from mova_core.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "model")
    settings = dict(height=32, width=48, num_frames=5, fps=24.0, steps=2, text_cfg=3.0, seed=2)
    eager = MovaPipeline.from_pretrained(folder, dtype=torch.float32).generate("a gong", **settings)
    pipe = MovaPipeline.from_pretrained(folder, dtype=torch.float32, compile=True)
    assert all(region._compiled_call_impl is not None for region in
               compiled_regions([*pipe.experts.values(), pipe.audio_dit, pipe.bridge]))
    compiled = pipe.generate("a gong", **settings)
    for out, ref in ((compiled.video_latents, eager.video_latents), (compiled.audio_latents, eager.audio_latents)):
        assert _relative(out, ref) < FLOAT32_REL
