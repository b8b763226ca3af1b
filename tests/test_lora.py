"""MOVA LoRA core: every file layout and key spelling, per-component strengths, stacking,
non-destructive application (hooks and merges) and the ComfyUI patch mapping."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import assert_close_to_reference
from mova_core.lora import (
    COMPONENTS, LoraError, LoraStack, LoraStrengths, LoraWeights, linear_shapes, load_lora, lora_delta,
    weight_patches,
)

RANK = 3
REL = 1e-6  # float32 rounding, relative to the largest reference value


# --- tiny models with the official module names -------------------------------------------------

class Attention(nn.Module):
    def __init__(self, dim: int, kv_dim: int):
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(dim, dim), nn.Linear(kv_dim, dim), nn.Linear(kv_dim, dim), nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim)


class Block(nn.Module):
    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.self_attn, self.cross_attn = Attention(dim, dim), Attention(dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))


class Head(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.head = nn.Linear(dim, 4)


class TinyDiT(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, layers: int = 2):
        super().__init__()
        self.text_embedding = nn.Sequential(nn.Linear(5, dim), nn.GELU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(Block(dim, ffn_dim) for _ in range(layers))
        self.head = Head(dim)


class Conditioner(nn.Module):
    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.y_norm = nn.LayerNorm(cond_dim)
        self.inner = Attention(dim, cond_dim)


class TinyBridge(nn.Module):
    def __init__(self, video_dim: int, audio_dim: int, layers: int = 2):
        super().__init__()
        self.audio_to_video_conditioners = nn.ModuleDict({str(i): Conditioner(video_dim, audio_dim) for i in range(layers)})
        self.video_to_audio_conditioners = nn.ModuleDict({str(i): Conditioner(audio_dim, video_dim) for i in range(layers)})


def tiny_models(video_dim: int = 8, audio_dim: int = 6, dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models = {
        "video_dit": TinyDiT(video_dim, 2 * video_dim), "video_dit_2": TinyDiT(video_dim, 2 * video_dim),
        "audio_dit": TinyDiT(audio_dim, 2 * audio_dim), "dual_tower_bridge": TinyBridge(video_dim, audio_dim),
    }
    return {name: model.to(dtype).requires_grad_(False) for name, model in models.items()}


def official_targets(model: nn.Module) -> list[str]:
    """The Linears the official injector wraps: regex ``.*{p}.*`` on the path, minus time_* (spec §16)."""
    include = [re.compile(f".*{p}.*") for p in ["q", "k", "v", "o", "to_q", "to_k", "to_v", "proj"]]
    exclude = [re.compile(f".*{p}.*") for p in ["time_projection", "time_embedding"]]
    return [path for path, child in model.named_modules()
            if isinstance(child, nn.Linear) and not any(p.match(path) for p in exclude)
            and any(p.match(path) for p in include)]


Layers = dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]


def random_layers(models: dict[str, nn.Module], seed: int = 1, rank: int = RANK) -> Layers:
    """(component, path) -> (down, up) for every officially targeted Linear of ``models``."""
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for component, model in models.items():
        shapes = linear_shapes(model)
        for path in official_targets(model):
            out_features, in_features = shapes[path]
            layers[(component, path)] = (torch.randn(rank, in_features, generator=g), torch.randn(out_features, rank, generator=g))
    return layers


# name template ({n}: dotted layer name, {u}: underscored), down suffix, up suffix
SPELLINGS = {
    "official": ("{n}", ".lora_A.weight", ".lora_B.weight"),
    "official_default": ("{n}", ".lora_A.default.weight", ".lora_B.default.weight"),
    "low_resource": ("{n}", ".lora_A", ".lora_B"),
    "peft": ("base_model.model.{n}", ".lora_A.weight", ".lora_B.weight"),
    "diffusers": ("{n}", ".lora.down.weight", ".lora.up.weight"),
    "diffusers_old": ("{n}", "_lora.down.weight", "_lora.up.weight"),
    "linear_layer": ("{n}", ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
    "kohya": ("lora_unet_{u}", ".lora_down.weight", ".lora_up.weight"),
    "comfy": ("diffusion_model.{n}", ".lora_down.weight", ".lora_up.weight"),
}


def spelled(layers: Layers, spelling: str, alpha: float | None = None, prefixed: bool = True) -> dict[str, torch.Tensor]:
    """The layers as a file in ``spelling``; ``prefixed=False`` drops the component (a plain DiT LoRA)."""
    template, down_suffix, up_suffix = SPELLINGS[spelling]
    tensors = {}
    for (component, path), (down, up) in layers.items():
        full = f"{component}.{path}" if prefixed else path
        name = template.format(n=full, u=full.replace(".", "_"))
        tensors[name + down_suffix], tensors[name + up_suffix] = down, up
        if alpha is not None:
            tensors[name + ".alpha"] = torch.tensor(alpha)
    return tensors


def save(tensors: dict[str, torch.Tensor], path) -> str:
    if str(path).endswith(".safetensors"):
        save_file({k: v.clone() for k, v in tensors.items()}, str(path))
    else:
        torch.save(tensors, path)
    return str(path)


def assert_layers(lora, layers: Layers, alpha: float | None) -> None:
    found = {(c, p) for c, paths in lora.components.items() for p in paths}
    assert found == set(layers)
    for (component, path), (down, up) in layers.items():
        weights = lora.components[component][path]
        assert torch.equal(weights.down, down) and torch.equal(weights.up, up), (component, path)
        assert weights.alpha == pytest.approx(alpha) if alpha is not None else weights.alpha is None


def expected_weight(weight: torch.Tensor, terms: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """W + sum(factor * up @ down), written out independently of the library."""
    result = weight.double()
    for down, up, factor in terms:
        result = result + factor * (up.double() @ down.double())
    return result.float()


def snapshot(models: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in models.items()}


def assert_bit_identical(models: dict[str, nn.Module], before: dict[str, dict[str, torch.Tensor]]) -> None:
    for component, model in models.items():
        for key, value in model.state_dict().items():
            assert value.dtype == before[component][key].dtype
            assert torch.equal(value, before[component][key]), f"{component}.{key} changed"
        assert not any(m._forward_hooks for m in model.modules()), f"{component} still has hooks"


# --- reading ----------------------------------------------------------------------------------

def test_official_targeting_matches_spec():
    models = tiny_models()
    targets = official_targets(models["video_dit"])
    assert len(targets) == 10 * 2 and "blocks.1.ffn.2" in targets and "head.head" not in targets
    assert len(official_targets(models["dual_tower_bridge"])) == 8 * 2


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("alpha", [None, 1.5])
def test_every_spelling_loads_to_the_same_layers(tmp_path, spelling, alpha):
    models = tiny_models()
    layers = random_layers(models)
    path = save(spelled(layers, spelling, alpha), tmp_path / "lora.safetensors")
    lora = load_lora(path, models)
    assert_layers(lora, layers, alpha)
    assert not lora.unmatched


def test_pt_file_loads_like_safetensors(tmp_path):
    models = tiny_models()
    layers = random_layers(models)
    lora = load_lora(save(spelled(layers, "official"), tmp_path / "lora.pt"))  # no targets needed
    assert_layers(lora, layers, None)


class NotATensor:
    pass


def test_pt_with_custom_class_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(1, 8), "payload": NotATensor()}, path)
    with pytest.raises(LoraError, match="weights_only=True"):
        load_lora(path)


def test_pt_holding_something_else_than_named_tensors_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save({"video_dit.blocks.0.self_attn.q.lora_A.weight": [1, 2]}, path)
    with pytest.raises(LoraError, match="not named tensors"):
        load_lora(path)


def write_official_folder(folder, layers: Layers, config: dict | None):
    folder.mkdir()
    torch.save(spelled(layers, "official_default"), folder / "lora_weights.pt")
    if config is not None:
        torch.save(config, folder / "lora_config.pt")
    return folder


@pytest.mark.parametrize(
    "config, override, expected_scale",
    [
        ({"rank": RANK, "alpha": 1.5, "target_modules": []}, None, 1.5 / RANK),
        ({"rank": 2 * RANK, "alpha": 16.0, "target_modules": []}, None, 16.0 / (2 * RANK)),  # official: alpha / config rank
        (None, None, 1.0),  # official defaults rank 16, alpha 16
        (None, 8.0, 8.0 / 16),  # alpha override divided by the (default) config rank, as officially
        ({"rank": "WanModel", "alpha": 6.0, "target_modules": []}, None, 6.0 / RANK),  # official saver bug
    ],
)
def test_official_folder_scaling(tmp_path, config, override, expected_scale):
    models = tiny_models()
    layers = random_layers(models)
    folder = write_official_folder(tmp_path / "lora", layers, config)
    for path in (folder, folder / "lora_weights.pt"):
        lora = load_lora(path, alpha=override)
        assert_layers(lora, layers, expected_scale * RANK)
        assert all(w.scale == pytest.approx(expected_scale) for c in lora.components.values() for w in c.values())
    if config is None or isinstance(config["rank"], str):
        assert lora.notes, "the default/fallback must be reported"


def test_official_low_resource_format(tmp_path):
    models = tiny_models()
    layers = random_layers(models)
    path = tmp_path / "lora_weights.pt"
    torch.save({"lora_state_dict": spelled(layers, "low_resource"), "rank": RANK, "alpha": 6.0,
                "dropout": 0.0, "target_modules": ["q", "k", "v", "o"]}, path)
    for source in (path, tmp_path):
        lora = load_lora(source)
        assert_layers(lora, layers, 6.0)


def test_folder_without_weights_is_refused(tmp_path):
    with pytest.raises(LoraError, match="lora_weights.pt"):
        load_lora(tmp_path)


# --- keys without a component, kohya names, unknown keys --------------------------------------

def bare_tensors(layers: Layers, component: str, spelling: str = "official") -> dict[str, torch.Tensor]:
    """The ``component`` layers as a plain DiT LoRA names them (no component prefix)."""
    return spelled({k: v for k, v in layers.items() if k[0] == component}, spelling, prefixed=False)


def test_unprefixed_video_lora_goes_to_both_experts_and_says_so(tmp_path):
    models = tiny_models()
    layers = random_layers(models)
    lora = load_lora(save(bare_tensors(layers, "video_dit"), tmp_path / "plain.safetensors"), models)
    assert set(lora.components) == {"video_dit", "video_dit_2"}
    assert lora.components["video_dit"] == lora.components["video_dit_2"]
    assert any("video_dit/video_dit_2" in note for note in lora.notes)


def test_unprefixed_audio_lora_goes_to_audio_dit(tmp_path):
    models = tiny_models()
    layers = random_layers(models)
    path = save(bare_tensors(layers, "audio_dit"), tmp_path / "plain.safetensors")
    lora = load_lora(path, models)
    assert set(lora.components) == {"audio_dit"}
    assert len(lora.components["audio_dit"]) == 20


def test_unprefixed_kohya_lora_is_mapped_back(tmp_path):
    models = tiny_models()
    layers = random_layers(models)
    tensors = bare_tensors(layers, "video_dit", "kohya")
    assert "lora_unet_blocks_0_self_attn_q.lora_down.weight" in tensors
    lora = load_lora(save(tensors, tmp_path / "kohya.safetensors"), models)
    assert set(lora.components) == {"video_dit", "video_dit_2"}
    assert torch.equal(lora.components["video_dit"]["blocks.1.ffn.0"].up, layers[("video_dit", "blocks.1.ffn.0")][1])


def test_unprefixed_needs_targets_or_an_explicit_choice(tmp_path):
    layers = random_layers(tiny_models())
    path = save(bare_tensors(layers, "video_dit"), tmp_path / "plain.safetensors")
    with pytest.raises(LoraError, match="no component prefix"):
        load_lora(path)
    lora = load_lora(path, unprefixed_to=["video_dit_2"])
    assert set(lora.components) == {"video_dit_2"} and lora.notes


def test_unprefixed_ambiguous_shapes_raise(tmp_path):
    models = tiny_models(video_dim=8, audio_dim=8)
    path = save(bare_tensors(random_layers(models), "video_dit"), tmp_path / "plain.safetensors")
    with pytest.raises(LoraError, match="several targets"):
        load_lora(path, models)
    assert set(load_lora(path, models, unprefixed_to=["audio_dit"]).components) == {"audio_dit"}


def test_targets_may_be_built_on_the_meta_device(tmp_path):
    layers = random_layers(tiny_models())
    with torch.device("meta"):
        meta_models = tiny_models()
    lora = load_lora(save(spelled(layers, "kohya"), tmp_path / "kohya.safetensors"), meta_models)
    assert_layers(lora, layers, None)


def test_kohya_without_targets_is_explained(tmp_path):
    path = save(spelled(random_layers(tiny_models()), "kohya"), tmp_path / "kohya.safetensors")
    with pytest.raises(LoraError, match="kohya-style name: pass targets="):
        load_lora(path)


def test_unusable_keys_raise_or_are_reported(tmp_path):
    models = tiny_models()
    layers = random_layers(models)
    tensors = spelled(layers, "official")
    down, up = layers[("video_dit", "blocks.0.self_attn.q")]
    odd = {
        "video_dit.blocks.0.self_attn.q.dora_scale": torch.ones(8, 1),  # not a plain LoRA tensor
        "video_dit.blocks.7.self_attn.q.lora_A.weight": down,  # no such layer
        "video_dit.blocks.7.self_attn.q.lora_B.weight": up,
        "audio_dit.blocks.0.ffn.0.lora_A.default.weight": down,  # same layer twice in two spellings
        "video_dit.blocks.0.self_attn.k.lora.down.weight": down,
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(RANK, 7),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(7, RANK),
    }
    path = save({**tensors, **odd}, tmp_path / "odd.safetensors")
    with pytest.raises(LoraError) as error:
        load_lora(path, models)
    message = str(error.value)
    for key in ("dora_scale", "blocks.7.self_attn.q", "self_attn.k.lora.down.weight", "lora_te_text"):
        assert key in message
    lora = load_lora(path, models, strict=False)
    given_twice = {f"{layer}.{suffix}" for layer in ("video_dit.blocks.0.self_attn.k", "audio_dit.blocks.0.ffn.0")
                   for suffix in ("lora_A.weight", "lora_B.weight")}  # the whole layer, every spelling
    assert set(lora.unmatched) == set(odd) | given_twice
    assert "more than once" in lora.unmatched["video_dit.blocks.0.self_attn.k.lora_B.weight"]
    assert "no Linear layer" in lora.unmatched["video_dit.blocks.7.self_attn.q.lora_A.weight"]
    assert "audio_dit.blocks.0.ffn.0.lora_A.default.weight" in lora.unmatched  # clashes with the official key
    assert ("video_dit", "blocks.0.self_attn.q") in {(c, p) for c, ps in lora.components.items() for p in ps}
    assert any("skipped" in note for note in lora.notes)


def test_missing_partner_is_named(tmp_path):
    down, _ = random_layers(tiny_models())[("video_dit", "blocks.0.self_attn.q")]
    path = save({"video_dit.blocks.0.self_attn.q.lora_A.weight": down}, tmp_path / "half.safetensors")
    with pytest.raises(LoraError, match=r"no up tensor.*blocks\.0\.self_attn\.q\.lora_A\.weight"):
        load_lora(path)


def test_bad_shapes_are_named_at_load_and_at_apply(tmp_path):
    models = tiny_models()
    layers = random_layers(models)
    down, up = layers[("audio_dit", "blocks.0.self_attn.q")]
    layers[("video_dit", "blocks.0.self_attn.q")] = (down, up)  # audio-sized LoRA on a video layer
    path = save(spelled(layers, "official"), tmp_path / "bad.safetensors")
    with pytest.raises(LoraError, match=r"video_dit\.blocks\.0\.self_attn\.q.*\(6, 6\).*\(8, 8\)"):
        load_lora(path, models)
    lora = load_lora(path)  # without targets it cannot know yet
    before = snapshot(models)
    for merge in (False, True):
        with pytest.raises(LoraError, match=r"video_dit\.blocks\.0\.self_attn\.q: up \(6, 3\) @ down \(3, 6\)"):
            LoraStack().add(lora).apply(models, merge=merge)
        assert_bit_identical(models, before)  # nothing was patched
    with pytest.raises(LoraError, match="my.key"):
        lora_delta(LoraWeights(down, up, None), (8, 8), name="my.key")


# --- application ------------------------------------------------------------------------------

def load_official(tmp_path, models, seed: int, alpha: float, name: str = "lora.safetensors"):
    layers = random_layers(models, seed)
    return layers, load_lora(save(spelled(layers, "official", alpha), tmp_path / name), models)


def test_lora_delta_is_the_merged_weight_math(tmp_path):
    models = tiny_models()
    layers, lora = load_official(tmp_path, models, 1, alpha=1.5)
    weights = lora.components["video_dit"]["blocks.0.ffn.0"]
    down, up = layers[("video_dit", "blocks.0.ffn.0")]
    delta = lora_delta(weights, (16, 8), strength=0.7)
    assert_close_to_reference(delta, 0.7 * (1.5 / RANK) * up @ down, REL, "delta")


@pytest.mark.parametrize("merge", [False, True])
def test_stack_applies_strengths_per_component_and_removes_bit_for_bit(tmp_path, merge):
    models = tiny_models()
    layers_a, lora_a = load_official(tmp_path, models, 1, alpha=1.5, name="a.safetensors")
    layers_b, lora_b = load_official(tmp_path, models, 2, alpha=6.0, name="b.safetensors")
    strengths_a = LoraStrengths(video_dit=0.5, video_dit_2=0.25, audio_dit=1.0, dual_tower_bridge=2.0)
    strengths_b = LoraStrengths.grouped(video=1.0, audio=-1.0, bridge=0.0)
    stack = LoraStack().add(lora_a, strengths_a).add(lora_b, strengths_b)
    before = snapshot(models)
    originals = {c: dict(m.named_parameters()) for c, m in models.items()}
    g = torch.Generator().manual_seed(3)
    with stack.apply(models, merge=merge):
        for (component, path), (down_a, up_a) in layers_a.items():
            linear = models[component].get_submodule(path)
            down_b, up_b = layers_b[(component, path)]
            terms = [(down_a, up_a, strengths_a.of(component) * 1.5 / RANK),
                     (down_b, up_b, strengths_b.of(component) * 6.0 / RANK)]
            expected = expected_weight(before[component][f"{path}.weight"], terms)
            x = torch.randn(2, 5, linear.in_features, generator=g)
            assert_close_to_reference(linear(x), F.linear(x, expected, linear.bias), REL, f"{component}.{path}")
            if merge:
                assert_close_to_reference(linear.weight, expected, REL, f"{component}.{path} weight")
            else:
                assert linear.weight is originals[component][f"{path}.weight"]
        untouched = models["video_dit"].text_embedding[0]
        assert torch.equal(untouched.weight, before["video_dit"]["text_embedding.0.weight"])
    assert_bit_identical(models, before)
    for component, model in models.items():
        assert all(p is originals[component][n] for n, p in model.named_parameters())


def test_merge_in_bfloat16_restores_bit_for_bit(tmp_path):
    models = tiny_models(dtype=torch.bfloat16)
    _, lora = load_official(tmp_path, models, 1, alpha=1.5)
    before = snapshot(models)
    applied = LoraStack().add(lora).apply(models, merge=True)
    linear = models["video_dit"].get_submodule("blocks.0.self_attn.q")
    assert linear.weight.dtype == torch.bfloat16
    assert not torch.equal(linear.weight, before["video_dit"]["blocks.0.self_attn.q.weight"])
    applied.remove()
    applied.remove()  # idempotent
    assert_bit_identical(models, before)


class _CopyCounter(TorchDispatchMode):
    """Counts dtype/device conversions (``aten._to_copy``) run while active."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.copies += func is torch.ops.aten._to_copy.default
        return func(*args, **(kwargs or {}))


