"""The protocol on hand-written tables (protocol.md §2-4).

Every expected value below is written out literally, never recomputed with the code under test:
step lists of every published task, image selection on a hand-made label-set table, and target
remapping on explicit small masks under every convention.
"""
from __future__ import annotations

import numpy as np
import pytest

from cslearn.protocol import (Conventions, Task, get_task, label_set_matrix, parse_task, remap_lookup,
                              select_images, select_test_images)


def r(first: int, last: int) -> tuple[int, ...]:
    """Inclusive range of class ids, as protocol.md writes them ("0-15")."""
    return tuple(range(first, last + 1))


# ---------------------------------------------------------------------------------------------
# 1. Task definitions (protocol.md §2.2), written out literally
# ---------------------------------------------------------------------------------------------

VOC_TASKS = {
    "offline": [r(0, 20)],
    "19-1": [r(0, 19), (20,)],
    "15-5": [r(0, 15), r(16, 20)],
    "15-1": [r(0, 15), (16,), (17,), (18,), (19,), (20,)],
    "15-5s": [r(0, 15), (16,), (17,), (18,), (19,), (20,)],
    "10-1": [r(0, 10), (11,), (12,), (13,), (14,), (15,), (16,), (17,), (18,), (19,), (20,)],
    "10-10s": [r(0, 10), (11,), (12,), (13,), (14,), (15,), (16,), (17,), (18,), (19,), (20,)],
    "10-10": [r(0, 10), r(11, 20)],
    "10-5-5": [r(0, 10), r(11, 15), r(16, 20)],
    "19-1b": [(0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20), (5,)],
}

ADE_TASKS = {
    "offline": [r(0, 150)],
    "100-50": [r(0, 100), r(101, 150)],
    "100-10": [r(0, 100), r(101, 110), r(111, 120), r(121, 130), r(131, 140), r(141, 150)],
    "50-50": [r(0, 50), r(51, 100), r(101, 150)],
    "50": [r(0, 50), r(51, 100), r(101, 150)],
    "100-5": [r(0, 100), r(101, 105), r(106, 110), r(111, 115), r(116, 120), r(121, 125),
              r(126, 130), r(131, 135), r(136, 140), r(141, 145), r(146, 150)],
}


@pytest.mark.parametrize("name", sorted(VOC_TASKS))
def test_voc_tasks_match_the_reference(name):
    task = get_task("voc", name)
    assert [tuple(step) for step in task.steps] == VOC_TASKS[name]
    assert task.num_classes == 21
    assert task.num_steps == len(VOC_TASKS[name])


@pytest.mark.parametrize("name", sorted(VOC_TASKS))
def test_toy_tasks_mirror_voc(name):
    task = get_task("toy", name)
    assert [tuple(step) for step in task.steps] == VOC_TASKS[name]
    assert task.num_classes == 21


@pytest.mark.parametrize("name", sorted(ADE_TASKS))
def test_ade_tasks_match_the_reference(name):
    task = get_task("ade", name)
    assert [tuple(step) for step in task.steps] == ADE_TASKS[name]
    assert task.num_classes == 151


def test_published_step_counts():
    counts = {"19-1": 2, "15-5": 2, "15-1": 6, "10-1": 11, "10-10": 2, "10-5-5": 3, "19-1b": 2}
    assert {name: get_task("voc", name).num_steps for name in counts} == counts
    ade_counts = {"100-50": 2, "100-10": 6, "50-50": 3, "100-5": 11}
    assert {name: get_task("ade", name).num_steps for name in ade_counts} == ade_counts


def test_old_new_seen_future_of_a_step():
    task = get_task("voc", "15-1")
    assert task.new_classes(2) == (17,)
    assert task.old_classes(2) == r(0, 16)
    assert task.seen_classes(2) == r(0, 17)
    assert task.future_classes(2) == (18, 19, 20)
    assert task.old_classes(0) == ()
    assert task.future_classes(5) == ()
    assert task.num_old(2) == 17 and task.num_seen(2) == 18
    assert task.classes_per_step == [16, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="0..5"):
        task.new_classes(6)


