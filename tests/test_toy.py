"""The procedural toy dataset: deterministic, VOC-like label values, and a protocol that bites."""
from __future__ import annotations

import numpy as np
import pytest

from cslearn.data.incremental import label_sets
from cslearn.data.toy import TOY_CLASSES, ToySegmentation, _render_split
from cslearn.protocol import get_task, select_images

NUM_IMAGES = 300  # enough for every class; the default 2,000 is too slow for a unit test


@pytest.fixture(scope="module")
def toy() -> ToySegmentation:
    return ToySegmentation("train", num_images=NUM_IMAGES)


@pytest.fixture(scope="module")
def presence(toy) -> np.ndarray:
    return label_sets(toy)


def test_reader_interface(toy):
    assert toy.name == "toy" and toy.num_classes == 21 and toy.class0_is_other is False
    assert len(TOY_CLASSES) == 21 and TOY_CLASSES[0] == "background"
    assert len(toy) == NUM_IMAGES == len(set(toy.ids))
    image, mask = toy[3]
    assert image.mode == "RGB" and image.size == (64, 64)
    assert mask.mode == "L" and mask.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(mask), toy.read_mask(3))
    np.testing.assert_array_equal(np.asarray(image), toy.images[3])
    assert toy.read_mask(3).dtype == np.uint8


def test_deterministic_for_a_seed():
    first = ToySegmentation("train", num_images=12, image_size=32, seed=7)
    _render_split.cache_clear()  # render again rather than share the first rendering
    second = ToySegmentation("train", num_images=12, image_size=32, seed=7)
    assert second.images is not first.images
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.masks, second.masks)
    assert first.ids == second.ids
    other_seed = ToySegmentation("train", num_images=12, image_size=32, seed=8)
    assert not np.array_equal(first.masks, other_seed.masks)


def test_instances_with_the_same_settings_share_one_read_only_rendering():
    first = ToySegmentation("val", num_images=6, image_size=32, seed=3)
    second = ToySegmentation("val", num_images=6, image_size=32, seed=3)
    assert second.images is first.images and second.masks is first.masks
    with pytest.raises(ValueError, match="read-only"):
        first.masks[0, 0, 0] = 1  # shared: nobody may change another run's images
    assert ToySegmentation("val", num_images=7, image_size=32, seed=3).images is not first.images
    image, mask = first[2]  # PIL images from read-only arrays
    np.testing.assert_array_equal(np.asarray(image), first.images[2])


def test_splits_differ():
    train = ToySegmentation("train", num_images=12, image_size=32)
    val = ToySegmentation("val", num_images=12, image_size=32)
    assert not np.array_equal(train.masks, val.masks)
    assert not np.array_equal(train.images, val.images)
    assert set(train.ids).isdisjoint(val.ids)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="train"):
        ToySegmentation("test", num_images=2)


def test_all_twenty_classes_present(presence):
    assert presence.shape == (NUM_IMAGES, 21)
    assert presence[:, 1:].any(axis=0).all()
    assert not presence[:, 0].any()


def test_mask_values_are_background_classes_and_void(toy):
    values = set(np.unique(toy.masks).tolist())
    assert values <= set(range(21)) | {255}
    assert {0, 255} <= values


def test_every_image_has_background_and_an_object(toy, presence):
    assert (toy.masks == 0).any(axis=(1, 2)).all()
    assert presence[:, 1:].any(axis=1).all()


def test_void_only_on_object_borders(toy):
    for mask in toy.masks[:50]:
        void = mask == 255
        padded = np.pad(mask, 1, mode="edge")
        # a void pixel touches a non-void pixel of another value or another void pixel: never a
        # void pixel in the middle of background (4-neighbours all background)
        neighbours = [padded[0:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, 0:-2], padded[1:-1, 2:]]
        surrounded_by_background = np.logical_and.reduce([n == 0 for n in neighbours])
        assert not (void & surrounded_by_background).any()


def test_several_images_hold_two_or_more_classes(presence):
    per_image = presence.sum(axis=1)
    assert (per_image >= 2).sum() >= 0.3 * NUM_IMAGES
    assert (per_image == 1).sum() >= 0.2 * NUM_IMAGES


def test_overlapped_and_disjoint_differ_on_15_1(presence):
    task = get_task("toy", "15-1")
    overlapped = set(select_images(presence, task, 1, "overlapped").tolist())
    disjoint = set(select_images(presence, task, 1, "disjoint").tolist())
    assert disjoint and disjoint < overlapped
    # the difference is made of images that also show a future class (17-20)
    assert all(presence[index, 17:].any() for index in overlapped - disjoint)