def test_hooks_follow_the_input_dtype_and_convert_the_factors_once(tmp_path):
    """The factors are converted for the input's device and dtype once, not at every forward (on a
    GPU that would copy every LoRA factor host-to-device at every model pass)."""
    models = tiny_models(dtype=torch.bfloat16)
    layers, lora = load_official(tmp_path, models, 1, alpha=1.5)
    linear = models["audio_dit"].get_submodule("blocks.1.cross_attn.v")
    x = torch.randn(4, linear.in_features).bfloat16()
    with LoraStack().add(lora).apply(models):
        out = linear(x)
        with _CopyCounter() as counter:
            again = linear(x)
    assert counter.copies == 0 and torch.equal(again, out)
    assert out.dtype == torch.bfloat16
    down, up = layers[("audio_dit", "blocks.1.cross_attn.v")]
    expected = F.linear(x.float(), expected_weight(linear.weight.float(), [(down, up, 1.5 / RANK)]), linear.bias.float())
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)  # bfloat16 activations


def test_hook_patches_remove_in_any_order(tmp_path):
    models = tiny_models()
    layers_a, lora_a = load_official(tmp_path, models, 1, alpha=1.5, name="a.safetensors")
    layers_b, lora_b = load_official(tmp_path, models, 2, alpha=1.5, name="b.safetensors")
    linear = models["dual_tower_bridge"].get_submodule("video_to_audio_conditioners.1.inner.k")
    x = torch.randn(3, linear.in_features)
    applied_a = LoraStack().add(lora_a).apply(models)
    applied_b = LoraStack().add(lora_b).apply(models)
    applied_a.remove()
    down, up = layers_b[("dual_tower_bridge", "video_to_audio_conditioners.1.inner.k")]
    expected = F.linear(x, expected_weight(linear.weight, [(down, up, 1.5 / RANK)]), linear.bias)
    assert_close_to_reference(linear(x), expected, REL, "after removing the other LoRA")
    applied_b.remove()