def test_default_order_channels_are_the_identity():
    assert get_task("voc", "15-1").channel_of() == {c: c for c in range(21)}
    assert get_task("ade", "100-50").channel_of() == {c: c for c in range(151)}


def test_19_1b_renumbers_the_last_class_to_the_last_channel():
    channel = get_task("voc", "19-1b").channel_of()
    assert channel[0] == 0 and channel[4] == 4
    assert channel[6] == 5 and channel[20] == 19
    assert channel[5] == 20


# ---------------------------------------------------------------------------------------------
# 2. The generic parser
# ---------------------------------------------------------------------------------------------

def test_generic_base_increment():
    assert parse_task("4-4", 21) == (r(0, 4), r(5, 8), r(9, 12), r(13, 16), r(17, 20))
    # 20 - 5 = 15 classes after step 0 split into steps of 3: five steps.
    assert parse_task("5-3", 21) == (r(0, 5), r(6, 8), r(9, 11), r(12, 14), r(15, 17), r(18, 20))


@pytest.mark.parametrize("name, message", [
    ("15-2", "5 classes after step 0 cannot be split into steps of 2"),
    ("5-4", "15 classes after step 0 cannot be split into steps of 4"),
    ("5-5-5", "sum to 15"),
    ("20-1", "cannot be split"),
    ("15-0", "positive"),
    ("15", "at least two"),
])
def test_generic_parser_rejects_impossible_splits(name, message):
    with pytest.raises(ValueError, match=message):
        parse_task(name, 21)


def test_custom_order_renumbers_channels():
    evens_then_odds = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    task = get_task("voc", "10-10", order=evens_then_odds)
    assert task.steps == ((0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20), (1, 3, 5, 7, 9, 11, 13, 15, 17, 19))
    assert task.channel_of() == {0: 0, 2: 1, 4: 2, 6: 3, 8: 4, 10: 5, 12: 6, 14: 7, 16: 8, 18: 9, 20: 10,
                                 1: 11, 3: 12, 5: 13, 7: 14, 9: 15, 11: 16, 13: 17, 15: 18, 17: 19, 19: 20}
    assert task.class_of_channel() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20,
                                       1, 3, 5, 7, 9, 11, 13, 15, 17, 19]


@pytest.mark.parametrize("order", [
    list(range(1, 20)),  # missing class 20
    list(range(1, 20)) + [19],  # duplicate
    list(range(0, 20)),  # background is not part of the order
    list(range(1, 22)),  # a class that does not exist
])
def test_bad_order_is_rejected(order):
    with pytest.raises(ValueError, match="permutation of 1..20"):
        get_task("voc", "15-1", order=order)


def test_bad_numpy_order_gets_the_helpful_message():
    with pytest.raises(ValueError, match="permutation of 1..20"):
        get_task("voc", "15-1", order=np.arange(1, 20))
    assert get_task("voc", "15-1", order=np.arange(20, 0, -1)).steps[1] == (5,)


def test_unknown_task_lists_known_tasks():
    with pytest.raises(ValueError) as error:
        get_task("voc", "fifteen-five")
    message = str(error.value)
    assert "fifteen-five" in message
    for known in ("15-1", "15-5", "15-5s", "10-10s", "19-1", "19-1b", "10-5-5", "offline"):
        assert known in message


def test_impossible_task_lists_known_tasks_of_its_dataset():
    with pytest.raises(ValueError) as error:
        get_task("ade", "100-7")
    message = str(error.value)
    assert "steps of 7" in message
    assert "Known ade tasks" in message and "100-50" in message and "100-10" in message
    assert "15-5s" not in message  # VOC names are not offered for ADE


def test_unknown_dataset_lists_datasets():
    with pytest.raises(ValueError) as error:
        get_task("cityscapes", "15-1")
    message = str(error.value)
    assert "cityscapes" in message
    for dataset in ("ade", "toy", "voc"):
        assert dataset in message


