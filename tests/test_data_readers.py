"""Raw VOC / ADE20K readers and MiB index files on generated folders in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cslearn.data.ade import ADE_CLASSES, ADE20KSegmentation
from cslearn.data.errors import DatasetError
from cslearn.data.mib_index import load_mib_index, mib_index_path, mib_task_name
from cslearn.data.synthetic import make_ade_folder, make_voc_folder
from cslearn.data.voc import VOC_CLASSES, VOC_PALETTE, VOCSegmentation


def _write_pair(image_dir: Path, mask_dir: Path, image_id: str, mask: np.ndarray, mode: str = "P") -> None:
    """One hand-made image + mask pair; mode "P" uses the VOC colour map."""
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(mask.shape + (3,), 90, np.uint8)).save(image_dir / f"{image_id}.jpg")
    png = Image.fromarray(mask)
    if mode == "P":
        png.putpalette(VOC_PALETTE.tobytes())
    png.save(mask_dir / f"{image_id}.png")


def _object_mask(label: int, shape: tuple[int, int] = (12, 16)) -> np.ndarray:
    """Background, one object of ``label`` and a 255 border around it."""
    mask = np.zeros(shape, np.uint8)
    mask[2:10, 3:13] = 255
    mask[3:9, 4:12] = label
    return mask


# --- class tables ---------------------------------------------------------------------------------

def test_class_tables_and_palette():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[20] == "tvmonitor"
    assert len(ADE_CLASSES) == 151 and ADE_CLASSES[:4] == ("other", "wall", "building", "sky")
    assert ADE_CLASSES[150] == "flag" and len(set(ADE_CLASSES)) == 151
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    assert VOC_PALETTE[1].tolist() == [128, 0, 0] and VOC_PALETTE[15].tolist() == [192, 128, 128]
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]


# --- VOC ------------------------------------------------------------------------------------------

def test_palette_masks_read_as_indices_not_luminance(tmp_path):
    base = tmp_path / "PascalVOC12"
    mask = _object_mask(15)
    _write_pair(base / "JPEGImages", base / "SegmentationClassAug", "a", mask, mode="P")
    (base / "splits").mkdir()
    (base / "splits" / "train_aug.txt").write_text("/JPEGImages/a.jpg /SegmentationClassAug/a.png\n")
    dataset = VOCSegmentation(tmp_path, "train")
    assert Image.open(dataset.mask_path(0)).mode == "P"
    np.testing.assert_array_equal(dataset.read_mask(0), mask)
    image, target = dataset[0]
    assert image.mode == "RGB" and target.mode == "L"
    np.testing.assert_array_equal(np.asarray(target), mask)
    # The bug this guards against: .convert("L") gives luminance, not class ids.
    luminance = np.asarray(Image.open(dataset.mask_path(0)).convert("L"))
    assert not np.array_equal(luminance, mask)


@pytest.mark.parametrize("layout", ["mib", "plop"])
@pytest.mark.parametrize("mask_mode", ["P", "L"])
def test_generated_voc_layouts(tmp_path, layout, mask_mode):
    root = make_voc_folder(tmp_path, num_train=5, num_val=3, layout=layout, mask_mode=mask_mode)
    train, val = VOCSegmentation(root, "train"), VOCSegmentation(root, "val")
    assert (train.layout, len(train), len(val)) == (layout, 5, 3)
    assert train.ids == [f"2011_{index:06d}" for index in range(5)]
    assert train.name == "voc" and train.num_classes == 21 and train.class0_is_other is False
    mask = train.read_mask(0)
    assert mask.dtype == np.uint8 and mask.shape == (96, 128)
    assert set(np.unique(mask).tolist()) <= set(range(21)) | {255} and 255 in mask
    image, target = train[2]
    assert image.size == (128, 96) and np.asarray(target).shape == (96, 128)
    assert Image.open(train.mask_path(0)).mode == mask_mode


def test_root_may_be_the_pascalvoc12_folder(tmp_path):
    make_voc_folder(tmp_path, num_train=2, num_val=1)
    dataset = VOCSegmentation(tmp_path / "PascalVOC12", "val")
    assert dataset.layout == "mib" and len(dataset) == 1


def test_unrenamed_list_folder_inside_pascalvoc12(tmp_path):
    make_voc_folder(tmp_path, num_train=2, num_val=1)
    (tmp_path / "PascalVOC12" / "splits").rename(tmp_path / "PascalVOC12" / "list")  # DeepLab zip's name
    for root in (tmp_path, tmp_path / "PascalVOC12"):
        dataset = VOCSegmentation(root, "train")
        assert dataset.layout == "mib" and len(dataset) == 2


def test_list_without_final_newline_keeps_last_id(tmp_path):
    root = make_voc_folder(tmp_path, num_train=3, num_val=2, final_newline=False)
    assert not (root / "PascalVOC12/splits/train_aug.txt").read_text().endswith("\n")
    dataset = VOCSegmentation(root, "train")
    assert dataset.ids[-1] == "2011_000002"
    assert dataset.mask_path(2).name == "2011_000002.png"
    dataset[2]  # the last entry opens


def test_list_order_kept_and_id_only_lines(tmp_path):
    base = tmp_path / "PascalVOC12"
    for image_id in ("b", "a", "c"):
        _write_pair(base / "JPEGImages", base / "SegmentationClassAug", image_id, _object_mask(3), mode="L")
    (base / "splits").mkdir()
    (base / "splits" / "train_aug.txt").write_text("b\n\n  a  \r\nc")  # ids, blank line, CRLF, no final newline
    dataset = VOCSegmentation(tmp_path, "train")
    assert dataset.ids == ["b", "a", "c"]
    assert dataset.image_path(1) == base / "JPEGImages" / "a.jpg"
    assert dataset.mask_path(2) == base / "SegmentationClassAug" / "c.png"


def test_devkit_imagesets_fallback(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for image_id in ("2007_000032", "2007_000039"):
        _write_pair(base / "JPEGImages", base / "SegmentationClass", image_id, _object_mask(1))
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000039\n2007_000032\n")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    train = VOCSegmentation(tmp_path, "train")
    assert train.layout == "voc" and train.ids == ["2007_000039", "2007_000032"]
    assert train.mask_path(0).parent.name == "SegmentationClass"
    np.testing.assert_array_equal(train.read_mask(1), _object_mask(1))
    assert len(VOCSegmentation(base, "val")) == 1  # root may also be the VOC2012 folder


def test_voc_missing_root_and_missing_list(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*cslearn data download voc"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    root = make_voc_folder(tmp_path, num_train=2, num_val=1)
    (root / "PascalVOC12/splits/val.txt").rename(root / "PascalVOC12/splits/valid.txt")
    with pytest.raises(DatasetError) as caught:
        VOCSegmentation(root, "val")
    message = str(caught.value)
    assert "PascalVOC12/splits/val.txt" in message and "list/val.txt" in message
    assert "valid.txt" in message  # says what it found instead
    assert "data/README.md" in message
    with pytest.raises(ValueError, match="split"):
        VOCSegmentation(root, "test")


def test_voc_entry_pointing_to_missing_files(tmp_path):
    root = make_voc_folder(tmp_path, num_train=4, num_val=1)
    images = root / "PascalVOC12" / "JPEGImages"
    (images / "2011_000003.jpg").unlink()  # the last entry: caught when the reader is built
    with pytest.raises(DatasetError, match=r"2011_000003\.jpg.*missing.*'mib' layout.*data check"):
        VOCSegmentation(root, "train")
    (root / "PascalVOC12" / "SegmentationClassAug" / "2011_000001.png").unlink()  # a middle entry
    dataset = VOCSegmentation(root, "train", check_files=False)
    with pytest.raises(DatasetError, match=r"missing mask .*2011_000001\.png.*data check --dataset voc"):
        dataset[1]
    with pytest.raises(DatasetError, match=r"missing image .*2011_000003\.jpg"):
        dataset[3]


def test_plop_layout_with_wrong_image_folder(tmp_path):
    root = make_voc_folder(tmp_path, num_train=2, num_val=1, layout="plop")
    (root / "VOCdevkit").rename(root / "devkit")
    with pytest.raises(DatasetError, match=r"VOCdevkit/VOC2012/JPEGImages does not exist.*'plop'"):
        VOCSegmentation(root, "train")


def test_corrupt_and_rgb_masks(tmp_path):
    root = make_voc_folder(tmp_path, num_train=3, num_val=1)
    dataset = VOCSegmentation(root, "train")
    path = dataset.mask_path(1)
    path.write_bytes(path.read_bytes()[:60])  # truncated PNG
    with pytest.raises(DatasetError, match=r"cannot decode mask .*2011_000001\.png.*re-extract"):
        dataset.read_mask(1)
    with pytest.raises(DatasetError, match="2011_000001.png"):
        dataset[1]
    Image.new("RGB", (128, 96), (128, 0, 0)).save(dataset.mask_path(2))
    with pytest.raises(DatasetError, match="mode 'RGB'.*Visualization"):
        dataset.read_mask(2)
    dataset.image_path(0).write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot decode image .*2011_000000\.jpg"):
        dataset[0]


def test_malformed_and_empty_list(tmp_path):
    root = make_voc_folder(tmp_path, num_train=2, num_val=1)
    (root / "PascalVOC12/splits/train_aug.txt").write_text("a b c\n")
    with pytest.raises(DatasetError, match="line 1 .* 3 fields"):
        VOCSegmentation(root, "train")
    (root / "PascalVOC12/splits/train_aug.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="empty"):
        VOCSegmentation(root, "train")


# --- ADE20K ---------------------------------------------------------------------------------------

def test_ade_sorted_order_and_masks(tmp_path):
    root = make_ade_folder(tmp_path, num_train=12, num_val=3)
    train = ADE20KSegmentation(root, "train")
    assert train.ids == [f"ADE_train_{index:08d}" for index in range(1, 13)]  # 10 after 9: zero-padded
    assert train.name == "ade" and train.num_classes == 151 and train.class0_is_other
    mask = train.read_mask(0)
    assert mask.dtype == np.uint8 and 0 in mask and mask.max() <= 150
    assert Image.open(train.mask_path(0)).mode == "L"
    image, target = train[11]
    assert image.size == (128, 96) and target.mode == "L"
    val = ADE20KSegmentation(root / "ADEChallengeData2016", "val")  # root may be the folder itself
    assert len(val) == 3 and val.image_path(0).name == "ADE_val_00000001.jpg"


def test_ade_listing_is_sorted_not_creation_order(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    for stem in ("ADE_train_00000003", "ADE_train_00000001", "ADE_train_00000002"):
        _write_pair(base / "images/training", base / "annotations/training", stem, _object_mask(7), "L")
    (base / "images/validation").mkdir(parents=True)
    (base / "annotations/validation").mkdir(parents=True)
    (base / "images/training/.DS_Store").write_bytes(b"")
    dataset = ADE20KSegmentation(tmp_path, "train")
    assert dataset.ids == ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"]


def test_ade_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*cslearn data download ade"):
        ADE20KSegmentation(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="ADEChallengeData2016/images"):
        ADE20KSegmentation(tmp_path / "empty", "train")
    root = make_ade_folder(tmp_path / "ade", num_train=3, num_val=1)
    (root / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png").unlink()
    with pytest.raises(DatasetError, match="1 image.*ADE_train_00000002.png"):
        ADE20KSegmentation(root, "train")
    assert len(ADE20KSegmentation(root, "train", check_files=False)) == 3


# --- MiB index files ------------------------------------------------------------------------------

def test_mib_index_path_and_task_names():
    assert mib_task_name("15-1") == "15-5s" and mib_task_name("50-50") == "50"
    assert mib_task_name("19-1") == "19-1"
    assert mib_index_path("data/voc", "15-1", 2, overlapped=True) == Path("data/voc/15-5s-ov/train-2.npy")
    assert mib_index_path("idx", "100-50", 0, False, "test_on_val") == Path("idx/100-50/test_on_val-0.npy")
    with pytest.raises(ValueError):
        mib_index_path("idx", "19-1", 0, False, split="test")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16])
def test_load_mib_index_accepts_integer_arrays(tmp_path, dtype):
    path = tmp_path / "train-0.npy"
    np.save(path, np.array([5, 0, 9, 3], dtype=dtype))
    indices = load_mib_index(path, num_images=10)
    assert indices.dtype == np.int64 and indices.tolist() == [5, 0, 9, 3]  # file order kept


@pytest.mark.parametrize("array, message", [
    (np.array([0, 10]), "positions 0..10 but the split has 10"),
    (np.array([-1, 2]), "positions -1..2"),
    (np.arange(4).reshape(2, 2), r"shape \(2, 2\).*1-D"),
    (np.array([1.0, 2.0]), "dtype float64.*integer"),
    (np.array([1, 2, 2]), "repeats 1"),
    (np.array([], dtype=np.int64), "empty"),
    (np.array(["a", "b"]), "dtype <U1"),
])
def test_load_mib_index_rejects_bad_files(tmp_path, array, message):
    path = tmp_path / "train-1.npy"
    np.save(path, array)
    with pytest.raises(DatasetError, match=message):
        load_mib_index(path, num_images=10)


def test_load_mib_index_missing_and_pickled(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_mib_index(tmp_path / "nope.npy", 10)
    path = tmp_path / "object.npy"
    np.save(path, np.array([1, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="plain .npy"):
        load_mib_index(path, 10)