def test_merges_must_be_removed_in_reverse_order(tmp_path):
    models = tiny_models()
    _, lora = load_official(tmp_path, models, 1, alpha=1.5)
    before = snapshot(models)
    first = LoraStack().add(lora).apply(models, merge=True)
    second = LoraStack().add(lora, LoraStrengths.grouped(bridge=0.5)).apply(models, merge=True)
    with pytest.raises(LoraError, match="reverse order"):
        first.remove()
    second.remove()
    first.remove()
    assert_bit_identical(models, before)


def test_zero_strength_needs_no_module_and_missing_modules_raise(tmp_path):
    models = tiny_models()
    _, lora = load_official(tmp_path, models, 1, alpha=1.5)
    video_only = {c: models[c] for c in ("video_dit", "video_dit_2")}
    with LoraStack().add(lora, LoraStrengths.grouped(audio=0.0, bridge=0.0)).apply(video_only):
        pass
    with pytest.raises(LoraError, match="no audio_dit module"):
        LoraStack().add(lora, LoraStrengths.grouped(bridge=0.0)).apply(video_only)
    assert not any(m._forward_hooks for model in models.values() for m in model.modules())


def test_stacks_are_immutable_clones(tmp_path):
    models = tiny_models()
    _, lora = load_official(tmp_path, models, 1, alpha=1.5)
    empty = LoraStack()
    one = empty.add(lora)
    two = one.add(lora, LoraStrengths.grouped(video=0.5))
    assert empty.entries == () and len(one.entries) == 1 and len(two.entries) == 2
    assert two.without(lora).entries == ()
    assert [s for _, s in two.terms("video_dit")["blocks.0.self_attn.q"]] == [1.0, 0.5]
    with pytest.raises(LoraError, match="not in this stack"):
        empty.without(lora)


