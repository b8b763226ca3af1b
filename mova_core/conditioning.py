"""Reference-image handling and the I2V condition of MOVA.

Official image path (``scripts/inference_single.py``, ``mova/datasets/transforms/custom.py``,
``MOVA.prepare_latents``): RGB image -> :func:`crop_and_resize` (center crop to the target aspect,
PIL bicubic resize) -> :func:`preprocess_image` (uint8 / 255 * 2 - 1) -> :func:`image_condition`
(VAE-encode ``[image, F-1 zero frames]`` as a whole, posterior mode, normalise, prepend the mask).

T2VA (no image): MOVA has no text-only path or weights; its workflow README says to give a
**pure white image** as the first frame, and third-party wrappers do the same. We follow that:
``prepare_reference_image(None, ...)`` returns a white frame (all 1.0 in [-1, 1]) and the condition
is built from it exactly like an I2V condition (mask 1 on latent frame 0).

First + last frame (FLF): the official ``prepare_latents`` also takes a ``last_image`` that its
``__call__`` never passes. Then the encoded video is ``[image, F-2 zero frames, last_image]`` and the
pixel-frame mask is 1 on the first and the last frame; grouped per latent frame like the rest of the
mask, the last latent frame gets a 1 in its last mask channel only (:func:`condition_mask`). The last
image is prepared like the first (:func:`prepare_reference_image`).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from .video_vae import VideoVAE

ImageInput = Any  # PIL.Image.Image | np.ndarray | torch.Tensor
SIXTEEN_BIT_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # how Pillow opens 16-bit grey PNG/TIFF files


def _pil_rgb(image: Image.Image) -> torch.Tensor:
    """A PIL image as uint8 ``[H, W, 3]``; 16-bit grey is scaled to 8 bits (``convert("RGB")`` would clip it to
    white), every other mode is converted as the official script does."""
    if image.mode in SIXTEEN_BIT_GREY_MODES:
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return torch.from_numpy(np.repeat(grey[..., None], 3, axis=2))
    return torch.from_numpy(np.array(image.convert("RGB")))


def _as_tensor(image: ImageInput, name: str) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return _pil_rgb(image)
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image))
    if isinstance(image, torch.Tensor):
        return image.detach().cpu()
    raise ValueError(
        f"{name}: expected a PIL image, a uint8 [H, W, 3] array/tensor or a ComfyUI IMAGE tensor "
        f"([B, H, W, 3] float in 0..1), got {type(image).__name__}."
    )


def to_image_tensor(image: ImageInput, *, name: str = "image") -> torch.Tensor:
    """One RGB image as a uint8 ``[H, W, 3]`` CPU tensor.

    Accepts a PIL image (any mode, converted to RGB like the official script), a uint8
    ``[H, W, 3]`` ndarray/tensor, or float pixels in 0..1 ``[H, W, 3]`` / ComfyUI IMAGE
    ``[B, H, W, 3]`` (the first image is used; values are clamped to 0..1 and rounded to the nearest
    of the 256 levels, so an IMAGE loaded from an 8-bit file gives back its exact bytes).
    ``name`` is the argument name used in error messages.
    """
    pixels = _as_tensor(image, name)
    if pixels.ndim == 4:
        if pixels.shape[0] == 0:
            raise ValueError(f"{name}: the image batch is empty.")
        pixels = pixels[0]
    if pixels.ndim != 3:
        raise ValueError(f"{name}: expected [H, W, 3] or [B, H, W, 3] (channels last), got shape {tuple(pixels.shape)}.")
    if pixels.shape[-1] != 3:
        raise ValueError(
            f"{name}: has {pixels.shape[-1]} channels (shape {tuple(pixels.shape)}); 3 channels (RGB, channels last) "
            "expected. Drop the alpha channel or convert the image to RGB."
        )
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"{name}: the image is empty (shape {tuple(pixels.shape)}).")
    if pixels.dtype == torch.uint8:
        return pixels.contiguous()
    if pixels.is_floating_point():
        return (pixels.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    raise ValueError(f"{name}: dtype {pixels.dtype} is not supported; use uint8 (0..255) or float (0..1).")


def crop_and_resize(image: ImageInput, height: int, width: int, *, name: str = "image") -> torch.Tensor:
    """The official ``crop_and_resize``: center-crop to the ``height:width`` aspect (crop size
    truncated with ``int()``, offset ``excess // 2``), then PIL bicubic resize to ``width x height``.
    Returns uint8 ``[height, width, 3]``."""
    if height < 1 or width < 1:
        raise ValueError(f"height x width = {height} x {width}: both must be positive.")
    pixels = to_image_tensor(image, name=name).numpy()
    image_height, image_width = pixels.shape[:2]
    if image_height / image_width < height / width:
        cropped = int(image_height / height * width)
        left = (image_width - cropped) // 2
        pixels = pixels[:, left:left + cropped]
    else:
        cropped = int(image_width / width * height)
        top = (image_height - cropped) // 2
        pixels = pixels[top:top + cropped]
    if cropped < 1:
        raise ValueError(f"{name}: {image_width}x{image_height} is too thin to crop to the aspect {width}:{height}.")
    resized = Image.fromarray(np.ascontiguousarray(pixels)).resize((width, height), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(resized))


def preprocess_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[1, 3, H, W]`` in [-1, 1] (``x / 255 * 2 - 1``, as diffusers'
    ``VideoProcessor.preprocess`` does for an image already at the target size)."""
    pixels = image.to(torch.float32) / 255.0
    return (2.0 * pixels - 1.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def white_image(height: int, width: int) -> torch.Tensor:
    """The T2VA reference frame: pure white, float32 ``[1, 3, H, W]`` of 1.0."""
    return torch.ones(1, 3, height, width)


def prepare_reference_image(image: ImageInput | None, height: int, width: int, *, name: str = "image") -> torch.Tensor:
    """Reference frame float32 ``[1, 3, height, width]`` in [-1, 1]: the official crop/resize and
    scaling of ``image``, or for ``None`` (T2VA) a white frame (see the module docstring)."""
    if image is None:
        return white_image(height, width)
    return preprocess_image(crop_and_resize(image, height, width, name=name))


def _condition_chunks(vae: VideoVAE, lead: torch.Tensor, num_frames: int,
                      last_image: torch.Tensor | None) -> Iterator[torch.Tensor]:
    """The encoder chunks of ``[lead frames, zero frames, (last_image)]`` (``num_frames`` in all), made on the fly:
    frame 0 alone, then ``temporal_factor`` frames at a time (the causal VAE's chunks)."""
    lead = lead.to(device=vae.device, dtype=vae.dtype)
    last = None if last_image is None else last_image.to(device=vae.device, dtype=vae.dtype).unsqueeze(2)
    t = vae.config.temporal_factor
    for begin, end in [(0, 1), *((first, first + t) for first in range(1, num_frames, t))]:
        known = lead[:, :, begin:end]
        zeros = lead.new_zeros(*lead.shape[:2], end - begin - known.shape[2], *lead.shape[3:])
        chunk = torch.cat([known, zeros], dim=2) if zeros.shape[2] else known
        if last is not None and end == num_frames:
            chunk = torch.cat([chunk[:, :, :-1], last], dim=2)
        yield chunk


def condition_mask(num_frames: int, temporal_factor: int, *, last_frame: bool = False,
                   lead_frames: int = 1) -> torch.Tensor:
    """Float32 ``[temporal_factor, T]`` mask of the kept frames per latent frame and mask channel.

    Per pixel frame: 1 on the ``lead_frames`` first frames (1: the first frame, as in I2V) and on the last frame
    when ``last_frame``, 0 elsewhere. Frame 0 fills all ``temporal_factor`` slots of latent frame 0 (the causal
    VAE encodes it alone); every later latent frame holds its ``temporal_factor`` pixel frames, one per channel.
    """
    kept = torch.zeros(num_frames)
    kept[:lead_frames] = 1.0
    if last_frame:
        kept[-1] = 1.0
    slots = torch.cat([kept[:1].expand(temporal_factor), kept[1:]])
    return slots.view(-1, temporal_factor).transpose(0, 1).contiguous()


def _check_image(vae: VideoVAE, image: torch.Tensor, name: str) -> None:
    if image.ndim != 4 or image.shape[1] != vae.config.in_channels:
        raise ValueError(f"{name}: expected [B, {vae.config.in_channels}, H, W] in [-1, 1], got shape {tuple(image.shape)}.")


def image_condition(vae: VideoVAE, image: torch.Tensor, num_frames: int, *,
                    last_image: torch.Tensor | None = None, lead_frames: torch.Tensor | None = None) -> torch.Tensor:
    """The I2V (or FLF) condition float32 ``[B, t + z, T, h, w]`` for ``image`` ``[B, 3, H, W]`` in [-1, 1].

    Channels: ``t`` (= the VAE's temporal factor, 4) mask channels (:func:`condition_mask`: 1 on latent
    frame 0, 0 elsewhere; with ``last_image`` also 1 in the last channel of the last latent frame),
    then the normalised posterior mean of the video ``[image, zero frames, (last_image)]`` of
    ``num_frames`` frames encoded as a whole (zeros are mid-grey; the zero latent frames are not
    zero). The video is encoded in the VAE's dtype; the mean is cast to float32 before
    normalisation, as in the reference. ``last_image`` (same shape as ``image``) needs
    ``num_frames`` > 1. ``lead_frames`` ``[B, 3, O, H, W]`` (frame 0 = ``image``) marks the ``O`` first frames
    as known instead of the first alone: a clip that continues them (MOVA's condition carries any known frame).
    """
    _check_image(vae, image, "image")
    if last_image is not None:
        _check_image(vae, last_image, "last_image")
        if last_image.shape != image.shape:
            raise ValueError(f"last_image: shape {tuple(last_image.shape)} differs from image {tuple(image.shape)}; "
                             "prepare both at the clip's size (prepare_reference_image).")
        if num_frames < 2:
            raise ValueError(f"last_image needs a clip of more than one frame; num_frames={num_frames}, use "
                             f"{vae.config.temporal_factor + 1} or more.")
    lead = image.unsqueeze(2) if lead_frames is None else lead_frames
    if lead.shape[:2] + lead.shape[3:] != image.shape or not 1 <= lead.shape[2] < num_frames + (lead_frames is None):
        raise ValueError(f"lead_frames: expected [B, 3, O, H, W] with the image's size and 1 <= O < num_frames="
                         f"{num_frames}, got shape {tuple(lead.shape)}.")
    latent_frames, latent_height, latent_width = vae.config.latent_shape(num_frames, *image.shape[2:])
    latents = vae.normalize(vae.encode_chunks(_condition_chunks(vae, lead, num_frames, last_image)).mean.float())
    mask = condition_mask(num_frames, vae.config.temporal_factor, last_frame=last_image is not None,
                          lead_frames=lead.shape[2])
    mask = mask.to(latents.device)[None, :, :, None, None].expand(
        image.shape[0], -1, latent_frames, latent_height, latent_width)
    return torch.cat([mask, latents], dim=1)
