"""Pascal VOC 2012 with the SBD augmented masks ("VOC-aug"): the raw reader.

The reader returns images and *original* class-index masks (0 background, 1-20 classes, 255 void).
Per-step remapping is done elsewhere; masks on disk are never rewritten (the MiB protocol).

Layouts found on disk, detected automatically (the MiB protocol, "Datasets on disk"):

- ``mib``:  ``<root>/PascalVOC12/{JPEGImages,SegmentationClassAug,splits/train_aug.txt,splits/val.txt}``
  (``root`` may also be the ``PascalVOC12`` folder itself);
- ``plop``: ``<root>/list/*.txt``; image = ``<root>/VOCdevkit/VOC2012`` + field 1, mask = ``<root>`` + field 2;
- ``voc``:  the plain devkit ``ImageSets/Segmentation/{train,val}.txt`` with ``SegmentationClass`` masks,
  used only when no augmented list exists. Its "train" split is the 1,464-image ``train.txt``, not
  ``train_aug`` (10,582), so MiB's index files do not apply to it.

An index into a reader is a 0-based line position in the list file: MiB's shipped index files depend
on it, so lists are never sorted or deduplicated.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .errors import CHECK_HINT, DOWNLOAD_HINT, DatasetError

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


def _label_colormap(size: int = 256) -> np.ndarray:
    """The VOC colour map: bits 0, 1, 2 of the class id go to the top bits of R, G, B, and so on."""
    ids = np.arange(size, dtype=np.int64)
    palette = np.zeros((size, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * shift + channel)) & 1) << (7 - shift)
    return palette.astype(np.uint8)


VOC_PALETTE: np.ndarray = _label_colormap()  # (256, 3) uint8; VOC_PALETTE[255] == (224, 224, 192)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_image_file(path: Path, dataset: str) -> Image.Image:
    """Decode an image fully (not lazily) as RGB; any failure becomes a `DatasetError` naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"missing image {path}; {CHECK_HINT.format(dataset=dataset)}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot decode image {path} ({error}); the file is corrupt or truncated: "
                           f"re-extract the archive ({DOWNLOAD_HINT.format(dataset=dataset)})") from None


def read_mask_file(path: Path, dataset: str) -> np.ndarray:
    """Read a class-index PNG as an (H, W) uint8 array of the raw indices.

    Palette ("P") masks are read as their indices, never through ``.convert("L")``, which would turn
    palette colours into luminance and give wrong class ids (the MiB protocol, pitfalls).
    """
    try:
        with Image.open(path) as mask:
            mask.load()
            mode = mask.mode
            values = np.array(mask, dtype=np.uint8) if mode in ("P", "L") else None  # (H, W) raw indices
    except FileNotFoundError:
        raise DatasetError(f"missing mask {path}; {CHECK_HINT.format(dataset=dataset)}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot decode mask {path} ({error}); the file is corrupt or truncated: "
                           f"re-extract the archive ({DOWNLOAD_HINT.format(dataset=dataset)})") from None
    if values is None:
        raise DatasetError(
            f"mask {path} has PIL mode {mode!r}; class-index masks are single-channel 8-bit PNGs (mode "
            "'P' or 'L'). Colour renderings such as SegmentationClassAug_Visualization are not labels: "
            "point the dataset at the index masks")
    return values


class SegmentationFolder:
    """Shared behaviour of the raw readers: parallel lists of ids, image paths and mask paths.

    ``dataset[i]`` is ``(RGB PIL image, mode-"L" PIL mask)``; `read_mask` skips the image decode so a
    per-image label-set index over a whole split is cheap to build.
    """

    name: str = ""
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    class0_is_other: bool = False

    def __init__(self, root: Path, split: str, layout: str, ids: list[str],
                 image_paths: list[Path], mask_paths: list[Path]) -> None:
        self.root = root
        self.split = split
        self.layout = layout
        self.ids = ids
        self._image_paths = image_paths
        self._mask_paths = mask_paths

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self._image_paths[index]

    def mask_path(self, index: int) -> Path:
        return self._mask_paths[index]

    def read_mask(self, index: int) -> np.ndarray:
        """The original (H, W) uint8 class-index mask of image ``index``, without decoding the image."""
        return read_mask_file(self._mask_paths[index], self.name)

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        image = read_image_file(self._image_paths[index], self.name)
        mask = self.read_mask(index)
        if image.size != (mask.shape[1], mask.shape[0]):
            raise DatasetError(
                f"image {self._image_paths[index]} is {image.size[0]}x{image.size[1]} but its mask "
                f"{self._mask_paths[index]} is {mask.shape[1]}x{mask.shape[0]}; the pair does not belong "
                f"together: {CHECK_HINT.format(dataset=self.name)}")
        return image, Image.fromarray(mask)  # mode "L"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root='{self.root}', split='{self.split}', "
                f"layout='{self.layout}', images={len(self)})")