def test_strength_fields_are_the_components():
    assert tuple(LoraStrengths.__dataclass_fields__) == COMPONENTS
    assert LoraStrengths.grouped(video=2.0, audio=3.0, bridge=4.0) == LoraStrengths(2.0, 2.0, 3.0, 4.0)
    with pytest.raises(LoraError, match="unknown component"):
        LoraStrengths().of("text_encoder")


# --- ComfyUI mapping --------------------------------------------------------------------------

def comfy_calculate_weight(weight, down, up, alpha, strength):
    """ComfyUI's LoRA rule (comfy/weight_adapter/lora.py): W + strength * (alpha / rank or 1) * up @ down."""
    scale = alpha / down.shape[0] if alpha is not None else 1.0
    return weight + strength * scale * (up @ down)


@pytest.mark.parametrize("alpha", [None, 1.5])
def test_weight_patches_match_the_model_state_dict_and_comfy_math(tmp_path, alpha):
    models = tiny_models()
    _, lora = load_official(tmp_path, models, 1, alpha=alpha)
    for component, model in models.items():
        patches = weight_patches(lora, component, "diffusion_model.")
        state = {f"diffusion_model.{k}": v for k, v in model.state_dict().items()}
        assert patches and set(patches) <= set(state)
        with LoraStack().add(lora, LoraStrengths.grouped(0.8, 0.8, 0.8)).apply(models, merge=True):
            for key, (down, up, patch_alpha) in patches.items():
                merged = model.get_submodule(key.removeprefix("diffusion_model.").removesuffix(".weight")).weight
                assert_close_to_reference(merged, comfy_calculate_weight(state[key], down, up, patch_alpha, 0.8), REL, key)
    assert weight_patches(lora, "audio_dit")["blocks.0.ffn.2.weight"].alpha == alpha


