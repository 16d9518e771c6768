"""Paired image + mask transforms: the MiB training augmentation and the test-time crop.

Training (the MiB protocol, "Optimisation and data"): inception-style RandomResizedCrop to
``crop_size`` with ``scale`` as the *area fraction* (0.5, 2.0) and ``ratio`` (3/4, 4/3); after 10 failed
draws torchvision falls back to the whole image (or a centre crop fixing the aspect ratio), exactly
MiB's ``get_params``. Then a horizontal flip and ImageNet normalisation. Test: resize the shorter side
to ``crop_size`` and take the centre ``crop_size`` square, or keep the whole image.

Images are resized by PIL bilinear, as in MiB. Masks are resized by nearest neighbour with
*centre-aligned* sampling, identical to PIL's NEAREST used by MiB: output pixel i reads source pixel
floor((i + 0.5) * in / out). torchvision's mask resize samples floor(i * in / out) instead (legacy
``NEAREST``; older releases also ignore ``NEAREST_EXACT`` for masks), which shifts labels by up to one
source pixel against the image; the two resizing transforms below therefore resize masks
themselves. Nearest sampling only copies existing values: a mask never gains a label it did not have.

Each factory returns a callable ``(PIL image, (H, W) uint8 mask) -> (float (3, H, W), int64 (H, W))``.
The mask arrives already remapped (255 = ignore).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def resize_mask_nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (..., H, W) labels to ``size`` = (height, width) with PIL's centre-aligned NEAREST."""
    in_height, in_width = mask.shape[-2:]
    rows = _source_positions(in_height, size[0])  # (out_height,)
    columns = _source_positions(in_width, size[1])  # (out_width,)
    return mask[..., rows[:, None], columns[None, :]]  # (..., out_height, out_width)


def _source_positions(in_size: int, out_size: int) -> torch.Tensor:
    positions = (torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size)
    return positions.floor().long().clamp_(max=in_size - 1)


def _shorter_side_size(height: int, width: int, size: list[int]) -> tuple[int, int]:
    """torchvision's Resize rule: an int matches the shorter side, the longer one is truncated."""
    if len(size) == 2:
        return size[0], size[1]
    short, long = min(height, width), max(height, width)
    new_short, new_long = size[0], int(size[0] * long / short)
    return (new_long, new_short) if height > width else (new_short, new_long)


class RandomResizedCropPaired(v2.RandomResizedCrop):
    """torchvision's RandomResizedCrop (same draw and fallback); masks use PIL's centre-aligned nearest."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            top, left = params["top"], params["left"]
            cropped = inpt.as_subclass(torch.Tensor)[..., top:top + params["height"], left:left + params["width"]]
            return tv_tensors.wrap(resize_mask_nearest(cropped, tuple(self.size)), like=inpt)
        return super().transform(inpt, params)


class ResizePaired(v2.Resize):
    """torchvision's Resize; masks use PIL's centre-aligned nearest."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            size = _shorter_side_size(*inpt.shape[-2:], list(self.size))
            return tv_tensors.wrap(resize_mask_nearest(inpt.as_subclass(torch.Tensor), size), like=inpt)
        return super().transform(inpt, params)


class PairedTransform:
    """Run a v2 pipeline on ``(image, mask)`` and return plain tensors (float image, int64 target).

    A module-level class (not a closure) so DataLoader workers can pickle it.
    """

    def __init__(self, pipeline: v2.Transform) -> None:
        self.pipeline = pipeline

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mask_array = np.asarray(mask)
        if mask_array.ndim != 2:
            raise ValueError(f"mask must be (H, W), got shape {mask_array.shape}")
        if isinstance(image, Image.Image) and image.size != (mask_array.shape[1], mask_array.shape[0]):
            raise ValueError(f"image is {image.size[0]}x{image.size[1]} (WxH) but mask is "
                             f"{mask_array.shape[1]}x{mask_array.shape[0]}")
        mask_tensor = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask_array)))  # (H, W)
        image_tensor, mask_tensor = self.pipeline(image, mask_tensor)
        if image_tensor.shape[-2:] != mask_tensor.shape[-2:]:
            raise RuntimeError(f"transform produced image {tuple(image_tensor.shape)} and mask "
                               f"{tuple(mask_tensor.shape)}; they must have the same size")
        return image_tensor.as_subclass(torch.Tensor), mask_tensor.as_subclass(torch.Tensor).long()

    def __repr__(self) -> str:
        return f"PairedTransform({self.pipeline})"


def _to_normalized_tensor() -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(crop_size: int = 512, scale: tuple[float, float] = (0.5, 2.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> PairedTransform:
    """MiB's training augmentation: area-fraction RandomResizedCrop, horizontal flip, normalisation.

    Draws use torch's random generator, so ``torch.manual_seed`` (and DataLoader worker seeding)
    makes them reproducible.
    """
    steps: list[v2.Transform] = [RandomResizedCropPaired(crop_size, scale=scale, ratio=ratio, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    return PairedTransform(v2.Compose(steps + _to_normalized_tensor()))


def eval_transform(crop_size: int = 512, mode: str = "center_crop") -> PairedTransform:
    """Test-time transform: ``"center_crop"`` (shorter side to ``crop_size``, centre square; MiB's
    default) or ``"whole"`` (no resize or crop, only normalisation; batch size 1 then)."""
    if mode == "center_crop":
        steps: list[v2.Transform] = [ResizePaired(crop_size, antialias=True), v2.CenterCrop(crop_size)]
    elif mode == "whole":
        steps = []
    else:
        raise ValueError(f"mode must be 'center_crop' or 'whole', got {mode!r}")
    return PairedTransform(v2.Compose(steps + _to_normalized_tensor()))


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation for display: (3, H, W) or (B, 3, H, W) -> values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)  # (3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)  # (3, 1, 1)
    return (image * std + mean).clamp(0.0, 1.0)