def read_list_file(path: Path) -> list[tuple[str, str | None]]:
    """Parse a split list: ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` or ``x`` per line.

    Lines are stripped (MiB's chop-the-last-character bug loses a letter when the final newline is
    missing) and empty lines skipped; the order is kept because indices are line positions.
    """
    entries: list[tuple[str, str | None]] = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise DatasetError(f"line {line_number} of {path} has {len(fields)} fields ({line.strip()!r}); "
                               "expected '/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png' or '<id>'")
        entries.append((fields[0], fields[1] if len(fields) == 2 else None))
    if not entries:
        raise DatasetError(f"list file {path} is empty; {DOWNLOAD_HINT.format(dataset='voc')}")
    return entries


def _layout_candidates(root: Path, split: str) -> list[tuple[str, Path, Path, Path, str]]:
    """(layout, list file, image base, mask base, mask folder for id-only lines), in order of preference."""
    aug_list = "train_aug.txt" if split == "train" else "val.txt"
    devkit_list = "train.txt" if split == "train" else "val.txt"
    candidates = []
    # MiB: the DeepLab "list" folder renamed "splits" (accepted unrenamed too) inside PascalVOC12,
    # with root the parent or the PascalVOC12 folder itself (recognised by its JPEGImages).
    for base in (root / "PascalVOC12", root):
        for list_folder in ("splits", "list"):
            if list_folder == "splits" or (base / "JPEGImages").is_dir():
                candidates.append(("mib", base / list_folder / aug_list, base, base, "SegmentationClassAug"))
    candidates.append(("plop", root / "list" / aug_list, root / "VOCdevkit" / "VOC2012", root,
                       "SegmentationClassAug"))
    for base in (root / "PascalVOC12", root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        candidates.append(("voc", base / "ImageSets" / "Segmentation" / devkit_list, base, base,
                           "SegmentationClass"))
    return candidates


def _missing_layout_error(root: Path, split: str, candidates: list) -> DatasetError:
    hint = DOWNLOAD_HINT.format(dataset="voc")
    if not root.is_dir():
        return DatasetError(f"VOC root {root} does not exist or is not a folder; {hint}")
    found = sorted({str(path) for _, list_file, *_ in candidates if list_file.parent.is_dir()
                    for path in list_file.parent.glob("*.txt")})
    seen = f" Lists found: {', '.join(found)}." if found else ""
    name = "train_aug.txt" if split == "train" else "val.txt"
    return DatasetError(
        f"no VOC '{split}' list under {root}: expected {root}/PascalVOC12/splits/{name} or "
        f"{root}/list/{name} (MiB or PLOP layout), or ImageSets/Segmentation/"
        f"{'train' if split == 'train' else 'val'}.txt of the VOC devkit.{seen} {hint}")


def _entry_paths(entry: tuple[str, str | None], image_base: Path, mask_base: Path,
                 mask_folder: str) -> tuple[str, Path, Path]:
    first, second = entry
    if second is not None:
        image_relative, mask_relative = first.lstrip("/"), second.lstrip("/")
        return PurePosixPath(image_relative).stem, image_base / image_relative, mask_base / mask_relative
    stem = first.lstrip("/")
    if stem.lower().endswith(IMAGE_SUFFIXES):
        stem = PurePosixPath(stem).stem
    return stem, image_base / "JPEGImages" / f"{stem}.jpg", mask_base / mask_folder / f"{stem}.png"


class VOCSegmentation(SegmentationFolder):
    """Pascal VOC-aug split "train" (``train_aug``, 10,582 images) or "val" (1,449, the test set).

    ``check_files`` checks that the first and last list entries exist, a cheap guard against a wrong
    layout or root; `check_dataset` turns it off to report every missing file instead.
    """

    name = "voc"
    num_classes = 21
    class_names = VOC_CLASSES
    class0_is_other = False

    def __init__(self, root: str | Path, split: str, check_files: bool = True) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        root = Path(root).expanduser()
        candidates = _layout_candidates(root, split)
        chosen = next((candidate for candidate in candidates if candidate[1].is_file()), None)
        if chosen is None:
            raise _missing_layout_error(root, split, candidates)
        layout, list_file, image_base, mask_base, mask_folder = chosen
        ids, image_paths, mask_paths = [], [], []
        for entry in read_list_file(list_file):
            image_id, image_path, mask_path = _entry_paths(entry, image_base, mask_base, mask_folder)
            ids.append(image_id)
            image_paths.append(image_path)
            mask_paths.append(mask_path)
        super().__init__(root, split, layout, ids, image_paths, mask_paths)
        self.list_file = list_file
        if check_files:
            self._check_ends()

    def _check_ends(self) -> None:
        """Check the first and last entries (a wrong layout or a truncated list fails here, early)."""
        for index in sorted({0, len(self) - 1}):
            for kind, path in (("image", self._image_paths[index]), ("mask", self._mask_paths[index])):
                if not path.is_file():
                    folder = "" if path.parent.is_dir() else f" (the folder {path.parent} does not exist)"
                    raise DatasetError(
                        f"{kind} {path}{folder}, listed on entry {index + 1} of {self.list_file}, is missing; "
                        f"the '{self.layout}' layout was detected. {CHECK_HINT.format(dataset='voc')}; "
                        f"{DOWNLOAD_HINT.format(dataset='voc')}")