# --- the real MOVA modules --------------------------------------------------------------------

def real_models() -> dict[str, nn.Module]:
    """Small DiT towers and bridge built by ``mova_core.dit`` / ``mova_core.bridge`` (random weights)."""
    from mova_core.bridge import DualTowerBridge
    from mova_core.config import BridgeConfig, DiTConfig
    from mova_core.dit import DiTTower

    common = dict(in_dim=4, out_dim=4, text_dim=8, freq_dim=8, num_layers=2)
    video = DiTConfig.from_dict(dict(dim=24, ffn_dim=32, num_heads=2, patch_size=[1, 2, 2], **common))
    audio = DiTConfig.from_dict(dict(dim=12, ffn_dim=16, num_heads=1, patch_size=[1], vae_type="dac", **common))
    bridge = BridgeConfig.from_dict(dict(visual_layers=2, audio_layers=2, visual_hidden_dim=24, audio_hidden_dim=12,
                                         head_dim=12, interaction_strategy="full", audio_fps=50.0))
    torch.manual_seed(0)
    models = {"video_dit": DiTTower(video), "video_dit_2": DiTTower(video), "audio_dit": DiTTower(audio),
              "dual_tower_bridge": DualTowerBridge(bridge)}
    return {name: model.requires_grad_(False) for name, model in models.items()}


