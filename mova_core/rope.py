"""Rotary position embeddings of MOVA: two conventions in one model.

* Towers (self-attention of both DiTs): **interleaved** pairs — features (2m, 2m+1) of a head form
  complex number m — rotated by complex128 tables in float64 and cast back
  (:func:`video_rope_table`, :func:`audio_rope_table`, :func:`apply_interleaved_rope`).
* Bridge (cross-modal attention): **rotate-half** pairs — feature m pairs with m + head_dim/2 —
  with float32 cos/sin tables cast to the hidden dtype, positions aligned on the audio clock
  (:func:`aligned_rope_tables`, :func:`apply_rotate_half_rope`).

Tables are computed on demand (nothing is stored on the modules).
"""

from __future__ import annotations

import torch

ROPE_THETA = 10000.0
# The official bridge hard-codes the video VAE's temporal stride (latent frame = 4 video frames).
VIDEO_FRAMES_PER_LATENT = 4

CosSin = tuple[torch.Tensor, torch.Tensor]


def _rotations(band: int, positions: torch.Tensor) -> torch.Tensor:
    """complex128 ``exp(i * position * theta_k)``, ``theta_k = 10000^(-2k/band)``: [L, band // 2]."""
    exponents = torch.arange(0, band, 2, dtype=torch.float64, device=positions.device)[: band // 2] / band
    frequencies = 1.0 / torch.pow(ROPE_THETA, exponents)
    angles = torch.outer(positions.to(torch.float64), frequencies)
    return torch.polar(torch.ones_like(angles), angles)


def _positions(length: int, device: torch.device | str | None) -> torch.Tensor:
    return torch.arange(length, dtype=torch.float64, device=device)


def video_band_sizes(head_dim: int) -> tuple[int, int, int]:
    """Real features per head given to (frame, height, width) rotations."""
    return head_dim - 2 * (head_dim // 3), head_dim // 3, head_dim // 3


def video_rope_table(head_dim: int, grid: tuple[int, int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """3-D table for a (frames, height, width) token grid, tokens in (f, h, w) order:
    complex128 [f*h*w, head_dim // 2] = [frame | height | width] rotations of each token."""
    f, h, w = grid
    frame_band, height_band, width_band = video_band_sizes(head_dim)
    frame = _rotations(frame_band, _positions(f, device))[:, None, None].expand(f, h, w, -1)
    height = _rotations(height_band, _positions(h, device))[None, :, None].expand(f, h, w, -1)
    width = _rotations(width_band, _positions(w, device))[None, None, :].expand(f, h, w, -1)
    return torch.cat([frame, height, width], dim=-1).reshape(f * h * w, -1)


def audio_rope_table(head_dim: int, length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """1-D table over the whole head for token indices 0..length-1: complex128 [length, head_dim // 2]."""
    return _rotations(head_dim, _positions(length, device))


# Tokens per float64 piece of the CPU rotation: about 1 MiB of float64 at a time.
_ROPE_PIECE_ELEMENTS = 1 << 17


def apply_interleaved_rope(x: torch.Tensor, table: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """Rotate ``x`` [B, L, heads, head_dim] by ``table`` [L, head_dim // 2] in float64; keeps x's dtype.

    The product is taken in place on a float64 copy: on long videos this rotation is the memory peak
    of a DiT pass, and a second complex128 tensor would add 4x the size of bf16 ``x`` to it. On the CPU the
    tokens are rotated piece by piece (about 1 MiB of float64 each) into one output buffer: the same
    elementwise operations on the same values, without a float64 copy of the whole of ``x`` (on the CPU that
    copy, twice the size of float32 ``x``, was a fresh heap block at every call, page-faulted in and out).
    Under ``torch.compile`` (which has no complex kernels) the same product is written in real float64
    arithmetic, which the compiler fuses into one kernel without the copy. ``inplace``: on the CPU, ``x`` (a
    buffer the caller owns, without autograd) receives the rotated pieces itself (each piece is copied to
    float64 before it is overwritten), instead of a new output buffer."""
    if torch.compiler.is_compiling():
        pairs, rotation = x.to(torch.float64).unflatten(-1, (-1, 2)), torch.view_as_real(table)[:, None]
        real, imag, cos, sin = pairs[..., 0], pairs[..., 1], rotation[..., 0], rotation[..., 1]
        return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2).to(x.dtype)
    length = x.shape[1]
    piece = length if x.device.type != "cpu" else max(1, _ROPE_PIECE_ELEMENTS // max(1, x[:, :1].numel()))
    if piece >= length:
        pairs = torch.view_as_complex(x.to(torch.float64, copy=True).unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs.mul_(table[:, None])).flatten(-2).to(x.dtype)
    out = x if inplace else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for start in range(0, length, piece):
        stop = min(start + piece, length)
        pairs = torch.view_as_complex(x[:, start:stop].to(torch.float64, copy=True).unflatten(-1, (-1, 2)))
        out[:, start:stop].copy_(torch.view_as_real(pairs.mul_(table[start:stop, None])).flatten(-2))
    return out


def video_positions_on_audio_clock(
    frames: int, video_fps: float, audio_fps: float, *, first_frame_bias: bool, device: torch.device | str | None = None
) -> torch.Tensor:
    """float32 position of each latent frame in audio-latent steps (the bridge's shared clock).

    Without the bias, latent frame f sits at ``f * audio_fps / (video_fps / 4)``. With it, frame 0
    sits at 0 and frame f >= 1 at ``(1/video_fps + (f - 1) * 4/video_fps) * audio_fps`` (the first
    latent frame covers one video frame only). Computed with the official float32 operations.
    """
    steps = torch.arange(frames, dtype=torch.float32, device=device)
    if not first_frame_bias:
        return steps * (float(audio_fps) / (float(video_fps) / VIDEO_FRAMES_PER_LATENT))
    starts = torch.zeros(frames, dtype=torch.float32, device=device)
    latent_period = 1.0 / (float(video_fps) / VIDEO_FRAMES_PER_LATENT)
    starts[1:] = 1.0 / float(video_fps) + steps[: frames - 1] * latent_period
    return starts * float(audio_fps)


def rotate_half_cos_sin(positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> CosSin:
    """HF-style cos/sin tables [1, L, head_dim] (frequencies repeated for both halves), computed in
    float32 and cast to ``dtype``."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inverse_frequencies = 1.0 / torch.pow(ROPE_THETA, exponents)
    angles = torch.outer(positions.float(), inverse_frequencies)
    angles = torch.cat([angles, angles], dim=-1)[None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def aligned_rope_tables(
    *,
    head_dim: int,
    grid: tuple[int, int, int],
    audio_len: int,
    video_fps: float,
    audio_fps: float,
    first_frame_bias: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[CosSin, CosSin]:
    """Bridge RoPE: ``(video_cos, video_sin)`` [1, f*h*w, head_dim] (all tokens of a latent frame share
    its position) and ``(audio_cos, audio_sin)`` [1, audio_len, head_dim] (positions 0..audio_len-1)."""
    f, h, w = grid
    frame_positions = video_positions_on_audio_clock(f, video_fps, audio_fps, first_frame_bias=first_frame_bias, device=device)
    video = rotate_half_cos_sin(frame_positions.repeat_interleave(h * w), head_dim, dtype)
    audio = rotate_half_cos_sin(torch.arange(audio_len, dtype=torch.float32, device=device), head_dim, dtype)
    return video, audio


def apply_rotate_half_rope(x: torch.Tensor, cos_sin: CosSin) -> torch.Tensor:
    """Rotate ``x`` [B, L, heads, head_dim] by cos/sin [1 or B, L, head_dim]. The tables are first
    rounded to x's dtype; the rotation is computed in float32 and rounded once (the official
    function is ``torch.compile``d, which fuses it that way).

    ``x·cos + rotate_half(x)·sin`` with ``rotate_half(x) = [-second, first]``, written per half into one
    buffer (no concatenated copy): ``first·cos - second·sin`` equals ``first·cos + (-second)·sin`` bit for bit."""
    cos, sin = (t.to(device=x.device, dtype=x.dtype)[:, :, None].float() for t in cos_sin)
    x32 = x.float()
    half = x.shape[-1] // 2
    out = x32 * cos
    out[..., :half].sub_(x32[..., half:] * sin[..., :half])
    out[..., half:].add_(x32[..., :half] * sin[..., half:])
    return out.to(x.dtype)