# ---------------------------------------------------------------------------------------------
# 3. Image selection (protocol.md §3) on a hand-written label-set table
# ---------------------------------------------------------------------------------------------

# Foreground classes of each image (0 and 255 are never part of a label set).
IMAGE_CLASSES = [
    {1, 5},  # 0: base classes only
    {15, 16},  # 1
    {16},  # 2
    {3, 17},  # 3
    {16, 18},  # 4
    {20},  # 5
    set(),  # 6: background (and void) only: never selected
    {2, 19, 20},  # 7
    {8, 17, 18},  # 8
    {10, 12},  # 9: base classes only
]


def table(image_classes=IMAGE_CLASSES, num_classes: int = 21) -> np.ndarray:
    presence = np.zeros((len(image_classes), num_classes), dtype=bool)
    for row, classes in enumerate(image_classes):
        presence[row, sorted(classes)] = True
    return presence


def test_label_set_matrix_drops_background_and_void():
    uniques = [np.array([0, 1, 5, 255]), np.array([16, 15]), np.array([0, 255]), np.array([0, 20])]
    expected = np.zeros((4, 21), dtype=bool)
    expected[0, [1, 5]] = True
    expected[1, [15, 16]] = True
    expected[3, 20] = True
    np.testing.assert_array_equal(label_set_matrix(uniques, 21), expected)


VOC_15_5_SELECTION = {  # (step, setting) -> image indices
    (0, "overlapped"): [0, 1, 3, 7, 8, 9],
    (0, "disjoint"): [0, 9],
    (1, "overlapped"): [1, 2, 3, 4, 5, 7, 8],
    (1, "disjoint"): [1, 2, 3, 4, 5, 7, 8],
}

VOC_15_1_SELECTION = {
    (0, "overlapped"): [0, 1, 3, 7, 8, 9],
    (0, "disjoint"): [0, 9],
    (1, "overlapped"): [1, 2, 4],
    (1, "disjoint"): [1, 2],
    (2, "overlapped"): [3, 8],
    (2, "disjoint"): [3],
    (3, "overlapped"): [4, 8],
    (3, "disjoint"): [4, 8],
    (4, "overlapped"): [7],
    (4, "disjoint"): [],
    (5, "overlapped"): [5, 7],
    (5, "disjoint"): [5, 7],
}


@pytest.mark.parametrize("step, setting", sorted(VOC_15_5_SELECTION))
def test_selection_voc_15_5(step, setting):
    selected = select_images(table(), get_task("voc", "15-5"), step, setting)
    assert selected.tolist() == VOC_15_5_SELECTION[step, setting]


@pytest.mark.parametrize("step, setting", sorted(VOC_15_1_SELECTION))
def test_selection_voc_15_1(step, setting):
    selected = select_images(table(), get_task("voc", "15-1"), step, setting)
    assert selected.tolist() == VOC_15_1_SELECTION[step, setting]


def test_selection_rejects_unknown_setting():
    with pytest.raises(ValueError, match="overlapped"):
        select_images(table(), get_task("voc", "15-1"), 0, "sequential")


def test_test_selection_is_images_with_a_seen_class():
    task = get_task("voc", "15-1")
    expected = {0: [0, 1, 3, 7, 8, 9], 1: [0, 1, 2, 3, 4, 7, 8, 9], 2: [0, 1, 2, 3, 4, 7, 8, 9],
                3: [0, 1, 2, 3, 4, 7, 8, 9], 4: [0, 1, 2, 3, 4, 7, 8, 9], 5: [0, 1, 2, 3, 4, 5, 7, 8, 9]}
    for step, indices in expected.items():
        assert select_test_images(table(), task, step).tolist() == indices