def test_official_lora_on_the_real_modules(tmp_path):
    models = real_models()
    per_block = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                 "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]
    assert official_targets(models["video_dit"]) == [f"blocks.{i}.{n}" for i in range(2) for n in per_block]
    assert official_targets(models["dual_tower_bridge"]) == [
        f"{d}_conditioners.{i}.inner.{n}" for d in ("audio_to_video", "video_to_audio") for i in range(2) for n in "qkvo"]
    layers = random_layers(models)
    config = {"rank": RANK, "alpha": 1.5, "target_modules": []}
    lora = load_lora(write_official_folder(tmp_path / "lora", layers, config), models)
    assert {c: len(paths) for c, paths in lora.components.items()} == {
        "video_dit": 20, "video_dit_2": 20, "audio_dit": 20, "dual_tower_bridge": 16}

    g = torch.Generator().manual_seed(5)
    video_in = (torch.randn(1, 4, 1, 4, 4, generator=g), torch.tensor([500.0]), torch.randn(1, 3, 8, generator=g))
    audio_in = (torch.randn(1, 4, 6, generator=g), torch.tensor([500.0]), torch.randn(1, 3, 8, generator=g))
    streams = (torch.randn(1, 4, 24, generator=g), torch.randn(1, 6, 12, generator=g))

    def outputs() -> list[torch.Tensor]:
        return [models["video_dit"](*video_in), models["video_dit_2"](*video_in), models["audio_dit"](*audio_in),
                *models["dual_tower_bridge"](0, *streams, grid=(1, 2, 2))]

    before, base = snapshot(models), outputs()
    stack = LoraStack().add(lora, LoraStrengths(0.5, 1.0, 0.75, 2.0))
    with stack.apply(models):
        hooked = outputs()
    with stack.apply(models, merge=True):
        merged = outputs()
    assert_bit_identical(models, before)
    for name, base_out, hooked_out, merged_out in zip(["video", "video_2", "audio", "bridge_v", "bridge_a"], base, hooked, merged):
        assert not torch.allclose(hooked_out, base_out), f"{name}: the LoRA changed nothing"
        assert_close_to_reference(hooked_out, merged_out, 1e-5, name)  # float32 through the whole tower
    assert all(torch.equal(a, b) for a, b in zip(outputs(), base))


