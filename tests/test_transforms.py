"""Paired transforms: shapes, dtypes, label values preserved, image/mask alignment under crop and flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cslearn.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform,
                                     resize_mask_nearest, train_transform)

COLORS = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255], [0, 255, 0]], dtype=np.uint8)  # class -> colour


def _blocks(height: int, width: int, block: int = 8, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """An image whose colour encodes its mask: random classes 0-3 in ``block``-pixel squares."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 4, size=(height // block + 1, width // block + 1)).astype(np.uint8)
    mask = np.kron(grid, np.ones((block, block), np.uint8))[:height, :width]  # (H, W)
    return Image.fromarray(COLORS[mask]), mask


def _class_from_colour(image: torch.Tensor) -> torch.Tensor:
    """Nearest class colour of each pixel of a normalised (3, H, W) image -> (H, W) class ids."""
    pixels = denormalize(image).permute(1, 2, 0) * 255  # (H, W, 3)
    distance = ((pixels[:, :, None, :] - torch.from_numpy(COLORS).float()) ** 2).sum(-1)  # (H, W, 4)
    return distance.argmin(-1)


def test_train_transform_shapes_and_dtypes():
    image, mask = _blocks(96, 128)
    image_out, target = train_transform(crop_size=64)(image, mask)
    assert image_out.shape == (3, 64, 64) and image_out.dtype == torch.float32
    assert target.shape == (64, 64) and target.dtype == torch.int64
    assert type(image_out) is torch.Tensor and type(target) is torch.Tensor  # no tv_tensor leaks out


@pytest.mark.parametrize("size", [(96, 128), (160, 130), (31, 47)])
def test_masks_only_contain_original_values(size):
    rng = np.random.default_rng(1)
    mask = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=size)  # worst case: every pixel an edge
    image = Image.fromarray(rng.integers(0, 256, size=size + (3,), dtype=np.uint8))
    transforms = [train_transform(crop_size=64), eval_transform(crop_size=64), eval_transform(mode="whole")]
    torch.manual_seed(0)
    for transform in transforms:
        for _ in range(5):
            _, target = transform(image, mask)
            assert set(torch.unique(target).tolist()) <= {0, 3, 7, 255}


def test_eval_center_crop_and_whole():
    image, mask = _blocks(96, 128)
    image_out, target = eval_transform(crop_size=64)(image, mask)
    assert image_out.shape == (3, 64, 64) and target.shape == (64, 64)
    # shorter side 96 -> 64 (scale 2/3): the centre crop keeps the middle 96 of 128 source columns
    expected = np.asarray(Image.fromarray(mask).resize((85, 64), Image.NEAREST))[:, 10:74]
    np.testing.assert_array_equal(target.numpy(), expected)
    image_out, target = eval_transform(mode="whole")(image, mask)
    assert image_out.shape == (3, 96, 128)
    np.testing.assert_array_equal(target.numpy(), mask)
    with pytest.raises(ValueError, match="mode"):
        eval_transform(mode="sliding")


@pytest.mark.parametrize("in_size, out_size", [((375, 500), (512, 512)), ((300, 280), (512, 512)),
                                               ((1024, 900), (512, 512)), ((7, 9), (5, 4)), ((33, 17), (100, 3))])
def test_resize_mask_nearest_equals_pil_nearest(in_size, out_size):
    mask = np.random.default_rng(0).integers(0, 21, size=in_size).astype(np.uint8)
    expected = np.asarray(Image.fromarray(mask).resize(out_size[::-1], Image.NEAREST))
    np.testing.assert_array_equal(resize_mask_nearest(torch.from_numpy(mask), out_size).numpy(), expected)


@pytest.mark.parametrize("size", [(96, 128), (128, 96), (375, 500), (500, 333), (61, 61), (700, 17)])
def test_eval_resize_gives_matching_image_and_mask_sizes(size):
    image = Image.new("RGB", size[::-1])
    image_out, target = eval_transform(crop_size=48)(image, np.zeros(size, np.uint8))
    assert image_out.shape == (3, 48, 48) and target.shape == (48, 48)


def test_fallback_whole_image_matches_pil_nearest():
    """Areas above 1 never fit, so after 10 draws the whole image is resized: labels as PIL NEAREST (MiB)."""
    image, mask = _blocks(100, 120, block=5)
    torch.manual_seed(0)
    _, target = train_transform(crop_size=64, scale=(1.5, 2.0), flip=False)(image, mask)
    expected = np.asarray(Image.fromarray(mask).resize((64, 64), Image.NEAREST))
    np.testing.assert_array_equal(target.numpy(), expected)


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_keep_image_and_mask_aligned(seed):
    """The class read back from the transformed image's colour agrees with the transformed mask."""
    image, mask = _blocks(90, 150, block=10, seed=seed)
    mask[:, :20] = 3  # a left-right asymmetric band, so a flip of only one of the two would show
    image = Image.fromarray(COLORS[mask])
    torch.manual_seed(seed)
    for _ in range(4):
        image_out, target = train_transform(crop_size=64)(image, mask)
        agreement = (_class_from_colour(image_out) == target).float().mean().item()
        assert agreement > 0.98, agreement  # torchvision's legacy nearest gives about 0.9


def test_flip_is_applied_to_both():
    image, mask = _blocks(64, 64)
    mask[:, :32] = 1
    mask[:, 32:] = 2
    image = Image.fromarray(COLORS[mask])
    flips = 0
    torch.manual_seed(3)
    for _ in range(12):
        image_out, target = train_transform(crop_size=64, scale=(1.5, 2.0))(image, mask)  # whole image
        flipped = target[0, 0].item() == 2
        flips += flipped
        np.testing.assert_array_equal(_class_from_colour(image_out).numpy(), target.numpy())
    assert 0 < flips < 12  # both outcomes occurred


def test_reproducible_with_torch_seed():
    image, mask = _blocks(96, 128)
    transform = train_transform(crop_size=48)
    torch.manual_seed(7)
    first = transform(image, mask)
    torch.manual_seed(7)
    second = transform(image, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_normalisation_and_denormalize():
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    image_out, _ = eval_transform(mode="whole")(Image.fromarray(pixels), np.zeros((20, 30), np.uint8))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = (torch.from_numpy(pixels).permute(2, 0, 1) / 255.0 - mean) / std
    torch.testing.assert_close(image_out, expected)
    torch.testing.assert_close(denormalize(image_out), torch.from_numpy(pixels).permute(2, 0, 1) / 255.0)
    assert denormalize(image_out[None]).shape == (1, 3, 20, 30)  # batched input works too


def test_size_mismatch_is_an_error():
    image, _ = _blocks(96, 128)
    with pytest.raises(ValueError, match="128x96.*100x96"):
        eval_transform()(image, np.zeros((96, 100), np.uint8))