def _disjoint_partition_holds(presence: np.ndarray, task: Task) -> None:
    steps = [set(select_images(presence, task, step, "disjoint").tolist()) for step in range(task.num_steps)]
    for first in range(len(steps)):
        for second in range(first + 1, len(steps)):
            assert not steps[first] & steps[second], (first, second)
    with_foreground = set(np.flatnonzero(presence[:, 1:].any(axis=1)).tolist())
    assert set().union(*steps) == with_foreground


def test_disjoint_15_1_is_a_partition_of_the_hand_table():
    _disjoint_partition_holds(table(), get_task("voc", "15-1"))


@pytest.mark.parametrize("name", ["15-1", "10-1", "10-5-5", "19-1b"])
def test_disjoint_is_a_partition_of_a_random_table(name):
    rng = np.random.default_rng(3)
    presence = rng.random((300, 21)) < 0.08
    presence[:, 0] = rng.random(300) < 0.5  # class 0 must never matter
    presence[:20] = False  # some background-only images
    _disjoint_partition_holds(presence, get_task("voc", name))


def test_overlapped_contains_disjoint_and_repeats_images():
    presence = table()
    task = get_task("voc", "15-1")
    for step in range(task.num_steps):
        overlapped = set(select_images(presence, task, step, "overlapped").tolist())
        assert set(select_images(presence, task, step, "disjoint").tolist()) <= overlapped


# ---------------------------------------------------------------------------------------------
# 4. Target remapping (protocol.md §4) on explicit masks
# ---------------------------------------------------------------------------------------------

MIB_TEST = Conventions()  # void ignored in training, future ignored at test, ADE class 0 ignored
VOID_AS_BACKGROUND = Conventions(train_void="background")
PLOP_TEST = Conventions(test_future="background", ade_class0="score")


def remap(task, step, split, mask, conventions=Conventions(), class0_is_other=False) -> list:
    lookup = remap_lookup(task, step, split, conventions, class0_is_other)
    assert lookup.shape == (256,) and lookup.dtype == np.uint8
    return lookup[np.array(mask, dtype=np.uint8)].tolist()


VOC_15_5_STEP1_MASK = [[0, 3, 15, 16], [20, 255, 7, 18]]


@pytest.mark.parametrize("split, conventions, expected", [
    ("train", MIB_TEST, [[0, 0, 0, 16], [20, 255, 0, 18]]),
    ("train", VOID_AS_BACKGROUND, [[0, 0, 0, 16], [20, 0, 0, 18]]),
    ("val", MIB_TEST, [[0, 255, 255, 16], [20, 255, 255, 18]]),
    ("test", MIB_TEST, [[0, 3, 15, 16], [20, 255, 7, 18]]),
    ("test", PLOP_TEST, [[0, 3, 15, 16], [20, 255, 7, 18]]),
])
def test_remap_voc_15_5_step_1(split, conventions, expected):
    assert remap(get_task("voc", "15-5"), 1, split, VOC_15_5_STEP1_MASK, conventions) == expected


VOC_15_1_STEP2_MASK = [[0, 5, 16, 17], [18, 20, 255, 17]]


@pytest.mark.parametrize("split, conventions, expected", [
    ("train", MIB_TEST, [[0, 0, 0, 17], [0, 0, 255, 17]]),
    ("train", VOID_AS_BACKGROUND, [[0, 0, 0, 17], [0, 0, 0, 17]]),
    ("val", MIB_TEST, [[0, 255, 255, 17], [255, 255, 255, 17]]),
    ("test", MIB_TEST, [[0, 5, 16, 17], [255, 255, 255, 17]]),
    ("test", PLOP_TEST, [[0, 5, 16, 17], [0, 0, 255, 17]]),
])
def test_remap_voc_15_1_step_2(split, conventions, expected):
    assert remap(get_task("voc", "15-1"), 2, split, VOC_15_1_STEP2_MASK, conventions) == expected