# --- the standalone pipeline ---------------------------------------------------------------------

def test_pipeline_add_lora_changes_the_clip_and_removing_it_restores_it(tmp_path):
    from mova_core.pipeline import MovaPipeline
    from mova_core.tiny import cached_tiny_checkpoint

    pipe = MovaPipeline.from_pretrained(cached_tiny_checkpoint(), dtype=torch.float32)
    modules = {**pipe.experts, "audio_dit": pipe.audio_dit, "dual_tower_bridge": pipe.bridge}
    layers = {key: (down * 0.3, up * 0.3) for key, (down, up) in random_layers(modules).items()}
    path = save(spelled(layers, "peft"), tmp_path / "lora.safetensors")
    clip = dict(height=32, width=48, num_frames=5, fps=24.0, steps=2, text_cfg=1.0, seed=3)
    base = pipe.generate("a cat", **clip)
    with pipe.add_lora(path, LoraStrengths.grouped(video=1.0, audio=0.0, bridge=0.0)):
        video_only = pipe.generate("a cat", **clip)
        with pipe.add_lora(path, LoraStrengths.grouped(video=0.0, audio=1.0, bridge=1.0)):
            stacked = pipe.generate("a cat", **clip)
    after = pipe.generate("a cat", **clip)
    assert not torch.equal(video_only.video_latents, base.video_latents)
    assert not torch.equal(stacked.audio_latents, video_only.audio_latents)
    assert torch.equal(after.video_latents, base.video_latents) and torch.equal(after.audio, base.audio)
