"""One joint denoiser evaluation of MOVA (official ``MOVA.inference_single_step``): the active video
expert, the audio tower and the bridge, run layer by layer side by side.

:class:`JointConstants` keeps, for one generation, what every pass would otherwise recompute although it
does not change: the prompt's keys and values of every text cross-attention, the RoPE tables of both
towers and of the bridge, and the time embeddings of the current step (shared by its guidance passes).
The numbers are those of the uncached path bit for bit: the same functions run on the same inputs, once.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .bridge import DualTowerBridge
from .dit import DiTTower, TextKV
from .rope import CosSin


VideoBlockWrapper = Callable[[int, Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]
"""``(layer, run_block, states) -> states``: what :func:`joint_forward` calls instead of video block ``layer``."""


def _check_models(video_dit: DiTTower, audio_dit: DiTTower, bridge: DualTowerBridge | None, bridge_enabled: bool) -> None:
    if video_dit.config.is_audio or not audio_dit.config.is_audio:
        raise ValueError("joint_forward needs a video DiT (3-D patch) first and an audio DiT (1-D patch) second.")
    if len(audio_dit.blocks) > len(video_dit.blocks):
        # The official loop would silently skip the extra audio blocks; refuse such a model instead.
        raise ValueError(
            f"the audio DiT has more blocks ({len(audio_dit.blocks)}) than the video DiT ({len(video_dit.blocks)}); "
            "MOVA runs extra blocks only on the video side."
        )
    if not bridge_enabled:
        return
    if bridge is None:
        raise ValueError("bridge_enabled=True needs a bridge; pass bridge_enabled=False to run the towers alone.")
    widths = (bridge.config.visual_hidden_dim, bridge.config.audio_hidden_dim)
    if widths != (video_dit.config.dim, audio_dit.config.dim):
        raise ValueError(
            f"bridge widths (video {widths[0]}, audio {widths[1]}) do not match the DiTs "
            f"(video {video_dit.config.dim}, audio {audio_dit.config.dim})."
        )


def _timesteps(timestep: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """Timesteps as float32 [batch] (a single value is shared by the batch)."""
    t = torch.as_tensor(timestep, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"timestep has {t.numel()} values for a batch of {batch}; give 1 or {batch}.")
    return t


class JointConstants:
    """A per-generation memo for :func:`joint_forward` (create one per generation and pass it to every call).

    Entries are keyed by the tower (and, for prompts, the identity of the context tensors given), so
    they are valid while the weights and prompts stay unchanged, as during one sampling loop; a LoRA applied
    or removed afterwards needs a new object. Memory: the text keys/values of the active video expert, the
    audio tower and each prompt (released shapes, bf16: 0.42 GB + 0.09 GB per prompt; dropped when the video
    expert changes), one RoPE table per grid and the last step's time embeddings.
    """

    def __init__(self, *, prompts: bool = True) -> None:
        """``prompts=False``: project the prompt at every call instead of keeping it (for callers whose prompt
        tensors are new at every call, such as ComfyUI's samplers, where a kept entry would never be hit)."""
        self._prompts = prompts
        self._text: dict[tuple[int, ...], tuple[tuple[torch.Tensor, ...], list[TextKV]]] = {}
        self._video_tower: int | None = None
        self._time: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}
        self._tables: dict[tuple, torch.Tensor | tuple[CosSin, CosSin] | tuple[None, None]] = {}

    def enter(self, video_dit: DiTTower) -> None:
        """Note the active video expert; entries of the previous one are dropped at a switch."""
        if self._video_tower not in (None, id(video_dit)):
            stale = self._video_tower
            self._text = {key: value for key, value in self._text.items() if key[0] != stale}
            self._time.pop(stale, None)
        self._video_tower = id(video_dit)

    def text_kv(self, tower: DiTTower, contexts: tuple[torch.Tensor, ...]) -> list[TextKV]:
        """Per block, the keys/values of the prompts ``contexts`` (concatenated along the batch)."""
        if not self._prompts:
            return _text_kv(tower, _stack(contexts))
        key = (id(tower), *map(id, contexts))
        entry = self._text.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], contexts)):
            entry = (contexts, _text_kv(tower, _stack(contexts)))  # the tensors are kept: ids stay unique
            self._text[key] = entry
        return entry[1]

    def time(self, tower: DiTTower, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tower.embed_time(timestep)``, reused while the timesteps stay equal (the passes of a step)."""
        entry = self._time.get(id(tower))
        if entry is None or entry[0].shape != timestep.shape or not torch.equal(entry[0], timestep):
            entry = (timestep.clone(), tower.embed_time(timestep))
            self._time[id(tower)] = entry
        return entry[1]

    def rope(self, tower: DiTTower, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """``tower.rope_table(grid, device)`` (depends only on the head size and the grid)."""
        key = ("tower", tower.config.is_audio, tower.config.head_dim, grid, device)
        if key not in self._tables:
            self._tables[key] = tower.rope_table(grid, device)
        return self._tables[key]  # type: ignore[return-value]

    def aligned_rope(self, bridge: DualTowerBridge, video_fps: float, grid: tuple[int, int, int], audio_len: int,
                     dtype: torch.dtype, device: torch.device) -> tuple[CosSin, CosSin] | tuple[None, None]:
        """``bridge.aligned_rope(...)`` for this clip."""
        key = ("bridge", id(bridge), video_fps, grid, audio_len, dtype, device)
        if key not in self._tables:
            self._tables[key] = bridge.aligned_rope(video_fps, grid, audio_len, dtype=dtype, device=device)
        return self._tables[key]  # type: ignore[return-value]


def _stack(contexts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return contexts[0] if len(contexts) == 1 else torch.cat(contexts)


def _text_kv(tower: DiTTower, context: torch.Tensor) -> list[TextKV]:
    """Embed a prompt for ``tower`` and project it to every block's text keys and values."""
    embedded = tower.embed_text(context)
    return [block.text_kv(embedded) for block in tower.blocks]


def joint_forward(
    video_dit: DiTTower,
    audio_dit: DiTTower,
    bridge: DualTowerBridge | None,
    video_input: torch.Tensor,
    audio_input: torch.Tensor,
    context: torch.Tensor | Sequence[torch.Tensor],
    timestep: torch.Tensor | float,
    audio_timestep: torch.Tensor | float | None,
    video_fps: float,
    *,
    bridge_enabled: bool = True,
    constants: JointConstants | None = None,
    video_block_wrapper: VideoBlockWrapper | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity predictions ``(video [B, out_dim, T, h, w], audio [B, Ca, La])`` in float32.

    ``video_input`` [B, in_dim, T, h, w] = noisy latents concatenated with the I2V condition;
    ``audio_input`` [B, Ca, La]; ``context`` [B, L_text, text_dim] prompt embeddings (unmasked), or a
    sequence of them, concatenated along the batch (inputs of batch 1 are then shared by every prompt:
    the guidance passes as one batch); ``timestep``/``audio_timestep`` raw timesteps (0..1000), shape [B]
    or a single value (``audio_timestep=None`` reuses ``timestep``); ``video_fps`` is the pixel frame
    rate (aligns the bridge RoPE). At each layer l shared by both towers, the bridge (if layer l
    interacts) runs first on the pre-bridge states, then video block l and audio block l; extra video
    blocks run after. ``bridge_enabled=False`` skips the bridge entirely (the "bridge off" pass of
    bridge CFG). ``constants``: a per-generation :class:`JointConstants` (same numbers, computed once).
    ``video_block_wrapper(layer, run_block, states)``: runs video block ``layer`` in its place (``run_block(states)``
    is the block itself), e.g. to skip or replace it (ComfyUI's block patches).
    """
    _check_models(video_dit, audio_dit, bridge, bridge_enabled)
    contexts = (context,) if isinstance(context, torch.Tensor) else tuple(context)
    batch, device = sum(c.shape[0] for c in contexts), video_input.device
    if video_input.shape[0] == audio_input.shape[0] == 1 < batch:
        video_input, audio_input = video_input.expand(batch, *video_input.shape[1:]), audio_input.expand(batch, -1, -1)
    if audio_input.shape[0] != batch or video_input.shape[0] != batch:
        raise ValueError(
            f"batch sizes differ: video_input {video_input.shape[0]}, audio_input {audio_input.shape[0]}, "
            f"context {batch}."
        )
    video_t = _timesteps(timestep, batch, device)
    audio_t = video_t if audio_timestep is None else _timesteps(audio_timestep, batch, device)
    if constants is None:  # computed here, each block projecting the prompt when it runs
        (video_t_emb, video_t_mod), (audio_t_emb, audio_t_mod) = video_dit.embed_time(video_t), audio_dit.embed_time(audio_t)
        video_text = [video_dit.embed_text(_stack(contexts))] * len(video_dit.blocks)
        audio_text = [audio_dit.embed_text(_stack(contexts))] * len(audio_dit.blocks)
        constants = JointConstants()
    else:
        constants.enter(video_dit)
        video_t_emb, video_t_mod = constants.time(video_dit, video_t)
        audio_t_emb, audio_t_mod = constants.time(audio_dit, audio_t)
        video_text = constants.text_kv(video_dit, contexts)
        audio_text = constants.text_kv(audio_dit, contexts)
    video, grid = video_dit.patchify(video_input)
    audio, audio_grid = audio_dit.patchify(audio_input)
    video_rope = constants.rope(video_dit, grid, device)
    audio_rope = constants.rope(audio_dit, audio_grid, device)
    if bridge_enabled:
        video_cross_rope, audio_cross_rope = constants.aligned_rope(
            bridge, video_fps, grid, audio.shape[1], video.dtype, device)  # type: ignore[arg-type]

    for layer, video_block in enumerate(video_dit.blocks):
        shared = layer < len(audio_dit.blocks)
        if shared and bridge_enabled:
            video, audio = bridge(  # type: ignore[misc]
                layer, video, audio, grid=grid, video_rope=video_cross_rope, audio_rope=audio_cross_rope
            )
        if video_block_wrapper is None:
            video = video_block(video, video_text[layer], video_t_mod, video_rope)
        else:
            video = video_block_wrapper(layer, lambda states, block=video_block, text=video_text[layer]: block(
                states, text, video_t_mod, video_rope), video)
        if shared:
            audio = audio_dit.blocks[layer](audio, audio_text[layer], audio_t_mod, audio_rope)

    video_out = video_dit.project_out(video, video_t_emb, grid)
    audio_out = audio_dit.project_out(audio, audio_t_emb, audio_grid)
    return video_out.float(), audio_out.float()


def conditioned_forward(
    video_dit: DiTTower,
    audio_dit: DiTTower,
    bridge: DualTowerBridge | None,
    video_latents: torch.Tensor,
    audio_latents: torch.Tensor,
    condition: torch.Tensor,
    context: torch.Tensor | Sequence[torch.Tensor],
    video_timestep: torch.Tensor | float,
    audio_timestep: torch.Tensor | float | None,
    video_fps: float,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`joint_forward` (``options``: its keyword options) on the noisy video latents ``[B, z, T, h, w]``
    concatenated with the I2V condition ``[B, t + z, T, h, w]`` (:func:`mova_core.conditioning.image_condition`), in
    the video expert's compute dtype: the one model evaluation of both MOVA Sampler and ComfyUI's native samplers."""
    dtype = video_dit.compute_dtype
    video_input = torch.cat([video_latents, condition.to(video_latents.device)], dim=1).to(dtype)
    return joint_forward(video_dit, audio_dit, bridge, video_input, audio_latents.to(dtype), context, video_timestep,
                         audio_timestep, video_fps, **options)
