"""One joint denoiser evaluation of MOVA (official ``MOVA.inference_single_step``): the active video
expert, the audio tower and the bridge, run layer by layer side by side."""

from __future__ import annotations

import torch

from .bridge import DualTowerBridge
from .dit import DiTTower


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


def joint_forward(
    video_dit: DiTTower,
    audio_dit: DiTTower,
    bridge: DualTowerBridge | None,
    video_input: torch.Tensor,
    audio_input: torch.Tensor,
    context: torch.Tensor,
    timestep: torch.Tensor | float,
    audio_timestep: torch.Tensor | float | None,
    video_fps: float,
    *,
    bridge_enabled: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity predictions ``(video [B, out_dim, T, h, w], audio [B, Ca, La])`` in float32.

    ``video_input`` [B, in_dim, T, h, w] = noisy latents concatenated with the I2V condition;
    ``audio_input`` [B, Ca, La]; ``context`` [B, L_text, text_dim] prompt embeddings (unmasked);
    ``timestep``/``audio_timestep`` raw timesteps (0..1000), shape [B] or a single value
    (``audio_timestep=None`` reuses ``timestep``); ``video_fps`` is the pixel frame rate (aligns the
    bridge RoPE). At each layer l shared by both towers, the bridge (if layer l interacts) runs first
    on the pre-bridge states, then video block l and audio block l; extra video blocks run after.
    ``bridge_enabled=False`` skips the bridge entirely (the "bridge off" pass of bridge CFG).
    """
    _check_models(video_dit, audio_dit, bridge, bridge_enabled)
    batch, device = video_input.shape[0], video_input.device
    if audio_input.shape[0] != batch or context.shape[0] != batch:
        raise ValueError(
            f"batch sizes differ: video_input {video_input.shape[0]}, audio_input {audio_input.shape[0]}, "
            f"context {context.shape[0]}."
        )
    video_t = _timesteps(timestep, batch, device)
    audio_t = video_t if audio_timestep is None else _timesteps(audio_timestep, batch, device)

    video_t_emb, video_t_mod = video_dit.embed_time(video_t)
    audio_t_emb, audio_t_mod = audio_dit.embed_time(audio_t)
    video_context = video_dit.embed_text(context)
    audio_context = audio_dit.embed_text(context)
    video, grid = video_dit.patchify(video_input)
    audio, audio_grid = audio_dit.patchify(audio_input)
    video_rope = video_dit.rope_table(grid, device)
    audio_rope = audio_dit.rope_table(audio_grid, device)
    if bridge_enabled:
        video_cross_rope, audio_cross_rope = bridge.aligned_rope(  # type: ignore[union-attr]
            video_fps, grid, audio.shape[1], dtype=video.dtype, device=device
        )

    for layer, video_block in enumerate(video_dit.blocks):
        shared = layer < len(audio_dit.blocks)
        if shared and bridge_enabled:
            video, audio = bridge(  # type: ignore[misc]
                layer, video, audio, grid=grid, video_rope=video_cross_rope, audio_rope=audio_cross_rope
            )
        video = video_block(video, video_context, video_t_mod, video_rope)
        if shared:
            audio = audio_dit.blocks[layer](audio, audio_context, audio_t_mod, audio_rope)

    video_out = video_dit.project_out(video, video_t_emb, grid)
    audio_out = audio_dit.project_out(audio, audio_t_emb, audio_grid)
    return video_out.float(), audio_out.float()