def test_remap_voc_15_5_step_0_future_at_test():
    mask = [[0, 15, 16, 20, 255]]
    task = get_task("voc", "15-5")
    assert remap(task, 0, "test", mask, MIB_TEST) == [[0, 15, 255, 255, 255]]
    assert remap(task, 0, "test", mask, PLOP_TEST) == [[0, 15, 0, 0, 255]]
    assert remap(task, 0, "train", mask) == [[0, 15, 0, 0, 255]]


ADE_100_50_STEP1_MASK = [[0, 1, 100, 101], [150, 37, 0, 120]]


@pytest.mark.parametrize("split, conventions, expected", [
    ("train", MIB_TEST, [[0, 0, 0, 101], [150, 0, 0, 120]]),
    ("train", PLOP_TEST, [[0, 0, 0, 101], [150, 0, 0, 120]]),
    ("val", MIB_TEST, [[255, 255, 255, 101], [150, 255, 255, 120]]),
    ("test", MIB_TEST, [[255, 1, 100, 101], [150, 37, 255, 120]]),
    ("test", Conventions(ade_class0="score"), [[0, 1, 100, 101], [150, 37, 0, 120]]),
])
def test_remap_ade_100_50_step_1(split, conventions, expected):
    task = get_task("ade", "100-50")
    assert remap(task, 1, split, ADE_100_50_STEP1_MASK, conventions, class0_is_other=True) == expected


def test_remap_ade_100_50_step_0_future_and_class0():
    mask = [[0, 100, 101, 150]]
    task = get_task("ade", "100-50")
    assert remap(task, 0, "test", mask, MIB_TEST, class0_is_other=True) == [[255, 100, 255, 255]]
    assert remap(task, 0, "test", mask, PLOP_TEST, class0_is_other=True) == [[0, 100, 0, 0]]
    assert remap(task, 0, "train", mask, MIB_TEST, class0_is_other=True) == [[0, 100, 0, 0]]


def test_remap_custom_order():
    evens_then_odds = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    task = get_task("voc", "10-10", order=evens_then_odds)
    mask = [[0, 2, 1], [19, 20, 255]]
    assert remap(task, 1, "train", mask) == [[0, 0, 11], [20, 0, 255]]
    assert remap(task, 1, "val", mask) == [[0, 255, 11], [20, 255, 255]]
    assert remap(task, 1, "test", mask) == [[0, 1, 11], [20, 10, 255]]
    assert remap(task, 0, "train", mask) == [[0, 1, 0], [0, 10, 255]]
    assert remap(task, 0, "test", mask, MIB_TEST) == [[0, 1, 255], [255, 10, 255]]


def test_remap_custom_order_15_1_reversed():
    reversed_order = list(range(20, 0, -1))
    task = get_task("voc", "15-1", order=reversed_order)
    mask = [[0, 20, 6, 5, 4, 1]]
    assert remap(task, 1, "train", mask) == [[0, 0, 0, 16, 0, 0]]
    assert remap(task, 1, "test", mask, MIB_TEST) == [[0, 1, 15, 16, 255, 255]]
    assert remap(task, 1, "test", mask, PLOP_TEST) == [[0, 1, 15, 16, 0, 0]]


def test_remap_rejects_unknown_split():
    with pytest.raises(ValueError, match="split"):
        remap_lookup(get_task("voc", "15-1"), 0, "validation")


def test_conventions_reject_unknown_values():
    with pytest.raises(ValueError, match="train_void"):
        Conventions(train_void="zero")
    with pytest.raises(ValueError, match="ade_class0"):
        Conventions(ade_class0="ignored")


def test_conventions_describe_states_every_choice():
    default = Conventions().describe()
    assert "training void -> ignored" in default
    assert "future classes at test -> ignored (MiB)" in default
    assert "ADE class 0 at test -> ignored (MiB)" in default
    assert "without background" in default
    plop = Conventions(train_void="background", test_future="background", ade_class0="score",
                       background_in_mean=True).describe()
    assert "background (MiB)" in plop and "background (PLOP)" in plop and "scored (PLOP)" in plop
    assert "with background" in plop
